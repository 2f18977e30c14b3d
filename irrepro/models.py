"""The model ladder as stacked networks: K independent replicas evaluated with batched matmuls."""

from __future__ import annotations

import math

import numpy as np
import torch

from irrepro.activations import Activation
from irrepro.config import ModelConfig


def hidden_widths(config: ModelConfig) -> list[int]:
    """Widths of the hidden layers of the model that `config` names."""
    return {
        "logistic": [],
        "one_unit": [1],
        "two_units": [2],
        "mlp": [config.width] * config.depth,
        "embedding": [config.width] * config.depth,
    }[config.name]


def encode_inputs(config: ModelConfig, x: np.ndarray) -> torch.Tensor:
    """Model inputs: the features, or for embedding models each feature's table row index.

    An embedding model cuts each standard-normal feature into `buckets` equal-probability
    buckets; feature f in bucket b looks up row f * buckets + b of one shared table.
    """
    features = torch.from_numpy(x)
    if config.name != "embedding":
        return features
    probabilities = torch.arange(1, config.buckets, dtype=torch.float64) / config.buckets
    edges = (math.sqrt(2) * torch.erfinv(2 * probabilities - 1)).float()
    buckets = torch.bucketize(features, edges)
    return buckets + torch.arange(x.shape[1]) * config.buckets


def init_parameters(
    config: ModelConfig, dim: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """One network's parameters, drawn in a fixed order from `generator`.

    Dense weights and biases are uniform in +-1/sqrt(fan_in) (PyTorch's default scale);
    embedding rows are standard normal.
    """
    params: dict[str, torch.Tensor] = {}
    fan_in = dim
    if config.name == "embedding":
        rows = dim * config.buckets
        params["embedding"] = torch.randn(rows, config.embedding_dim, generator=generator)
        fan_in = dim * config.embedding_dim
    for layer, width in enumerate([*hidden_widths(config), 1]):
        bound = 1 / math.sqrt(fan_in)
        for name, shape in ((f"weight{layer}", (fan_in, width)), (f"bias{layer}", (1, width))):
            uniform = torch.rand(shape, generator=generator)
            params[name] = (2 * uniform - 1) * bound
        fan_in = width
    return params


def parameter_count(config: ModelConfig, dim: int) -> int:
    """Trainable parameters of one network."""
    shapes = init_parameters(config, dim, torch.Generator().manual_seed(0)).values()
    return sum(tensor.numel() for tensor in shapes)


def perturb_one_weight(params: dict[str, torch.Tensor], rng: np.random.Generator) -> None:
    """Move one weight, chosen by `rng`, by one unit in the last place (in place)."""
    sizes = [tensor.numel() for tensor in params.values()]
    index = int(rng.integers(sum(sizes)))
    direction = np.float32(np.inf if rng.integers(2) else -np.inf)
    for tensor, size in zip(params.values(), sizes, strict=True):
        if index < size:
            flat = tensor.view(-1)
            value = np.float32(flat[index].item())
            flat[index] = float(np.nextafter(value, direction))
            return
        index -= size


class StackedNet(torch.nn.Module):
    """K networks of one architecture; input [K, B, ...], output logits [K, B]."""

    def __init__(self, replicas: list[dict[str, torch.Tensor]], activation: Activation):
        super().__init__()
        self.activation = activation
        self.params = torch.nn.ParameterDict(
            {name: torch.stack([r[name] for r in replicas]) for name in replicas[0]}
        )
        self.layers = sum(name.startswith("weight") for name in self.params)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = inputs
        if "embedding" in self.params:
            table = self.params["embedding"]
            replicas, batch, features = inputs.shape
            rows = inputs.reshape(replicas, batch * features, 1).expand(-1, -1, table.shape[2])
            hidden = table.gather(1, rows).reshape(replicas, batch, -1)
        for layer in range(self.layers - 1):
            weight, bias = self.params[f"weight{layer}"], self.params[f"bias{layer}"]
            hidden = self.activation(torch.baddbmm(bias, hidden, weight))
        # The single-output layer as a product and a row sum: a matrix-vector kernel would
        # round differently for one replica than for several.
        last = self.layers - 1
        weight, bias = self.params[f"weight{last}"], self.params[f"bias{last}"]
        return (hidden * weight.transpose(1, 2)).sum(dim=-1) + bias.squeeze(-1)


@torch.no_grad()
def predict_probabilities(model: StackedNet, inputs: torch.Tensor) -> np.ndarray:
    """Each replica's probability of label 1 on the same inputs [N, ...], as float32 [K, N]."""
    replicas = model.params[next(iter(model.params))].shape[0]
    stacked = inputs.unsqueeze(0).repeat(replicas, *[1] * inputs.dim())
    logits = model(stacked).cpu()
    # Row by row: a vectorized kernel rounds its tail differently, so one replica
    # would not match the same seed trained alone.
    return np.stack([torch.sigmoid(row).numpy() for row in logits])
