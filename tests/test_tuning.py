"""Reproducibility-aware tuning through the Optuna sweeper, end to end on tiny data."""

import numpy as np
import optuna
import pandas as pd
import pytest

from irrepro import metrics
from tests.cli import client, run_script, runs, train

TUNE = ["-m", "+experiment=tune", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
        "replicas=3", "hydra.sweeper.sampler.population_size=2"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("tune")
    storage = f"sqlite:///{cwd}/optuna.db"
    train([*TUNE, f"hydra.sweeper.storage={storage}"], cwd)
    run_script("analyze.py", ["--experiment", "tune", "--tracking-uri",
                              f"sqlite:///{cwd}/mlflow.db", "--optuna-study", "tune",
                              "--optuna-storage", storage], cwd)
    return cwd, optuna.load_study(study_name="tune", storage=storage)


def test_trials_land_in_the_optuna_storage_and_in_mlflow(tuned):
    cwd, study = tuned
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    logged = {r.data.tags.get("optuna.trial") for r in runs(cwd, "tune")} - {None}
    assert logged == {str(t.number) for t in complete}


def test_objectives_equal_what_the_analysis_computes_from_the_same_runs(tuned):
    cwd, study = tuned
    summary = pd.read_csv(cwd / "reports" / "tune" / "summary.csv").set_index("group_key")
    trials = pd.read_csv(cwd / "reports" / "tune" / "trials.csv").set_index("trial")
    for trial in study.trials:
        trial_runs = [r for r in runs(cwd, "tune")
                      if r.data.tags.get("optuna.trial") == str(trial.number)]
        row = summary.loc[trial_runs[0].data.tags["group_key"]]
        assert trial.values[0] == pytest.approx(row["excess_log_loss_mean"], rel=1e-9)
        assert trial.values[1] == pytest.approx(row["pd"], rel=1e-9)
        listed = trials.loc[trial.number]
        assert (listed["pd_low"], listed["pd_high"]) == pytest.approx(
            (row["pd_low"], row["pd_high"]), rel=1e-12)
        assert listed["pd_low"] < trial.values[1] < listed["pd_high"]
        # and both from first principles: the runs' predictions and logged metrics
        predictions = np.stack([
            np.load(client(cwd).download_artifacts(r.info.run_id, "predictions.npy", str(cwd)))
            for r in trial_runs
        ])
        assert trial.values[1] == pytest.approx(metrics.pd_l1_naive(predictions), rel=1e-9)
        excess = np.mean([r.data.metrics["excess_log_loss"] for r in trial_runs])
        assert trial.values[0] == pytest.approx(excess, rel=1e-9)


def test_the_pareto_front_is_written(tuned):
    cwd, study = tuned
    front = pd.read_csv(cwd / "reports" / "tune" / "pareto.csv")
    best = {tuple(t.values) for t in study.best_trials}
    assert set(zip(front["excess_log_loss"], front["pd"], strict=True)) == best
    assert set(front["trial"]) <= {t.number for t in study.best_trials}
    assert (cwd / "figures" / "tune" / "pareto.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "override, words",
    [("optimizer.lr=tag(log, interval(0.3, 0.001))",
      ["optimizer.lr", "low"]),
     ("activation=choice(relu, relu7)", ["activation", "relu7"])],
)
def test_a_bad_search_space_fails_before_the_first_trial(tmp_path, override, words):
    result = train([*TUNE, f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", override],
                   tmp_path, check=False)
    assert result.returncode != 0
    assert all(word in result.stderr for word in words), result.stderr[-2000:]
    assert not [r for r in runs(tmp_path, "tune") if "group_key" in r.data.tags]  # no trial ran
