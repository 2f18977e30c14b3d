"""Reproducibility-aware tuning through the Optuna sweeper, end to end on tiny data."""

from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest

from irrepro import metrics, tuning
from irrepro.config import flatten, group_key, run_params
from tests.cli import client, run_script, runs, train
from tests.conftest import make_config

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


def test_the_front_leaves_blank_the_params_a_trial_s_options_ignore(tmp_path):
    """Two trials, ReLU and SmeLU, both searched over SmeLU's beta: ReLU's beta is blank."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="tune", storage=storage,
                                directions=["minimize", "minimize"])
    space = {"activation": optuna.distributions.CategoricalDistribution(["relu", "smelu"]),
             "activation.beta": optuna.distributions.FloatDistribution(0.1, 4.0, log=True)}
    logged, rows = [], []
    for trial, (activation, objectives) in enumerate((("relu", [0.1, 0.02]),
                                                      ("smelu", [0.2, 0.01]))):
        study.add_trial(optuna.trial.create_trial(
            params={"activation": activation, "activation.beta": 0.5}, distributions=space,
            values=objectives))
        config = make_config(**{"activation.name": activation, "activation.beta": 0.5})
        params = {key: str(value) for key, value in flatten(run_params(config)).items()}
        tags = {"group_key": group_key(config), "optuna.trial": str(trial)}
        logged.append(SimpleNamespace(data=SimpleNamespace(tags=tags, params=params)))
        rows.append({"group_key": group_key(config), "activation.name": activation,
                     "pd_low": 0.01 * (trial + 1), "pd_high": 0.03 * (trial + 1)})
    tracker = SimpleNamespace(search=lambda filter_string: logged)  # the runs, as MLflow's
    groups = tuning.trial_groups(tracker, pd.DataFrame(rows))
    tuning.pareto_report(storage, "tune", tmp_path / "reports", tmp_path / "figures", groups)
    front = pd.read_csv(tmp_path / "reports" / "tune" / "pareto.csv").set_index("activation")
    assert np.isnan(front.loc["relu", "activation.beta"])
    assert front.loc["smelu", "activation.beta"] == 0.5
    assert tuple(front.loc["smelu", ["pd_low", "pd_high"]]) == (0.02, 0.06)
    table = (tmp_path / "reports" / "tune" / "pareto.md").read_text()
    assert "| relu |  |" in table and "| smelu | 0.5 |" in table


def test_a_study_on_data_without_a_teacher_names_its_loss_objective_log_loss(tmp_path,
                                                                            monkeypatch):
    """Without a teacher the first objective is the plain log loss, and says so: in the
    trials' columns and on the Pareto figure's axis."""
    from matplotlib.figure import Figure

    from irrepro import figures
    from irrepro.tuning import TrialGroup, objective_names

    def group(excess):
        return {0: TrialGroup(pd.Series({"log_loss_mean": 0.3, "excess_log_loss_mean": excess,
                                         "pd": 0.01}), ())}

    assert objective_names(group(np.nan)) == ("log_loss", "pd")
    assert objective_names(group(0.02)) == ("excess_log_loss", "pd")
    labels, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: (
        labels.append(fig.axes[0].get_xlabel()), save(fig, *args, **kwargs)))
    for loss, label in (("log_loss", "log loss"),
                        ("excess_log_loss", "excess log loss over the teacher")):
        trials = pd.DataFrame({"trial": [0, 1], loss: [0.3, 0.2], "pd": [0.01, 0.02],
                               "pareto": [True, True]})
        figures.pareto(trials, tmp_path / f"{loss}.png")
        assert labels[-1] == f"{label} (nats, symlog scale)"
