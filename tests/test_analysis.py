"""Selection, grouping and summaries over a real (temporary) MLflow store, in process."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from irrepro import analysis, metrics
from irrepro.config import group_key
from irrepro.data import make_dataset
from irrepro.job import run_job
from irrepro.report import ANALYSIS_TAG, analyze
from irrepro.tracking import Tracker
from tests.cli import store_uri
from tests.conftest import make_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two groups of 3 seeds each, plus a failed run, a foreign-data run and a bare run."""
    folder = tmp_path_factory.mktemp("store")
    tracker = Tracker(store_uri(folder), "analysis")
    relu = make_config(replicas=3, **{"activation.name": "relu"})
    smelu = make_config(replicas=3, **{"activation.name": "smelu"})
    run_job(relu, tracker)
    run_job(smelu, tracker)
    run_job(make_config(**{"optimizer.lr": 1e12, "seed": 10}), tracker)  # diverges: FAILED
    foreign = run_job(dataclasses.replace(relu, seed=20, replicas=1), tracker)
    tracker.client.set_tag(foreign.finished[20], "data_hash", "not-the-data")
    digest = make_dataset(relu.data).digest
    bare = tracker.start_run("bare", {"group_key": group_key(relu), "data_hash": digest,
                                      "seed": "30"})
    tracker.end_run(bare, "FINISHED")
    return tracker, relu, smelu


def test_only_finished_runs_are_selected_and_the_rest_counted(store):
    tracker, _, _ = store
    selection = analysis.select_runs(tracker)
    assert len(selection.runs) == 8
    assert selection.skipped == {"failed": 1}


def test_runs_with_other_data_or_no_predictions_are_left_out_with_a_reason(store):
    tracker, _, _ = store
    selection = analysis.select_runs(tracker)
    groups = analysis.build_groups(tracker, selection)
    assert sorted(len(g.run_ids) for g in groups) == [3, 3]
    assert selection.skipped == {"failed": 1, "different data hash": 1,
                                 "missing predictions artifact": 1}
    assert "skipped 1 different data hash, 1 failed" in selection.describe()


def test_groups_hold_seeds_of_one_config_and_summaries_match_the_metrics(store):
    tracker, relu, _ = store
    groups = analysis.build_groups(tracker, analysis.select_runs(tracker))
    relu_group = next(g for g in groups if g.config.activation.name == "relu")
    assert relu_group.predictions.shape == (3, relu.data.n_test)
    row = analysis.summarize(relu_group)
    assert row["pd"] == pytest.approx(metrics.pd_l1_naive(relu_group.predictions), abs=1e-12)
    assert row["pd_low"] <= row["pd"] <= row["pd_high"]
    assert row["pd_low"] < row["pd_low_examples"] <= row["pd_high_examples"] < row["pd_high"]
    assert row["accuracy_low"] <= row["accuracy_mean"] <= row["accuracy_high"]
    assert relu_group.seeds == sorted(relu_group.seeds) and len(relu_group.seeds) == 3
    assert row["n_runs"] == 3 and row["activation.name"] == "relu"


def test_filters_select_by_mlflow_filter_string_and_by_sweep(store):
    tracker, _, _ = store
    smelu_only = analysis.select_runs(tracker, filter_string="params.`activation.name` = 'smelu'")
    assert len(smelu_only.runs) == 3
    assert analysis.select_runs(tracker, sweep_id="no-such-sweep").runs == []


def test_summary_keeps_label_and_varying_columns_only(store):
    tracker, _, _ = store
    frame = analysis.summary_frame(analysis.build_groups(tracker, analysis.select_runs(tracker)))
    assert list(frame["activation.name"]) == ["relu", "smelu"]
    assert "data.n_train" not in frame.columns  # the same in every group
    assert {"pd", "pd_low", "pd_high", "churn", "excess_log_loss_mean"} <= set(frame.columns)
    table = analysis.markdown_table(frame)
    assert table.count("\n") == 4 and table.startswith("| group_key |")


def test_a_single_run_group_is_reported_not_dropped(tmp_path, caplog):
    tracker = Tracker(store_uri(tmp_path), "single")
    run_job(make_config(), tracker)
    frame = analysis.summary_frame(analysis.build_groups(tracker, analysis.select_runs(tracker)))
    assert len(frame) == 1 and frame["n_runs"][0] == 1 and np.isnan(frame["pd"][0])
    analyze(tracker, "single", tmp_path / "reports", tmp_path / "figures", log_run=False)
    warnings = [r for r in caplog.records if "fewer than 3 seeds" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    single = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
              and "1 of 1 groups hold a single run: they have no PD" in r.getMessage()]
    assert len(single) == 1
    table = (tmp_path / "reports" / "single" / "summary.md").read_text()
    assert table.count("| n/a: 1 run ") == 3  # PD, relative PD, churn


def test_two_seeds_get_no_interval_over_seeds_and_the_table_says_so(tmp_path):
    tracker = Tracker(store_uri(tmp_path), "two")
    run_job(make_config(replicas=2), tracker)
    analyze(tracker, "two", tmp_path / "reports", tmp_path / "figures", log_run=False)
    (row,) = pd.read_csv(tmp_path / "reports" / "two" / "summary.csv").to_dict("records")
    assert np.isnan(row["pd_low"]) and row["pd_low_examples"] < row["pd"]
    assert "[n/a: < 3 seeds]" in (tmp_path / "reports" / "two" / "summary.md").read_text()


def test_the_study_compares_its_groups_paired_by_seed_and_prints_one(store, tmp_path, capsys):
    import analyze as entry_point

    tracker, _, _ = store
    reports = tmp_path / "reports"
    code = entry_point.main(["--experiment", "analysis", "--tracking-uri", tracker.uri,
                             "--reports", str(reports), "--figures", str(tmp_path / "figures"),
                             "--no-mlflow-run", "--compare", "activation.name=smelu,relu"])
    assert code == 0
    (row,) = pd.read_csv(reports / "analysis" / "comparisons.csv").to_dict("records")
    assert (row["factor"], row["level_a"], row["level_b"]) == ("activation.name", "relu", "smelu")
    assert row["paired"] and row["runs_a"] == row["runs_b"] == 3
    assert row["ratio_low"] <= row["ratio"] <= row["ratio_high"] and 0 <= row["p_value"] <= 1
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("activation.name: smelu vs relu: PD ")
    assert f"ratio {1 / row['ratio']:.3g}" in printed
    # then a line per group, and the files by folder
    *_, relu, smelu, tables, drawn = printed.splitlines()
    summary = pd.read_csv(reports / "analysis" / "summary.csv").set_index("activation.name")
    for line, name in ((relu, "relu"), (smelu, "smelu")):
        group = summary.loc[name]
        assert line == (f"activation.name={name}, group {group['group_key']}: PD {group['pd']:.3g} "
                        f"[{group['pd_low']:.3g}, {group['pd_high']:.3g}], churn "
                        f"{group['churn']:.3g}, converged {'yes' if group['converged'] else 'no'}"
                        ", 3 runs")
    assert tables == (f"{reports / 'analysis'}/: summary.csv summary.md comparisons.csv "
                      "comparisons.md ensembles.csv")
    assert drawn.startswith(f"{tmp_path / 'figures' / 'analysis'}/: ") and "tradeoff.png" in drawn
    assert "relu vs smelu" in (reports / "analysis" / "comparisons.md").read_text()
    assert entry_point.main(["--experiment", "analysis", "--tracking-uri", tracker.uri,
                             "--reports", str(reports), "--figures", str(tmp_path / "figures"),
                             "--no-mlflow-run", "--compare", "activation.name=relu,gelu"]) == 1
    assert "its levels: relu, smelu" in capsys.readouterr().err


def test_a_seed_retrained_with_force_counts_once(tmp_path):
    tracker = Tracker(store_uri(tmp_path), "force")
    run_job(make_config(replicas=2), tracker)
    run_job(make_config(replicas=2, force=True), tracker)
    selection = analysis.select_runs(tracker)
    (group,) = analysis.build_groups(tracker, selection)
    assert len(group.run_ids) == 2 and selection.skipped == {"older run of the same seed": 2}
    assert analysis.summarize(group)["pd"] > 0  # duplicates would add zero-distance pairs
    analyze(tracker, "force", tmp_path / "reports", tmp_path / "figures")
    (run,) = tracker.search(f"tags.`{ANALYSIS_TAG}` = 'force'")
    assert run.data.metrics == {"groups": 1, "runs": 2}  # what it analysed, not the 4 selected


def test_an_analysis_with_no_group_left_says_why(tmp_path):
    tracker = Tracker(store_uri(tmp_path), "empty")
    summary = run_job(make_config(), tracker)
    tracker.client.set_tag(summary.finished[0], "data_hash", "other")
    with pytest.raises(analysis.AnalysisError, match="1 different data hash"):
        analyze(tracker, "empty", tmp_path / "reports", tmp_path / "figures")


def test_predictions_that_are_not_probabilities_are_refused_naming_the_run(tmp_path):
    tracker = Tracker(store_uri(tmp_path), "bad")
    summary = run_job(make_config(**{"train.checkpoints": 2}), tracker)
    run_id = summary.finished[0]
    folder = Path(tracker.client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    good = np.load(folder / "predictions.npy")
    cases = [(np.where(good > 0.5, 1.5, good).astype(np.float32), r"outside \[0, 1\]"),
             (np.where(good > 0.5, np.nan, good).astype(np.float32), "not finite"),
             ((good > 0.5).astype(np.int64), "holds int64 values, not probabilities")]
    for bad, message in cases:
        np.save(folder / "predictions.npy", bad)
        with pytest.raises(analysis.AnalysisError,
                           match=rf"^run {run_id}: predictions\.npy .*{message}") as error:
            analysis.build_groups(tracker, analysis.select_runs(tracker))
        assert "\n" not in str(error.value)
    np.save(folder / "predictions.npy", good)
    with np.load(folder / "checkpoints.npz") as stored:
        steps, history = stored["steps"], stored["predictions"]
    np.savez(folder / "checkpoints.npz", steps=steps, predictions=history - 1)
    with pytest.raises(analysis.AnalysisError, match=rf"^run {run_id}: checkpoints\.npz holds "
                                                     r"values outside \[0, 1\]"):
        analysis.build_groups(tracker, analysis.select_runs(tracker))


@pytest.fixture(scope="module")
def five_data_sets(tmp_path_factory):
    """Five groups of 2 seeds with checkpoints, each on a data set of its own (more than the
    data cache holds), analysed in this process, counting the data sets built; returns the
    tracker, the data seeds built, and every file the analysis wrote."""
    from irrepro import data

    folder = tmp_path_factory.mktemp("datasets")
    tracker = Tracker(store_uri(folder), "datasets")
    for data_seed in range(5):
        run_job(make_config(replicas=2, **{"data.seed": data_seed, "train.checkpoints": 4}),
                tracker)
    built = []
    synthetic = data._synthetic
    data._make_dataset.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "_synthetic",
                      lambda config: built.append(config.seed) or synthetic(config))
        written = analyzed(tracker, folder / "one", workers=1)
    return tracker, built, written


def analyzed(tracker, folder, workers):
    """Every report and figure of an analysis of `tracker`'s experiment, by name."""
    analyze(tracker, "datasets", folder / "reports", folder / "figures", log_run=False,
            workers=workers)
    return {path.name: path.read_bytes() for kind in ("reports", "figures")
            for path in (folder / kind / "datasets").iterdir()}


def test_each_groups_data_are_built_once(five_data_sets):
    """However many tables read a group's data set, it is built once, for its group."""
    _, built, _ = five_data_sets
    assert sorted(built) == list(range(5))


def test_figures_drawn_on_two_cores_are_those_of_one(five_data_sets, tmp_path):
    tracker, _, written = five_data_sets
    assert set(written) >= {"summary.csv", "by_step.csv", "ensembles.csv", "comparisons.csv",
                            "pd_over_training.png", "tradeoff.png", "pd_by_teacher_probability.png"}
    assert analyzed(tracker, tmp_path, workers=2) == written
