"""The model ladder as stacked networks: K independent replicas evaluated with batched matmuls."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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
    config: ModelConfig, dim: int, generator: torch.Generator, outputs: int = 1
) -> dict[str, torch.Tensor]:
    """One network's parameters for `dim` inputs and `outputs` logits (1 for binary labels, C
    for C classes), drawn in a fixed order from `generator`.

    Dense weights and biases are uniform in +-1/sqrt(fan_in) (PyTorch's default scale);
    embedding rows are standard normal.
    """
    params: dict[str, torch.Tensor] = {}
    fan_in = dim
    if config.name == "embedding":
        rows = dim * config.buckets
        params["embedding"] = torch.randn(rows, config.embedding_dim, generator=generator)
        fan_in = dim * config.embedding_dim
    for layer, width in enumerate([*hidden_widths(config), outputs]):
        bound = 1 / math.sqrt(fan_in)
        for name, shape in ((f"weight{layer}", (fan_in, width)), (f"bias{layer}", (1, width))):
            uniform = torch.rand(shape, generator=generator)
            params[name] = (2 * uniform - 1) * bound
        fan_in = width
    return params


@torch.no_grad()
def perturb_one_weight(params: dict[str, torch.Tensor], rng: np.random.Generator
                       ) -> tuple[str, int]:
    """Move one element of the named tensors, chosen by `rng` over all elements in order, by
    one unit in the last place (in place); return the tensor's name and the flat index."""
    sizes = [tensor.numel() for tensor in params.values()]
    index = int(rng.integers(sum(sizes)))
    direction = float("inf") if rng.integers(2) else float("-inf")
    for (name, tensor), size in zip(params.items(), sizes, strict=True):
        if index < size:
            flat = tensor.view(-1)
            toward = torch.tensor(direction, dtype=tensor.dtype, device=tensor.device)
            flat[index] = torch.nextafter(flat[index], toward)
            return name, index
        index -= size
    raise ValueError("there is no weight to perturb")


# Rows of every batch a stacked model sees are padded to a multiple of this. An element-wise
# kernel runs over the whole [K, rows, ...] tensor in vectorized chunks (at most 64 float32
# values) and finishes a tail with scalar code that rounds exp-based functions differently;
# with aligned rows every replica's slab starts on a chunk boundary and no tail is left, so a
# replica's values never depend on K or on its position in the stack.
ROW_ALIGNMENT = 64
# Rows predicted at once (a multiple of ROW_ALIGNMENT): a chunk's activations stay in cache
# (bench/predict_chunks.py times the sizes; the values do not depend on it).
PREDICT_ROWS = 512


def aligned_rows(rows: int) -> int:
    """`rows` rounded up to a multiple of ROW_ALIGNMENT."""
    return -(-rows // ROW_ALIGNMENT) * ROW_ALIGNMENT


def pad_rows(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """`tensor` with zeros appended along `dim` up to `aligned_rows` (itself when aligned)."""
    missing = aligned_rows(tensor.shape[dim]) - tensor.shape[dim]
    if not missing:
        return tensor
    return F.pad(tensor, (0, 0) * (tensor.dim() - 1 - dim) + (0, missing))


LINE = 16  # float32 values in 64 bytes


def padded_width(fan_in: int, width: int) -> int:
    """The least width >= `width` whose weight slab (fan_in x width) is a multiple of LINE."""
    step = LINE // math.gcd(fan_in, LINE)
    return -(-width // step) * step


def _affine(bias: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """bias + hidden @ weight per replica, rounded the same whatever K and the position are.

    Two layout rules keep PyTorch's CPU matrix products batch invariant (measured):
    - a batch of one goes to plain gemm (gemv for a one-column result), a larger one to MKL's
      batched gemm, which rounds differently: a single replica runs as a batch of two, itself
      and a stride-0 copy whose result is dropped (its gradient is exactly zero);
    - the batched gemm rounds a replica's result differently unless it starts 16-byte aligned,
      and the weight gradient [K, fan_in, width] does not unless fan_in * width is a multiple
      of 4: the weight and bias get zero columns up to `padded_width` (each replica's slab
      then fills whole 64-byte lines) and the extra output columns are cut off.
    """
    width = weight.shape[2]
    extra = padded_width(weight.shape[1], width) - width
    if extra:
        bias, weight = F.pad(bias, (0, extra)), F.pad(weight, (0, extra))
    if hidden.shape[0] == 1:
        pair = [tensor.expand(2, -1, -1) for tensor in (bias, hidden, weight)]
        out = torch.baddbmm(*pair)[:1]
    else:
        out = torch.baddbmm(bias, hidden, weight)
    return out[..., :width].contiguous() if extra else out


class DropoutMasks:
    """Inverted-dropout masks for K stacked replicas, replica k's drawn from its own generator
    (so they never depend on the stack): each unit kept with probability 1 - p and scaled by
    1 / (1 - p). `generators` may be replaced (a fork). A copy of a model (its weight
    average) shares them: it predicts without dropout."""

    def __init__(self, p: float, generators: list[torch.Generator]):
        self.p = p
        self.generators = generators

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape[1:]
        kept = torch.stack([torch.rand(shape, generator=generator) >= self.p
                            for generator in self.generators])
        return hidden * (kept.to(hidden.dtype) * (1 / (1 - self.p))).to(hidden.device)

    def __deepcopy__(self, memo) -> DropoutMasks:
        return self


class StackedNet(torch.nn.Module):
    """K networks of one architecture; input [K, B, ...], output logits [K, B] (one output)
    or [K, B, C] (C outputs). With `dropout`, its masks apply to every hidden layer in
    training mode.

    B must be a multiple of ROW_ALIGNMENT (see `pad_rows`): then replica i computes bit for bit
    what it computes alone or at any other position of any stack.
    """

    def __init__(self, replicas: list[dict[str, torch.Tensor]], activation: Activation,
                 dropout: DropoutMasks | None = None):
        super().__init__()
        self.activation = activation
        self.dropout = dropout
        self.replicas = len(replicas)
        self.params = torch.nn.ParameterDict(
            {name: torch.stack([r[name] for r in replicas]) for name in replicas[0]}
        )
        self.layers = sum(name.startswith("weight") for name in self.params)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[1] % ROW_ALIGNMENT:
            raise ValueError(
                f"a stacked model takes batches of a multiple of {ROW_ALIGNMENT} rows "
                f"(pad_rows), got {inputs.shape[1]}"
            )
        hidden = inputs
        if "embedding" in self.params:
            table = self.params["embedding"]
            replicas, batch, features = inputs.shape
            rows = inputs.reshape(replicas, batch * features, 1).expand(-1, -1, table.shape[2])
            hidden = table.gather(1, rows).reshape(replicas, batch, -1)
        for layer in range(self.layers - 1):
            weight, bias = self.params[f"weight{layer}"], self.params[f"bias{layer}"]
            hidden = self.activation(_affine(bias, hidden, weight))
            if self.dropout is not None and self.training:
                hidden = self.dropout(hidden)
        last = self.layers - 1
        weight, bias = self.params[f"weight{last}"], self.params[f"bias{last}"]
        if weight.shape[2] > 1:  # C outputs: a layer like the hidden ones
            return _affine(bias, hidden, weight)
        # The single-output layer as a product and a row sum: no matrix-vector kernel.
        return (hidden * weight.transpose(1, 2)).sum(dim=-1) + bias.squeeze(-1)


def scores(logits: torch.Tensor) -> torch.Tensor:
    """A stacked model's logits as [K, B] (binary: one logit per example, [K, B, 1] squeezed)
    or [K, B, C] (C classes)."""
    return logits.squeeze(-1) if logits.dim() == 3 and logits.shape[-1] == 1 else logits


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Predicted probabilities of stacked scores (see `scores`): of label 1 [K, B], or of
    each class [K, B, C]."""
    return torch.sigmoid(logits) if logits.dim() == 2 else torch.softmax(logits, dim=-1)


def stacked_loss(logits: torch.Tensor, labels: torch.Tensor, rows: int) -> torch.Tensor:
    """Each replica's mean loss over its first `rows` examples, [K]: binary cross-entropy on
    logits [K, B] with labels 0/1, cross-entropy on logits [K, B, C] with class indices."""
    logits = scores(logits)
    if logits.dim() == 2:
        losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    else:
        losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        losses = losses.view(labels.shape)
    return losses[:, :rows].mean(dim=1)


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """Each replica's predictions on the same inputs [N, ...]: the probability of label 1 as
    float32 [K, N] (binary), or class probabilities as float32 [K, N, C] (rows sum to 1).
    Modules predict in eval mode (batch norm uses its running statistics, dropout is off).
    Rows go through in chunks of PREDICT_ROWS, so memory stays bounded on large sets."""
    training = model.training
    model.eval()
    try:
        chunks = [_probabilities(model, inputs[start:start + PREDICT_ROWS])
                  for start in range(0, inputs.shape[0], PREDICT_ROWS)]
    finally:
        model.train(training)
    return np.concatenate(chunks, axis=1)


def _probabilities(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    padded = pad_rows(inputs, dim=0)
    stacked = padded.unsqueeze(0).repeat(model.replicas, *[1] * inputs.dim())
    return probabilities(scores(model(stacked)))[:, :inputs.shape[0]].contiguous().cpu().numpy()
