"""Comparisons between a study's groups: which pairs are compared, pairing, orientation."""

import numpy as np
import pytest

from irrepro import comparisons
from irrepro.analysis import Group
from tests.conftest import make_config
from tests.test_uncertainty import SEED_EFFECTS, predictions


def group(rng, seeds, scale=1.0, **overrides):
    config = make_config(**overrides)
    effects = {name: value * scale for name, value in SEED_EFFECTS.items()}
    P = predictions(rng, len(seeds), 128, **effects, examples=EXAMPLES)
    return Group(key=str(sorted(overrides.items())) + str(seeds), config=config,
                 run_ids=[str(seed) for seed in seeds], seeds=list(seeds), predictions=P,
                 run_metrics={})


EXAMPLES = (np.random.default_rng(0).normal(0, 2, 128), np.random.default_rng(1).normal(0, 1, 128))


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(3)
    seeds = range(8)
    return [
        group(rng, seeds, 1.0, **{"activation.name": "relu", "randomness.name": "init"}),
        group(rng, seeds, 0.3, **{"activation.name": "smelu", "randomness.name": "init"}),
        group(rng, seeds, 1.0, **{"activation.name": "relu", "randomness.name": "shuffle",
                                  "randomness.window": 64}),
        # other seeds: compared unpaired with relu under shuffle
        group(rng, range(100, 108), 1.0, **{"activation.name": "smelu",
                                           "randomness.name": "shuffle",
                                           "randomness.window": 64}),
        # two seeds: too few to compare
        group(rng, range(2), 1.0, **{"activation.name": "swish", "randomness.name": "init"}),
    ]


def test_every_pair_of_levels_of_otherwise_equal_groups_is_compared(study):
    frame = comparisons.comparisons(study)
    by_factor = frame.groupby("factor").size().to_dict()
    # the window follows the randomness source, so it is no factor of its own
    assert by_factor == {"activation.name": 2, "randomness.name": 2}
    relu_smelu = frame[(frame["factor"] == "activation.name")
                       & (frame["randomness.name"] == "init")].iloc[0]
    assert (relu_smelu["level_a"], relu_smelu["level_b"]) == ("relu", "smelu")
    assert relu_smelu["paired"] and relu_smelu["runs_a"] == relu_smelu["runs_b"] == 8
    assert relu_smelu["ratio"] == pytest.approx(relu_smelu["pd_a"] / relu_smelu["pd_b"])
    assert relu_smelu["ratio_low"] > 1 and relu_smelu["p_adjusted"] < 0.05
    unpaired = frame[(frame["factor"] == "activation.name")
                     & (frame["randomness.name"] == "shuffle")].iloc[0]
    assert not unpaired["paired"]
    assert (frame["p_adjusted"] >= frame["p_value"]).all()
    assert list(frame.columns[-len(comparisons.MEASURES):]) == list(comparisons.MEASURES)


def test_a_selected_comparison_is_oriented_as_asked_and_described(study, tmp_path):
    frame = comparisons.comparisons(study)
    forward = comparisons.select(frame, "activation.name", "relu", "smelu")
    backward = comparisons.select(frame, "activation.name", "smelu", "relu")
    assert len(forward) == len(backward) == 2
    np.testing.assert_allclose(backward["ratio"], 1 / forward["ratio"])
    np.testing.assert_allclose(backward["ratio_low"], 1 / forward["ratio_high"])
    np.testing.assert_allclose(backward["difference"], -forward["difference"])
    with pytest.raises(ValueError, match="its levels: relu, smelu"):
        comparisons.select(frame, "activation.name", "relu", "gelu")
    with pytest.raises(ValueError, match="compared keys"):
        comparisons.select(frame, "model.depth", "1", "2")
    frame.to_csv(tmp_path / "comparisons.csv", index=False)
    text = comparisons.describe(tmp_path / "comparisons.csv", "randomness.name", "init",
                                "shuffle")
    assert text.startswith("randomness.name: init vs shuffle (activation.name=relu): PD ")
    assert "paired, 8/8 seeds" in text
    assert "# x: comparisons" in comparisons.markdown(frame, "x")


def test_nothing_to_compare_gives_an_empty_table(study):
    frame = comparisons.comparisons(study[:1])
    assert frame.empty and list(frame.columns) == list(comparisons.MEASURES)
    assert "Nothing to compare" in comparisons.markdown(frame, "x")


def test_a_key_omitted_at_its_default_is_compared_as_that_default():
    rng = np.random.default_rng(5)
    shuffle = {"randomness.name": "shuffle", "randomness.window": 64}
    study = [group(rng, range(6), 1.0, **shuffle),  # no fork: fork_step omitted
             group(rng, range(6), 0.5, **shuffle, **{"randomness.fork_step": 20})]
    [row] = comparisons.comparisons(study).to_dict("records")
    assert (row["factor"], row["level_a"], row["level_b"]) == ("randomness.fork_step", 0, 20)
