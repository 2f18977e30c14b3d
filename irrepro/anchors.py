"""The anchor of mitigation=anchor: one model per configuration, trained with every
randomness source at its fixed base (so it is no source of its own), stored once in the
experiment as a run of its own, and read back by every job that distills toward it."""

from __future__ import annotations

import dataclasses
import io
import logging
from typing import Any

import numpy as np

from irrepro.config import Config, MitigationConfig, config_hash
from irrepro.tracking import Tracker

log = logging.getLogger(__name__)
ROLE_TAG = "irrepro.role"
KEY_TAG = "anchor_key"
TRAIN_PREDICTIONS = "train_predictions.npy"


class AnchorError(RuntimeError):
    """An anchor that cannot be trained or read; the message says which and why."""


def anchor_config(config: Config) -> Config:
    """The anchor of `config`: the same model, data (and subsample) and budget without a
    mitigation, every randomness source at its fixed base, no fork, seed 0."""
    return dataclasses.replace(
        config, seed=0, replicas=1, seeds=[], mitigation=MitigationConfig(),
        randomness=dataclasses.replace(config.randomness, name="none", extra=[], fork_step=0),
    )


def anchor_key(config: Config) -> str:
    """What identifies an anchor: the config hash of `anchor_config` (so every strength of
    one configuration shares it)."""
    return config_hash(anchor_config(config))


def stored_anchor(tracker: Tracker, config: Config, data_hash: str) -> np.ndarray | None:
    """The training-set predictions of `config`'s FINISHED anchor on these data, or None."""
    runs = tracker.search(
        f"tags.{KEY_TAG} = '{anchor_key(config)}' and tags.data_hash = '{data_hash}' "
        "and attributes.status = 'FINISHED'"
    )
    if not runs:
        return None
    return _predictions(runs[0], tracker.read_artifact(runs[0], TRAIN_PREDICTIONS))


def anchor_tags(config: Config, data_hash: str) -> dict[str, str]:
    """The tags of an anchor's run (no group key: analysis never takes it for a training
    run)."""
    return {ROLE_TAG: "anchor", KEY_TAG: anchor_key(config), "data_hash": data_hash}


def _predictions(run: Any, contents: bytes) -> np.ndarray:
    try:
        predictions = np.load(io.BytesIO(contents), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise AnchorError(f"anchor run {run.info.run_id}: {TRAIN_PREDICTIONS} is unreadable "
                          f"({error})") from error
    if predictions.dtype != np.float32 or not np.isfinite(predictions).all():
        raise AnchorError(f"anchor run {run.info.run_id}: {TRAIN_PREDICTIONS} is not finite "
                          "float32 predictions")
    return predictions
