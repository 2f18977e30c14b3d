"""Activation functions by name, SmeLU among them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from irrepro.config import ActivationConfig

Activation = Callable[[torch.Tensor], torch.Tensor]


def smelu(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Smooth ReLU: 0 for x <= -beta, (x + beta)^2 / (4 beta) for |x| <= beta, x for x >= beta."""
    quadratic = (x + beta) ** 2 / (4 * beta)
    return torch.where(x.abs() <= beta, quadratic, F.relu(x))


def get_activation(config: ActivationConfig) -> Activation:
    """The activation function that `config` names."""
    table: dict[str, Activation] = {
        "relu": F.relu,
        "smelu": partial(smelu, beta=config.beta),
        "swish": F.silu,
        "gelu": F.gelu,
        "softplus": F.softplus,
        "elu": F.elu,
        "leaky_relu": partial(F.leaky_relu, negative_slope=config.negative_slope),
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "identity": lambda x: x,
    }
    return table[config.name]
