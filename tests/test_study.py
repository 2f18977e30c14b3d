"""The analysis stage end to end: real sweeps through train.py -m, analyze.py, make figures."""

import subprocess

import pandas as pd
import pytest

from tests.cli import ROOT, analyze_in_process, run_script, runs, train


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("study")
    train(["-m", "model=logistic,two_units", "randomness=none,init,shuffle,perturb",
           "randomness.window=16", "replicas=3", "activation=relu", "train.passes=2",
           "data.n_train=4096", "data.n_test=512"], cwd)
    run_script("analyze.py", ["--tracking-uri", f"sqlite:///{cwd}/mlflow.db"], cwd)
    return pd.read_csv(cwd / "reports" / "irrepro" / "summary.csv"), cwd


def pd_of(frame, model, randomness):
    row = frame[(frame["model.name"] == model) & (frame["randomness.name"] == randomness)]
    assert len(row) == 1
    return row["pd"].item()


def test_without_randomness_pd_is_exactly_zero(summary):
    frame, _ = summary
    assert pd_of(frame, "logistic", "none") == 0.0
    assert pd_of(frame, "two_units", "none") == 0.0


@pytest.mark.parametrize("source", ["init", "shuffle", "perturb"])
def test_each_source_alone_gives_positive_pd(summary, source):
    frame, _ = summary
    assert pd_of(frame, "two_units", source) > 0


def test_the_linear_model_is_more_reproducible_than_two_relu_units(summary):
    frame, _ = summary
    assert pd_of(frame, "logistic", "shuffle") < pd_of(frame, "two_units", "shuffle")


def test_reports_figures_and_the_analysis_run(summary):
    frame, cwd = summary
    assert len(frame) == 8 and (frame["n_runs"] == 3).all()
    assert (frame["pd_low"] <= frame["pd"]).all() and (frame["pd"] <= frame["pd_high"]).all()
    assert "| logistic |" in (cwd / "reports" / "irrepro" / "summary.md").read_text()
    assert (cwd / "figures" / "irrepro" / "tradeoff.png").stat().st_size > 1000
    assert analyze_in_process(cwd, "--tracking-uri", f"sqlite:///{cwd}/mlflow.db") == 0
    analyses = [r for r in runs(cwd) if "irrepro.analysis" in r.data.tags]
    assert len(analyses) == 1  # a re-run replaces the analysis run


def test_make_figures_at_tiny_scale_and_resume(tmp_path):
    from tests.test_studies import PROMISED

    make = ["make", "-s", "-C", str(ROOT), "figures", "SCALE=tiny", "STUDIES=sources",
            f"STORE=sqlite:///{tmp_path}/mlflow.db", f"REPORTS={tmp_path}/reports",
            f"FIGURES={tmp_path}/figures", f"TRAIN_ARGS=hydra.sweep.dir={tmp_path}/multirun"]
    first = subprocess.run(make, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "reports" / "sources_tiny" / "by_step.csv").exists()
    drawn = {p.stem for p in (tmp_path / "figures" / "sources_tiny").glob("*.png")}
    assert drawn == PROMISED["sources"]
    trained = runs(tmp_path, "sources_tiny", "tags.seed LIKE '%'")
    assert len(trained) == 12 * 4 and all(r.info.status == "FINISHED" for r in trained)
    second = subprocess.run(make, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    again = runs(tmp_path, "sources_tiny", "tags.seed LIKE '%'")
    assert {r.info.run_id for r in again} == {r.info.run_id for r in trained}  # none retrained
    assert len(runs(tmp_path, "sources_tiny", "tags.`irrepro.analysis` LIKE '%'")) == 1
