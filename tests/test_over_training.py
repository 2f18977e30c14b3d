"""Irreproducibility over training: checkpoints in MLflow, PD by step, convergence in reports."""

import re

import numpy as np
import pandas as pd
import pytest

from irrepro import analysis, figures, metrics, summary_schema, uncertainty
from irrepro.job import run_job
from irrepro.report import analyze, readable_summary
from irrepro.schedule import checkpoint_steps
from irrepro.tracking import CHECKPOINTS, PREDICTIONS, Tracker, local_artifact_folder
from irrepro.training import total_steps
from tests.cli import ROOT, store_uri
from tests.conftest import make_config

CHECKPOINT_COUNT = 6


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three seeds under each randomness source, with checkpoints; one group without them."""
    folder = tmp_path_factory.mktemp("over_training")
    tracker = Tracker(store_uri(folder), "over_training")
    configs = {
        mode: make_config(replicas=3, **{"randomness.name": mode, "randomness.window": 64,
                                         "train.checkpoints": CHECKPOINT_COUNT})
        for mode in ("none", "init", "shuffle", "all")
    }
    for config in configs.values():
        run_job(config, tracker)
    run_job(make_config(replicas=2, **{"model.name": "logistic"}), tracker)
    summary = analyze(tracker, "over_training", folder / "reports", folder / "figures",
                      log_run=False).summary
    return tracker, configs, folder, summary


def by_step(folder):
    return pd.read_csv(folder / "reports" / "over_training" / "by_step.csv")


def test_each_run_stores_its_checkpoints_beside_its_predictions(study):
    tracker, configs, _, _ = study
    run = tracker.search("tags.seed = '1' and params.`randomness.name` = 'init'")[0]
    folder = local_artifact_folder(run.info.artifact_uri)
    final = np.load(folder / PREDICTIONS)
    with np.load(folder / CHECKPOINTS) as stored:
        steps, predictions = stored["steps"], stored["predictions"]
    expected = checkpoint_steps(CHECKPOINT_COUNT, total_steps(configs["init"]))
    assert steps.dtype == np.int64 and steps.tolist() == expected.tolist()
    assert predictions.dtype == np.float32 and predictions.shape == (CHECKPOINT_COUNT, 128)
    assert np.array_equal(predictions[-1], final)


@pytest.mark.parametrize("mode", ["none", "shuffle"])
def test_with_equal_initializations_pd_at_step_0_is_exactly_zero(study, mode):
    rows = by_step(study[2])
    rows = rows[rows["randomness.name"] == mode]
    assert rows["step"].tolist() == sorted(rows["step"])
    assert rows[rows["step"] == 0]["pd"].item() == 0.0
    if mode == "shuffle":
        assert rows[rows["step"] > 0]["pd"].max() > 0


@pytest.mark.parametrize("mode", ["init", "all"])
def test_with_random_initializations_pd_at_step_0_is_positive(study, mode):
    rows = by_step(study[2])
    assert rows[(rows["randomness.name"] == mode) & (rows["step"] == 0)]["pd"].item() > 0


def test_the_last_checkpoint_is_the_summary(study):
    _, _, folder, summary = study
    rows = by_step(folder)
    last = rows.loc[rows.groupby("group_key")["step"].idxmax()].set_index("group_key")
    final = summary.set_index("group_key").loc[last.index]
    assert np.allclose(last["pd"], final["pd"], rtol=1e-12, atol=0)
    assert np.allclose(last["excess_log_loss_mean"], final["excess_log_loss_mean"], rtol=1e-9)
    assert (rows["pd_low"] <= rows["pd"]).all() and (rows["pd"] <= rows["pd_high"]).all()
    for column in ("pd_relative", "churn", "excess_log_loss_std", "accuracy_mean",
                   "accuracy_std"):
        assert rows[column].notna().all()


def test_each_group_takes_its_parameter_count_from_its_runs(study, monkeypatch):
    from irrepro import training
    from irrepro.data import make_dataset

    tracker = study[0]
    monkeypatch.setattr(analysis, "parameter_count",
                        lambda *args: pytest.fail("the analysis counted parameters itself"))
    groups = analysis.build_groups(tracker, analysis.select_runs(tracker))
    for group in groups:
        rows = [analysis.summarize(group), *analysis.by_step_rows(group),
                *analysis.ensemble_rows(group)]
        assert {row["n_params"] for row in rows} == {group.n_params}
        assert group.n_params == training.parameter_count(group.config,
                                                          make_dataset(group.config.data))


def test_runs_without_a_logged_count_get_one_for_built_in_models_only(tiny):
    from irrepro.data import make_dataset

    built_in = tiny(**{"model.name": "mlp", "model.depth": 1, "model.width": 3})
    assert analysis.parameter_count(built_in, make_dataset(built_in.data)) == 8 * 3 + 3 + 3 + 1
    module = tiny(**{"model.name": "module", "model.target": "no_such_package.anything"})
    assert np.isnan(analysis.parameter_count(module, make_dataset(module.data)))  # no import


def test_pd_by_step_is_the_pd_of_each_checkpoint_with_its_interval_over_seeds(study):
    tracker = study[0]
    groups = analysis.build_groups(tracker, analysis.select_runs(tracker))
    group = next(group for group in groups if group.checkpoints is not None)
    rows = analysis.by_step_rows(group)
    for row, P in zip(rows, group.checkpoints[1].swapaxes(0, 1), strict=True):
        assert row["pd"] == metrics.pd_l1(P)
        sample = uncertainty.sample(uncertainty.pair_values(P, "pd"))
        assert (row["pd_low"], row["pd_high"]) == sample.interval()
        assert (row["pd_low_examples"], row["pd_high_examples"]) == sample.examples_interval()


def test_groups_without_checkpoints_are_left_out_of_by_step(study):
    _, _, folder, summary = study
    assert len(summary) == 5
    assert set(by_step(folder)["model.name"]) == {"two_units"}


def test_the_summary_says_which_groups_converged(study):
    summary = study[3]
    assert summary["converged"].map(lambda v: v in (True, False)).all()
    runs = study[0].search("attributes.status = 'FINISHED'")
    assert all({"converged", "loss_change_last_tenth"} <= set(r.data.metrics) for r in runs)


def test_pd_over_training_is_drawn(study):
    path = study[2] / "figures" / "over_training" / "pd_over_training.png"
    assert path.stat().st_size > 5000


def test_the_readable_summary_has_only_the_columns_people_read(study):
    table = readable_summary(study[3])
    assert list(table.columns) == [
        "model.name", "randomness.name", "runs", "PD [95% CI]", "relative PD [95% CI]",
        "churn [95% CI]", "excess log loss [95% CI]", "accuracy [95% CI]", "seeds for ±10%",
        "converged",
    ]
    text = (study[2] / "reports" / "over_training" / "summary.md").read_text()
    assert re.search(r"\| \d\.\d+(e-\d+)? \[\d", text)
    assert re.search(r"\| \d+ \| (yes|no) \|", text)  # seeds for a 10% half-width


def test_a_figure_with_too_many_series_becomes_small_multiples(tmp_path, monkeypatch):
    rows = []
    for i, (depth, width, activation, mode) in enumerate(
        (d, w, a, m) for d in (1, 2, 4) for w in (4, 16, 64)
        for a in ("relu", "smelu", "swish") for m in ("init", "shuffle")
    ):
        pd_value = 0.01 * depth * (1 + i % 3)
        rows.append({
            "group_key": f"g{i}", "data.name": "linear", "model.name": "mlp",
            "model.depth": depth, "model.width": width, "activation.name": activation,
            "randomness.name": mode, "n_runs": 4, "n_params": width * (20 + depth * width),
            "pd": pd_value, "pd_low": pd_value * 0.9, "pd_high": pd_value * 1.1,
            "excess_log_loss_mean": 0.01, "excess_log_loss_std": 0.001,
            "excess_log_loss_low": 0.009, "excess_log_loss_high": 0.011,
            "converged": i % 5 != 0,
        })
    summary = pd.DataFrame(rows)
    assert summary_schema.varying(summary, exclude=figures.SIZE_KEYS) == ["activation.name",
                                                                    "randomness.name"]
    path = figures.pd_by_size(summary, tmp_path / "size.png")
    assert path is not None and path.stat().st_size > 5000
    steps = pd.DataFrame([{**row, "step": step} for row in rows for step in (0, 10, 100)])
    drawn = []
    monkeypatch.setattr(figures.plt, "close", drawn.append)  # keep the figure to look at
    assert figures.pd_over_training(steps, summary, tmp_path / "steps.png") is not None
    assert all(ax.get_xlim()[0] == 0 for ax in drawn[0].axes)  # no empty negative half


def test_every_image_the_readme_links_exists():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert links
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links missing images: {missing}"
