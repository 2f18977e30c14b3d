"""Training over time: learning-rate schedules, checkpoint steps, and the convergence rule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# The rule: a run has converged when its mean training loss over the last tenth of training
# is within 1% of its mean over the tenth before.
CONVERGENCE_TOLERANCE = 0.01


def lr_factor(schedule: str, total_steps: int) -> Callable[[int], float]:
    """The learning rate's multiplier after `step` updates: constant, cosine or linear to 0."""
    factors: dict[str, Callable[[int], float]] = {
        "constant": lambda step: 1.0,
        "cosine": lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)),
        "linear": lambda step: max(0.0, 1 - step / total_steps),
    }
    return factors[schedule]


def checkpoint_steps(count: int, total_steps: int) -> np.ndarray:
    """`count` strictly increasing steps from 0 (the initialization) to `total_steps`, both
    included, spaced logarithmically (nudged apart where rounding would merge them)."""
    if count == 0:
        return np.empty(0, dtype=np.int64)
    if count == 1 or count > total_steps + 1:
        raise ValueError(
            f"train.checkpoints={count} must be 0 or between 2 and the {total_steps + 1} "
            "steps of training (initialization included)"
        )
    spaced = np.geomspace(1, total_steps, count - 1) if count > 2 else np.array([total_steps])
    steps = np.concatenate([[0], np.round(spaced)]).astype(np.int64)
    for i in range(1, count):
        steps[i] = max(steps[i], steps[i - 1] + 1)
    steps[-1] = total_steps
    for i in range(count - 2, -1, -1):
        steps[i] = min(steps[i], steps[i + 1] - 1)
    return steps


def loss_change(curve: Sequence[tuple[int, float]], total_steps: int) -> float:
    """Relative change of the mean training loss from the second-to-last tenth of training to
    the last tenth (positive when it still falls); NaN when a tenth holds no logged point."""
    steps = np.array([step for step, _ in curve], dtype=np.float64)
    losses = np.array([loss for _, loss in curve], dtype=np.float64)
    last = losses[steps > 0.9 * total_steps]
    before = losses[(steps > 0.8 * total_steps) & (steps <= 0.9 * total_steps)]
    if last.size == 0 or before.size == 0:
        return math.nan
    return float((before.mean() - last.mean()) / before.mean())


def converged(change: float) -> bool:
    """Whether a run's loss change (see `loss_change`) meets the convergence rule."""
    return abs(change) < CONVERGENCE_TOLERANCE
