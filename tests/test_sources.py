"""Forked runs and the dropout and data sources: identities and orders as before without
them, each source alone makes seeds disagree and fixed makes them agree, a fork shares the
run up to its step, and replicas stay bit-identical to single runs."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from irrepro.config import ConfigError, config_hash, run_params
from irrepro.data import make_dataset
from irrepro.seeds import numpy_generator
from irrepro.shuffle import shuffle_order
from irrepro.streams import TrainingStream
from irrepro.training import total_steps, train_replicas
from tests.cli import ROOT
from tests.conftest import make_config
from tests.test_mitigations import STACKS
from tests.test_replicas import assert_replicas_match_single_runs

MLP = {"model.name": "mlp", "model.depth": 2, "model.width": 8}
DROPOUT = {**MLP, "model.dropout": 0.2}
# 512 rows, batches of 32, 2 passes: 32 updates
SOURCES = {
    "shuffle": {"randomness.name": "shuffle", "randomness.window": 64},
    "perturb": {"randomness.name": "perturb"},
    "dropout": {"randomness.name": "dropout", **DROPOUT},
    "data": {"randomness.name": "data"},
    "data-subsample": {"randomness.name": "data", "randomness.subsample": 0.6},
}


def trained(config, seeds):
    return train_replicas(config, seeds, make_dataset(config.data))


def largest_pd(results) -> float:
    return max(float(np.abs(a.predictions - b.predictions).mean())
               for a, b in itertools.combinations(results, 2))


def test_the_new_keys_leave_run_identities_as_they_were():
    plain = make_config()
    explicit = make_config(**{"randomness.fork_step": 0, "randomness.extra": [],
                              "model.dropout": 0.0})
    assert config_hash(plain) == config_hash(explicit)
    params = run_params(plain)
    assert set(params["randomness"]) == {"name", "window"}
    assert "dropout" not in params["model"]


@pytest.mark.parametrize("overrides", [{}, {"randomness.name": "shuffle",
                                            "randomness.window": 64}])
def test_without_fork_or_resampling_a_pass_is_the_shuffle_order_of_before(overrides):
    config = make_config(**overrides)
    stream = TrainingStream(config, [3, 8], 512)
    generators = [numpy_generator("shuffle", seed, config.randomness.name) for seed in (3, 8)]
    for pass_index in range(3):
        expected = np.stack([shuffle_order(512, config.randomness.window, g)
                             for g in generators])
        assert np.array_equal(stream.pass_rows(pass_index).numpy(), expected)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_each_new_source_alone_makes_seeds_disagree(source):
    assert largest_pd(trained(make_config(**SOURCES[source]), [0, 1, 2])) > 0


@pytest.mark.parametrize("overrides", [
    {"randomness.name": "none", **DROPOUT},
    {"randomness.name": "none", "randomness.subsample": 0.6},
    {"randomness.name": "shuffle", "randomness.window": 64, **DROPOUT},
], ids=["dropout-fixed", "subsample-fixed", "shuffle-with-fixed-dropout"])
def test_a_fixed_source_is_the_same_for_every_seed(overrides):
    results = trained(make_config(**overrides), [0, 1, 2])
    if overrides["randomness.name"] == "none":
        assert largest_pd(results) == 0
    else:  # the shuffle still drives seeds apart; the dropout stream is each seed's base
        assert largest_pd(results) > 0


FIXED_SNIPPET = """
import hashlib, sys
sys.path.insert(0, {root!r})
from tests.conftest import make_config
from tests.test_sources import DROPOUT, trained
for overrides in ({{"randomness.name": "none", **DROPOUT}},
                  {{"randomness.name": "none", "randomness.subsample": 0.6}}):
    print(hashlib.sha256(trained(make_config(**overrides), [7])[0].predictions).hexdigest())
"""


def test_fixed_dropout_and_resampling_are_bit_identical_across_processes():
    out = subprocess.run([sys.executable, "-c", FIXED_SNIPPET.format(root=str(ROOT))],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    import hashlib

    here = [hashlib.sha256(trained(make_config(**o), [2])[0].predictions).hexdigest()
            for o in ({"randomness.name": "none", **DROPOUT},
                      {"randomness.name": "none", "randomness.subsample": 0.6})]
    assert out == here


def test_resamples_are_bootstraps_or_subsamples_per_seed():
    config = make_config(**{"randomness.name": "data"})
    stream = TrainingStream(config, [0, 1], 512)
    assert stream.resamples.shape == (2, 512)
    assert all(len(np.unique(row)) < 512 for row in stream.resamples)  # with repeats
    assert not np.array_equal(stream.resamples[0], stream.resamples[1])
    sub = TrainingStream(make_config(**{"randomness.name": "data",
                                        "randomness.subsample": 0.3}), [0, 1], 512)
    assert sub.resamples.shape == (2, 154)
    assert all(len(np.unique(row)) == 154 for row in sub.resamples)  # without replacement
    assert total_steps(make_config(**{"randomness.subsample": 0.3})) == 2 * 5  # 154 rows / 32


def test_dropout_masks_only_while_training():
    config = make_config(**{"randomness.name": "none", **DROPOUT})
    plain = trained(make_config(**{"randomness.name": "none", **MLP}), [0])[0]
    dropped = trained(config, [0])[0]
    assert not np.array_equal(plain.predictions, dropped.predictions)
    from irrepro.training import build_model

    model = build_model(config, [0, 1])
    model.eval()
    import torch

    x = torch.zeros(2, 64, config.data.dim)
    assert torch.equal(model(x), model(x))  # no masks in eval mode


@pytest.mark.parametrize("source", ["shuffle", "perturb", "dropout", "data"])
def test_a_fork_at_the_last_update_leaves_nothing_to_differ(source):
    config = make_config(**{**SOURCES[source], "randomness.fork_step": 32})
    assert largest_pd(trained(config, [0, 1, 2])) == 0


def test_a_fork_beyond_the_last_update_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"randomness.fork_step=33 must be <= the run's 32"):
        make_config(**{"randomness.name": "shuffle", "randomness.fork_step": 33})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"randomness.name": "init", "randomness.fork_step": 4}, "an initialization cannot fork"),
    ({"randomness.name": "all", "randomness.fork_step": 4}, "an initialization cannot fork"),
    ({"randomness.name": "shuffle", "randomness.extra": ["init"], "randomness.fork_step": 4},
     "an initialization cannot fork"),
    ({"randomness.name": "none", "randomness.fork_step": 4}, "forks nothing"),
    ({"randomness.extra": ["dropouts"]}, r"'dropouts' is not one of init"),
    ({"randomness.subsample": 1.5}, r"randomness.subsample=1.5 must be <= 1"),
    ({"randomness.subsample": 0.0}, r"randomness.subsample=0.0 must be > 0"),
    ({"model.dropout": 0.2}, r"model.dropout=0.2 is for model=mlp or embedding"),
    ({**MLP, "model.dropout": 1.0}, r"model.dropout=1.0 must be < 1"),
    ({"randomness.name": "dropout", **MLP}, r"the dropout source needs model.dropout > 0"),
])
def test_bad_source_values_fail_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**overrides)


@pytest.mark.parametrize("source", ["shuffle", "perturb", "dropout", "data"])
def test_a_forked_run_shares_everything_before_its_fork(source):
    # checkpoints at steps 0, 1, 3, 10, 32 (log-spaced); the fork after 10 updates
    config = make_config(**{**SOURCES[source], "randomness.fork_step": 10,
                            "train.checkpoints": 5})
    results = trained(config, [0, 1, 2])
    steps = results[0].checkpoint_steps
    assert list(steps) == [0, 1, 3, 10, 32]
    histories = np.stack([r.checkpoints for r in results])
    assert (histories[:, :4] == histories[:1, :4]).all()  # identical up to the fork
    assert largest_pd(results) > 0  # and apart by the end
    if source != "data":  # the base of the data source is a fixed bootstrap, not every row
        base = trained(make_config(**{**SOURCES[source], "randomness.name": "none",
                                      "train.checkpoints": 5}), [0])[0]
        assert np.array_equal(histories[0, :4], base.checkpoints[:4])  # the base trajectory


def test_a_fork_mid_pass_reorders_only_the_rest_of_that_pass():
    config = make_config(**{"randomness.name": "shuffle", "randomness.window": 512,
                            "randomness.fork_step": 20})  # 16 updates a pass: 4 into pass 2
    base = make_config(**{"randomness.name": "none", "randomness.window": 512})
    forked, plain = TrainingStream(config, [4], 512), TrainingStream(base, [4], 512)
    first = [forked.pass_rows(0).numpy()[0], plain.pass_rows(0).numpy()[0]]
    assert np.array_equal(*first)
    second, base_second = forked.pass_rows(1).numpy()[0], plain.pass_rows(1).numpy()[0]
    assert np.array_equal(second[:128], base_second[:128])  # 4 batches of 32 as the base
    assert not np.array_equal(second[128:], base_second[128:])
    assert sorted(second[128:]) == sorted(base_second[128:])  # the same rows, reordered


AWKWARD = {
    "data.n_train": 203, "data.n_test": 101, "data.dim": 7, "train.batch_size": 32,
    "train.passes": 2, "train.log_every": 2, "train.checkpoints": 3, "model.name": "mlp",
    "model.depth": 2, "model.width": 5, "activation.name": "swish",
}


@pytest.mark.parametrize("overrides", [
    {"randomness.name": "dropout", "model.dropout": 0.3},
    {"randomness.name": "data"},
    {"randomness.name": "data", "randomness.subsample": 0.7, "randomness.extra": ["shuffle"]},
    {"randomness.name": "shuffle", "randomness.window": 16, "randomness.fork_step": 5},
    {"randomness.name": "perturb", "randomness.fork_step": 3},
    {"randomness.name": "dropout", "model.dropout": 0.3, "randomness.fork_step": 9,
     "mitigation.name": "codistill", "mitigation.weight": 0.5},
    {"randomness.name": "all", "randomness.extra": ["dropout", "data"], "model.dropout": 0.1,
     "model.name": "embedding", "model.buckets": 3, "model.embedding_dim": 3},
], ids=["dropout", "bootstrap", "subsample+shuffle", "fork-shuffle", "fork-perturb",
        "fork-dropout-codistill", "everything-embedding"])
def test_replicas_with_the_new_sources_and_forks_are_bit_identical(overrides):
    assert_replicas_match_single_runs(make_config(**{**AWKWARD, **overrides}), stacks=STACKS)
