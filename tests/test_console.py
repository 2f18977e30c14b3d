"""What train.py and analyze.py print when they end, and the exit status of failed runs."""

import json
import math
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from irrepro import console, hydra_app
from irrepro.config import register_configs
from irrepro.hydra_app import train_from_hydra
from irrepro.tracking import Tracker
from tests.cli import ROOT, TINY_ARGS, store_uri


def run(seed, status="FINISHED", group="g1", end=1, reason=None, **metrics):
    tags = {"group_key": group, "seed": str(seed)}
    if reason:
        tags["failure_reason"] = reason
    return SimpleNamespace(
        info=SimpleNamespace(status=status, end_time=end, run_id=f"{group}-{seed}-{end}"),
        data=SimpleNamespace(tags=tags, metrics=metrics))


def test_seeds_print_as_ranges():
    assert console.span([7, 0, 1, 2, 3, 5, 8]) == "0..3,5,7,8"
    assert console.span([]) == ""


def test_a_seed_finished_in_any_attempt_counts_finished_and_skipped_seeds_count_too():
    runs = [
        run(0, "KILLED", end=1, reason="Terminated: signal SIGTERM"), run(0, end=2),  # requeued
        run(1, "FAILED", reason="training loss diverged (nan) by step 4"),
        run(2, "RUNNING", end=None),
        SimpleNamespace(info=SimpleNamespace(status="FINISHED", end_time=1),  # an anchor run
                        data=SimpleNamespace(tags={"irrepro.role": "anchor"}, metrics={})),
        run(0, group="g0"),
    ]
    reused = [run(5, end=1), run(5, end=3), run(0, end=9)]  # the latest run of a skipped seed
    g0, g1 = console.outcomes(runs, reused, {"g1": "activation=relu", "g9": "x"})  # by label
    assert (g0.key, g0.label, g1.key, g1.label) == ("g0", "", "g1", "activation=relu")
    assert sorted(g1.finished) == [0, 5] and g1.reused == {5}
    assert g1.finished[0].info.end_time == 2 and g1.finished[5].info.end_time == 3
    assert g1.failed == {1: "training loss diverged (nan) by step 4", 2: "the run is RUNNING"}


def test_a_group_line_gives_mean_and_std_over_seeds_and_convergence():
    teacher = console.GroupOutcome("g1", "activation=smelu", reused={1}, finished={
        0: run(0, accuracy=0.8, excess_log_loss=0.02, log_loss=0.5, converged=1.0),
        1: run(1, accuracy=0.9, excess_log_loss=0.04, log_loss=0.6, converged=0.0)})
    assert console.group_line(teacher) == (
        "activation=smelu, group g1, seeds 0,1 (1 already FINISHED): accuracy 0.85 ± 0.05, "
        "excess log loss 0.03 ± 0.01, converged 1/2")
    table = console.GroupOutcome("g2", reused={3}, finished={
        3: run(3, accuracy=0.75, log_loss=0.5, excess_log_loss=math.nan)})
    assert console.group_line(table) == (
        "group g2, seed 3 (already FINISHED): accuracy 0.75, log loss 0.5")
    assert console.group_line(console.GroupOutcome("g3", failed={0: "x"})) is None


def test_a_failure_line_names_the_group_the_failed_seeds_and_the_first_reason():
    group = console.GroupOutcome("g1", "optimizer.lr=inf", finished={0: run(0), 2: run(2)},
                                 failed={3: "third", 1: "first"})
    assert console.failure_line(group) == (
        "optimizer.lr=inf, group g1, seeds 1,3 FAILED (2 of 4): first")
    assert console.failure_line(console.GroupOutcome("g2", failed={0: "why"})) == (
        "group g2, seed 0 FAILED: why")
    assert console.failure_line(console.GroupOutcome("g3", finished={0: run(0)})) is None


def test_the_where_line_names_the_run_or_the_sweep_the_store_and_the_ui():
    assert console.where_line("irrepro", "sqlite:////s/mlflow.db", run_id="abc") == (
        "run abc in experiment irrepro at sqlite:////s/mlflow.db")
    assert console.where_line("irrepro", "http://h:5000", "http://h:5000/#/x") == (
        "runs in experiment irrepro at http://h:5000: http://h:5000/#/x")
    assert console.where_line("e", "sqlite:////s.db", sweep=("s1", "p1")) == (
        "sweep s1, parent run p1, experiment e at sqlite:////s.db")


def test_labels_are_the_overrides_that_differ_between_groups():
    labels = console.varying_overrides({
        "a": ["data.dim=8", "activation=relu", "optimizer.lr=0.1"],
        "b": ["data.dim=8", "activation=smelu", "optimizer.lr=0.1"],
        "c": ["data.dim=8", "activation=relu", "optimizer.lr=1"]})
    assert labels == {"a": "activation=relu optimizer.lr=0.1",
                      "b": "activation=smelu optimizer.lr=0.1",
                      "c": "activation=relu optimizer.lr=1"}
    assert console.varying_overrides({"a": ["data.dim=8"]}) == {"a": ""}


def test_analysis_lines_give_pd_with_its_interval_and_the_files_by_folder():
    summary = pd.DataFrame([
        {"group_key": "k1", "activation.name": "relu", "activation.beta": 1.0, "pd": 0.1234,
         "pd_low": 0.1, "pd_high": 0.15, "churn": 0.05, "converged": True, "n_runs": 10},
        {"group_key": "k2", "activation.name": "smelu", "activation.beta": 0.5, "pd": 0.01,
         "pd_low": np.nan, "pd_high": np.nan, "churn": 0.002, "converged": np.nan, "n_runs": 2},
        {"group_key": "k3", "activation.name": "gelu", "activation.beta": 1.0, "pd": np.nan,
         "pd_low": np.nan, "pd_high": np.nan, "churn": np.nan, "converged": False, "n_runs": 1},
    ])
    written = [Path("reports/s/summary.csv"), Path("reports/s/summary.md"),
               Path("figures/s/tradeoff.png")]
    assert console.analysis_lines(summary, ["activation.name", "activation.beta"], written,
                                  "http://h/#/experiments/1/runs/r") == [
        "activation.name=relu, activation.beta=1, group k1: PD 0.123 [0.1, 0.15], churn 0.05, "
        "converged yes, 10 runs",
        "activation.name=smelu, activation.beta=0.5, group k2: PD 0.01 [n/a: < 3 seeds], "
        "churn 0.002, converged ?, 2 runs",
        "activation.name=gelu, activation.beta=1, group k3: PD n/a, converged no, 1 run",
        "reports/s/: summary.csv summary.md",
        "figures/s/: tradeoff.png",
        "analysis run: http://h/#/experiments/1/runs/r",
    ]
    assert console.analysis_lines(summary[:1], [], [])[0].startswith("group k1: PD 0.123")


def test_a_job_of_a_sweep_records_itself_on_the_parent_unless_too_long(caplog):
    tagged = []
    tracker = SimpleNamespace(set_tags=lambda run_id, tags: tagged.append((run_id, tags)))
    summary = SimpleNamespace(group_key="g1", skipped=[0, 1, 2, 5])
    job = SimpleNamespace(job=SimpleNamespace(num=3), overrides=SimpleNamespace(task=[
        "data.dim=8", "activation=relu", "seed=0", "seeds=[0,1,2,5,6]",
        "++optuna.trial=4", "++optuna.study=tune"]))
    hydra_app.record_job(tracker, "parent", job, summary)
    [(parent, tags)] = tagged
    assert parent == "parent" and list(tags) == ["irrepro.job.3"]
    assert json.loads(tags["irrepro.job.3"]) == {
        "group": "g1", "overrides": ["data.dim=8", "activation=relu"]}
    job.overrides.task = [f"data.path={'x' * hydra_app.TAG_LIMIT}"]
    hydra_app.record_job(tracker, "parent", job, summary)
    assert len(tagged) == 1 and "too long to record" in caplog.text


NETS = textwrap.dedent("""
    import torch
    from torch import nn

    class Scaled(nn.Module):
        def __init__(self, in_features, out_features, train_scale=1.0, test_scale=1.0):
            super().__init__()
            self.linear = nn.Linear(in_features, out_features)
            self.train_scale, self.test_scale = train_scale, test_scale

        def forward(self, x):
            return self.linear(x) * (self.train_scale if self.training else self.test_scale)
""")


@pytest.fixture
def train(tmp_path, monkeypatch):
    """train.py's task function in this process, on tiny data and a store in `tmp_path`."""
    (tmp_path / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    register_configs()
    uri = store_uri(tmp_path)

    def train(*overrides):
        args = [*TINY_ARGS, "train.progress=false", f"tracking.uri={uri}", *overrides]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            config = compose(config_name="config", overrides=args, return_hydra_config=True)
            HydraConfig.instance().set_config(config)
            return train_from_hydra(config)

    return train


def test_a_run_prints_its_results_and_where_it_is(train, tmp_path, capsys):
    summary = train("seed=0")
    out = capsys.readouterr().out.splitlines()
    [run_id] = summary.finished.values()
    stored = Tracker(store_uri(tmp_path), "irrepro").client.get_run(run_id).data.metrics
    assert out == [
        f"group {summary.group_key}, seed 0: accuracy {stored['accuracy']:.4g}, "
        f"excess log loss {stored['excess_log_loss']:.4g}, converged "
        f"{stored['converged']:.0f}/1",
        f"run {run_id} in experiment irrepro at {store_uri(tmp_path)}",
    ]
    again = train("seed=0", "replicas=2")
    line = capsys.readouterr().out.splitlines()[0]
    assert again.skipped == [0] and sorted(again.finished) == [1]
    assert line.startswith(f"group {summary.group_key}, seeds 0,1 (1 already FINISHED): "
                           "accuracy ") and " ± " in line


@pytest.mark.parametrize("overrides, reason", [
    (["optimizer.lr=1e12"], "training loss diverged (nan) by step 4"),
    (["model=module", "model.target=nets.Scaled", "+model.kwargs.train_scale=nan"],
     "training loss diverged (nan) by step 4"),
    (["model=module", "model.target=nets.Scaled", "+model.kwargs.test_scale=nan"],
     "test predictions are not finite"),
])
def test_a_run_that_fails_exits_1_naming_its_group_seeds_and_reason(train, capsys, overrides,
                                                                   reason):
    with pytest.raises(SystemExit) as exit_status:
        train("replicas=2", *overrides)
    assert exit_status.value.code == hydra_app.FAILED_STATUS == 1
    printed = capsys.readouterr()
    assert printed.out.startswith("runs in experiment irrepro at sqlite:///")
    [error] = printed.err.splitlines()
    assert error.startswith("train.py: error: group ")
    assert error.endswith(f", seeds 0,1 FAILED: {reason}")
