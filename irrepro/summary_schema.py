"""The contract of a summary's columns, in one place: which loss a study reports (excess
log loss over the teacher, or plain log loss where the data have none) and its label, which
config columns of a frame vary, and in which order their values come."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from irrepro.config import ACTIVATIONS, DATA_KINDS, MODELS, OPTIMIZERS, RANDOMNESS

if TYPE_CHECKING:  # frames are passed in: importing this module needs no pandas
    import pandas as pd

EXCESS_LOSS, LOSS = "excess_log_loss", "log_loss"
# Value orders used for bars, legends and colors; other values sort after these.
CANONICAL = {
    "activation.name": ACTIVATIONS, "model.name": MODELS, "randomness.name": RANDOMNESS,
    "data.name": DATA_KINDS, "optimizer.name": OPTIMIZERS,
}
# Label keys come in this order, then the rest in column order.
KEY_ORDER = ("activation.name", "model.name", "randomness.name", "randomness.window")


def reported_loss(frame: pd.DataFrame) -> str:
    """The loss a summary (rows of groups, `<loss>_mean` columns) reports: excess log loss
    where a group has a teacher (its excess loss is known), else log loss."""
    column = f"{EXCESS_LOSS}_mean"
    return EXCESS_LOSS if column in frame and frame[column].notna().any() else LOSS


def reported_run_loss(metrics: Sequence[Mapping[str, float]]) -> str:
    """The loss that runs' metrics report: excess log loss where every run has it."""
    known = all(math.isfinite(run.get(EXCESS_LOSS, math.nan)) for run in metrics)
    return EXCESS_LOSS if known else LOSS


def loss_label(loss: str) -> str:
    """How a loss reads in tables and on axes: 'excess log loss', 'log loss'."""
    return loss.replace("_", " ")


def varying(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Config columns of `frame` that take more than one value, minus `exclude`, and minus
    those that the others determine (a window that follows the randomness source, say)."""
    keys = [c for c in frame.columns if "." in c and c not in exclude]
    keys = [c for c in keys if frame[c].nunique(dropna=False) > 1]
    keys = sorted(keys, key=lambda k: KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER))
    given = [c for c in exclude if c in frame.columns]
    for key in reversed(keys[:]):
        others = [c for c in keys if c != key] + given
        if others and (frame.groupby(others, dropna=False)[key].nunique(dropna=False) <= 1).all():
            keys.remove(key)
    return keys


def levels(column: pd.Series) -> list:
    """Distinct values of a column: canonical ones in canonical order, then the rest sorted."""
    canonical = CANONICAL.get(column.name, ())
    present = set(column.dropna())
    return [v for v in canonical if v in present] + sorted(present - set(canonical))
