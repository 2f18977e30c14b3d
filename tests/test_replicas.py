"""Batch invariance: replica i of any K-replica job computes bit for bit what the single run
of its seed computes (predictions, training curve, checkpoint predictions), at any position."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from irrepro.config import ACTIVATIONS, OPTIMIZERS
from irrepro.data import make_dataset
from irrepro.training import train_replicas
from tests.cli import store_uri
from tests.conftest import make_config

# Awkward sizes: a partial last batch (203 = 6 * 32 + 11), odd dim, odd n_test, odd widths.
AWKWARD = {
    "data.n_train": 203, "data.n_test": 101, "data.dim": 7, "train.batch_size": 32,
    "train.passes": 1, "train.log_every": 2, "train.checkpoints": 3, "model.depth": 2,
    "model.width": 5, "model.buckets": 3, "model.embedding_dim": 3,
}
BUILT_IN_MODELS = ("logistic", "one_unit", "two_units", "mlp", "embedding")
WATCHED = (4, 9, 13)  # seeds trained alone and found at the first, a middle and the last place
STACKS = (
    (9, 4),
    (13, 4, 9),
    (0, 4, 1, 13, 2, 3, 9),
    (9, 0, 1, 2, 3, 5, 6, 13, 7, 8, 10, 11, 12, 14, 15, 4),
)


def assert_replicas_match_single_runs(config, stacks=STACKS, watched=WATCHED, anchor=None):
    """Every watched seed of every stack gives exactly its single run's results (trained
    toward `anchor`'s predictions under mitigation=anchor)."""
    data = make_dataset(config.data)
    singles = {seed: train_replicas(config, [seed], data, anchor)[0] for seed in watched}
    for stack in stacks:
        for position, result in enumerate(train_replicas(config, list(stack), data, anchor)):
            if result.seed not in singles:
                continue
            alone, where = singles[result.seed], f"seed {result.seed} at {position} of {len(stack)}"
            assert result.failure is None and alone.failure is None, where
            assert np.array_equal(result.predictions, alone.predictions), (
                f"{where}: predictions differ by "
                f"{np.abs(result.predictions - alone.predictions).max():.1e}"
            )
            assert result.curve == alone.curve, f"{where}: training curves differ"
            assert np.array_equal(result.checkpoint_steps, alone.checkpoint_steps), where
            assert np.array_equal(result.checkpoints, alone.checkpoints), where


# Every pair of (model, activation), (model, optimizer) and (activation, optimizer) occurs.
GRID = [
    (model, activation, OPTIMIZERS[(m + a) % len(OPTIMIZERS)])
    for m, model in enumerate(BUILT_IN_MODELS) for a, activation in enumerate(ACTIVATIONS)
]


@pytest.mark.parametrize(("model", "activation", "optimizer"), GRID)
def test_replica_i_is_bit_identical_to_the_single_run_of_its_seed(model, activation, optimizer):
    config = make_config(**AWKWARD, **{
        "model.name": model, "activation.name": activation, "optimizer.name": optimizer,
    })
    assert_replicas_match_single_runs(config)


@pytest.mark.parametrize("overrides", [
    {"data.dim": 1, "model.name": "two_units"},  # fan-in 1
    {"data.dim": 16, "model.name": "one_unit"},  # a width-1 product that needs no padding
    {"model.name": "mlp", "model.width": 1, "model.depth": 3, "activation.name": "softplus"},
    {"model.name": "embedding", "data.dim": 1, "model.embedding_dim": 1, "model.width": 1},
    {"train.batch_size": 1, "data.n_train": 9, "model.name": "one_unit"},
    {"train.batch_size": 500, "data.n_test": 2, "activation.name": "swish",
     "train.checkpoints": 2},
    {"train.batch_size": 100, "data.n_train": 300, "model.name": "mlp", "model.width": 3,
     "optimizer.name": "adam", "optimizer.schedule": "cosine", "activation.name": "gelu"},
    {"data.name": "quadratic", "data.quadratic_scale": 3.0, "model.name": "mlp",
     "model.width": 17, "optimizer.name": "adagrad", "activation.name": "elu"},
], ids=lambda overrides: ",".join(f"{k}={v}" for k, v in overrides.items()))
def test_replicas_match_single_runs_at_edge_shapes(overrides):
    assert_replicas_match_single_runs(make_config(**{**AWKWARD, **overrides}))


@pytest.mark.parametrize(("model", "activation"), [("one_unit", "relu"), ("two_units", "softplus")])
def test_replicas_match_single_runs_after_a_full_default_run(model, activation):
    config = make_config(**{
        "model.name": model, "activation.name": activation, "data.n_train": 20000,
        "data.n_test": 5000, "data.dim": 20, "train.batch_size": 64, "train.log_every": 50,
        "train.checkpoints": 4,
    })
    assert_replicas_match_single_runs(config, stacks=[(2, 0, 1)], watched=(0, 2))


def test_a_replicas_logged_run_is_the_single_runs_read_back_through_mlflow(tmp_path):
    from irrepro.job import run_job
    from irrepro.tracking import CHECKPOINTS, CONFIG_FILE, PREDICTIONS, Tracker

    tracker = Tracker(store_uri(tmp_path), "replicas")
    config = make_config(**{**AWKWARD, "model.name": "mlp", "activation.name": "gelu"})
    stacked = run_job(dataclasses.replace(config, seed=3, replicas=3), tracker).finished
    alone = run_job(dataclasses.replace(config, seed=4, force=True), tracker).finished
    runs = [tracker.client.get_run(run_id) for run_id in (stacked[4], alone[4])]
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    assert runs[0].data.params == runs[1].data.params
    curves = [tracker.client.get_metric_history(run.info.run_id, "train_loss") for run in runs]
    assert [(m.step, m.value) for m in curves[0]] == [(m.step, m.value) for m in curves[1]]
    for name in (PREDICTIONS, CONFIG_FILE, CHECKPOINTS):  # written straight to disk
        contents = [
            Path(tracker.client.download_artifacts(run_id, name, str(tmp_path / run_id)))
            .read_bytes() for run_id in (run.info.run_id for run in runs)
        ]
        assert contents[0] == contents[1], name
