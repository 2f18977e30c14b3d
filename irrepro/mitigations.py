"""Mitigations of irreproducibility inside the stacked engine: terms added to each replica's
training loss (min-entropy, co-distillation, distillation toward an anchor), a moving
average of the weights that predict (EMA), and, as a reference, an ensemble per seed.

Every term is computed per replica and per example, then cut to the batch's real rows like
the loss itself, so padded rows get no gradient and a replica's bits never depend on the
stack it trains in.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from irrepro.config import MitigationConfig
from irrepro.models import probabilities, scores, stacked_loss


def members(config: MitigationConfig) -> int:
    """Models trained per seed: `members` under co-distillation and for an ensemble, else 1."""
    return config.members if config.name in ("codistill", "ensemble") else 1


def seed_predictions(predictions: np.ndarray, config: MitigationConfig) -> np.ndarray:
    """Each seed's predictions from its members' ([K * M, N, ...], seed-major): the mean of
    an ensemble's members, else member 0's."""
    group = members(config)
    if config.name == "ensemble":
        return predictions.reshape(-1, group, *predictions.shape[1:]).mean(axis=1)
    return predictions[::group]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """The entropy (nats) of each predicted distribution, [R, B]: for binary scores z,
    softplus(z) - z sigmoid(z), which is -p log p - (1 - p) log(1 - p) at p = sigmoid(z)."""
    if logits.dim() == 2:
        return F.softplus(logits) - logits * torch.sigmoid(logits)
    return -(torch.softmax(logits, dim=-1) * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each prediction against target probabilities, [R, B] (targets [R, B]
    for binary scores, [R, B, C] for classes)."""
    if logits.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def others_mean(probs: torch.Tensor, group: int) -> torch.Tensor:
    """For each of `group` consecutive replicas (the members of one seed), the mean of the
    other members' predictions, detached; for two members, exactly the other's."""
    stacked = probs.detach().unflatten(0, (-1, group))
    others = [torch.cat([stacked[:, :member], stacked[:, member + 1:]], dim=1).mean(dim=1)
              for member in range(group)]
    return torch.stack(others, dim=1).flatten(0, 1)


class Objective:
    """Each replica's training loss [R] on a batch, the mitigation's term included.

    `anchor` holds the anchor's predictions on the training set ([n_train] or
    [n_train, C]), for `anchor`; replicas are seed-major with `members` per seed.
    """

    def __init__(self, config: MitigationConfig, anchor: torch.Tensor | None = None):
        if config.name == "anchor" and anchor is None:
            raise ValueError("mitigation=anchor needs the anchor's training-set predictions")
        self.config = config
        self.anchor = anchor
        self.members = members(config)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                 rows: int, step: int) -> torch.Tensor:
        """The losses of a batch: `indices` [R, B] are its training rows, of which the first
        `rows` are real; `step` counts the updates made before this one."""
        loss = stacked_loss(logits, labels, rows)
        name, weight = self.config.name, self.config.weight
        logits = scores(logits)
        if name == "min_entropy":
            return loss + weight * entropy(logits)[:, :rows].mean(dim=1)
        if name == "anchor":
            targets = self.anchor[indices]
            return (1 - weight) * loss + weight * soft_cross_entropy(
                logits, targets)[:, :rows].mean(dim=1)
        if name == "codistill" and step >= self.config.burn_in:
            targets = others_mean(probabilities(logits), self.members)
            return loss + weight * soft_cross_entropy(logits, targets)[:, :rows].mean(dim=1)
        return loss


def weight_average(model: torch.nn.Module, config: MitigationConfig) -> AveragedModel | None:
    """Under `ema`, torch's averaged copy of `model` (started at its current weights; each
    replica's average is its own, element by element); else None. Buffers (batch-norm
    statistics) are the model's own, copied at each update."""
    if config.name != "ema":
        return None
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.decay))
    average.update_parameters(model)
    return average
