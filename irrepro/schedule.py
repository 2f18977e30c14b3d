"""Training over time: learning-rate schedules, checkpoint steps, and the convergence rule."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# The rule: a run has converged when its log loss on the whole training set changes by less
# than 1% over the last tenth of training, measured in learning-rate time (the sum of the
# step sizes): under a constant rate the last tenth of the steps, under a decaying one a
# longer stretch, since steps at a vanishing rate barely move the model whatever its loss.
CONVERGENCE_TOLERANCE = 0.01
# Over a handful of updates any loss moves little, learning or not (16 updates leave 2 in the
# last tenth, which a model still near chance passed), so a last tenth of fewer updates than
# this is not converged, whatever its change. 20 batches average over the noise of single
# ones and mean at least 200 updates in all under a constant rate; the default run has 63 in
# its last tenth, every study more than 500.
MIN_LAST_TENTH_UPDATES = 20


def total_steps(n_train: int, batch_size: int, passes: int) -> int:
    """Updates in a run: batches per pass (the last one may be partial) times passes."""
    return math.ceil(n_train / batch_size) * passes


def training_rows(n_train: int, subsample: float | None) -> int:
    """Rows a run trains on per pass: all `n_train` (or a bootstrap of as many), or the
    fraction `subsample` of them, at least one."""
    return n_train if subsample is None else max(1, round(subsample * n_train))


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
    if count < 2 or count > total_steps + 1:
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


def convergence_step(total_steps: int, schedule: str) -> int:
    """The step that opens the last tenth of training in learning-rate time."""
    factor = lr_factor(schedule, total_steps)
    rates = np.cumsum([factor(step) for step in range(total_steps)])
    return int(np.searchsorted(rates, 0.9 * rates[-1], side="right"))


def last_tenth_updates(total_steps: int, schedule: str) -> int:
    """Updates in the last tenth of training in learning-rate time (see `convergence_step`)."""
    return total_steps - convergence_step(total_steps, schedule)


def loss_change(before: float, after: float) -> float:
    """Relative fall of the training-set loss over the last tenth of training."""
    return (before - after) / before


def convergence(change: float, updates: int, train_loss: float, frequency_loss: float
                ) -> tuple[bool, str]:
    """Whether a run converged, and why: not when its last tenth held fewer than
    MIN_LAST_TENTH_UPDATES `updates`, nor when its final training loss is no lower than
    `frequency_loss` (predicting the training labels' frequencies); else when its loss
    `change` (see `loss_change`) over the last tenth is under CONVERGENCE_TOLERANCE."""
    failures = []
    if updates < MIN_LAST_TENTH_UPDATES:
        failures.append(f"too few updates in the last tenth: {updates} < {MIN_LAST_TENTH_UPDATES}")
    if not train_loss < frequency_loss:
        failures.append(f"no better than the label frequencies: {train_loss:.3f} >= "
                        f"{frequency_loss:.3f}")
    if failures:
        return False, "; ".join(failures)
    if abs(change) < CONVERGENCE_TOLERANCE:
        return True, f"loss settled: change {abs(change):.2%} < {CONVERGENCE_TOLERANCE:.0%}"
    return False, f"loss still changing: change {abs(change):.2%} >= {CONVERGENCE_TOLERANCE:.0%}"
