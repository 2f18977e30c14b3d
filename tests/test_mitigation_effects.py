"""The mitigations table: each mitigated group against its plain counterpart, PD ratio and
loss change paired by seed, Holm over the table; and its figures."""

import numpy as np
import pandas as pd
import pytest

from irrepro import figures, metrics
from irrepro.config import mitigation_label
from irrepro.data import make_dataset
from irrepro.mitigation_effects import MEASURES, markdown, mitigation_effects
from tests.test_comparisons import group


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(11)
    seeds = range(8)
    return [
        group(rng, seeds, 1.0),
        group(rng, seeds, 0.3, **{"mitigation.name": "anchor", "mitigation.weight": 0.5}),
        group(rng, seeds, 1.0, **{"optimizer.weight_decay": 0.01}),
        group(rng, seeds, 0.6, **{"activation.name": "smelu"}),
        group(rng, seeds, 1.0, **{"model.name": "mlp"}),
        group(rng, seeds, 0.5, **{"model.name": "mlp", "mitigation.name": "ema",
                                  "mitigation.decay": 0.9}),
        # no plain counterpart (another learning rate): not in the table
        group(rng, seeds, 0.5, **{"optimizer.lr": 0.3, "mitigation.name": "min_entropy",
                                  "mitigation.weight": 0.1}),
    ]


def test_each_mitigation_is_compared_with_its_plain_counterpart(study):
    frame = mitigation_effects(study)
    assert list(frame["mitigation"]) == ["activation smelu", "weight_decay=0.01",
                                         "anchor weight=0.5", "ema decay=0.9"]
    assert list(frame["model.name"]) == ["two_units", "two_units", "two_units", "mlp"]
    assert "activation.name" not in frame  # a mitigation's activation is in its label
    anchor = frame.iloc[2]
    assert anchor["runs"] == "8/8"
    assert anchor["ratio"] == pytest.approx(anchor["pd"] / anchor["pd_none"])
    assert anchor["ratio_high"] < 1 and anchor["p_adjusted"] < 0.05
    assert (frame["p_adjusted"] >= frame["p_value"]).all()
    assert list(frame.columns[-len(MEASURES):]) == list(MEASURES)
    assert frame.attrs["loss"] == "excess log loss"


def test_the_loss_change_is_the_paired_difference_of_mean_excess_losses(study):
    frame = mitigation_effects(study)
    data = make_dataset(study[0].config.data)

    def mean_excess(g):
        return np.mean([metrics.log_loss(p, data.y_test) for p in g.predictions]) - \
            metrics.log_loss(data.p_test, data.y_test)

    row = frame.iloc[2]
    assert row["loss_difference"] == pytest.approx(mean_excess(study[1]) - mean_excess(study[0]))
    assert row["loss_difference_low"] < row["loss_difference"] < row["loss_difference_high"]
    reduced = int(((frame["p_adjusted"] < 0.05) & (frame["ratio"] < 1)).sum())
    assert reduced >= 1 and f"{reduced} of 4 reduce PD" in markdown(frame, "s")


def test_labels_name_the_mitigation_and_its_strengths():
    assert mitigation_label({"model.name": "mlp"}) == "none"
    assert mitigation_label({"mitigation.name": "codistill", "mitigation.weight": 0.5,
                             "mitigation.members": 2.0, "mitigation.burn_in": 0}) == \
        "codistill weight=0.5"
    assert mitigation_label({"mitigation.name": "ensemble", "mitigation.members": 4.0,
                             "mitigation.weight": np.nan}) == "ensemble members=4"
    assert mitigation_label({"optimizer.weight_decay": 0.001, "mitigation.name": None}) == \
        "weight_decay=0.001"


def test_the_figures_draw_every_mitigation(study, tmp_path):
    from irrepro.analysis import summary_frame

    summary = summary_frame(study)
    effects = mitigation_effects(study)
    assert figures.pd_reduction(effects, tmp_path / "r.png", study="s").exists()
    assert figures.pd_vs_loss(summary, tmp_path / "l.png", study="s").exists()
    plain = summary[summary["optimizer.weight_decay"].isna() & summary["mitigation.name"].isna()]
    assert figures.pd_vs_loss(plain.drop(columns=["optimizer.weight_decay", "mitigation.name"]),
                              tmp_path / "none.png") is None
    assert figures.pd_reduction(pd.DataFrame(), tmp_path / "empty.png") is None
