"""Every study of `make figures` writes the figures its kind promises.

Each study's real config (conf/experiment/<study>.yaml at the tiny scale) is trained and
analyzed in this process on a corner of its sweep grid: the first two values of every axis
(three shuffle windows, so that PD can be drawn against the window; every mitigation).
"""

import itertools

import pytest
from hydra import compose, initialize_config_dir

from irrepro.config import register_configs, to_config
from irrepro.job import run_job
from irrepro.report import analyze
from irrepro.tracking import Tracker
from tests.cli import ROOT, store_uri

EVERY_STUDY = {"pd_by_activation", "pd_over_training", "tradeoff", "ensemble_pd",
               "pd_by_teacher_probability"}
PROMISED = {
    "single_units": EVERY_STUDY | {"pd_by_size"},
    "shuffle_window": EVERY_STUDY | {"pd_by_window"},
    "depth_width": EVERY_STUDY | {"pd_by_size"},
    "embeddings": EVERY_STUDY,
    "quadratic": EVERY_STUDY | {"pd_by_size"},
    "perturb": EVERY_STUDY | {"pd_by_size"},
    "mitigations": EVERY_STUDY | {"pd_by_size", "pd_vs_loss", "pd_reduction"},
    "fork": EVERY_STUDY | {"pd_by_size", "pd_by_fork_step"},
    "sources": EVERY_STUDY,
}
# Axes kept whole: every mitigation's arm (one model at the tiny scale trains them in seconds).
WHOLE_AXES = ("+mitigation_arm",)


def corner_of_grid(study: str) -> list[list[str]]:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        base = compose("config", [f"+experiment={study}"], return_hydra_config=True)
    axes = []
    for key, values in base.hydra.sweeper.params.items():
        keep = 3 if key == "randomness.window" else None if key in WHOLE_AXES else 2
        axes.append([f"{key}={value.strip()}" for value in str(values).split(",")][:keep])
    return [list(point) for point in itertools.product(*axes)]


def test_the_studies_are_the_ones_make_figures_runs():
    makefile = (ROOT / "Makefile").read_text()
    line = next(ln for ln in makefile.splitlines() if ln.startswith("STUDIES ?="))
    assert set(line.split("=", 1)[1].split()) == set(PROMISED)


@pytest.mark.parametrize("study", sorted(PROMISED))
def test_each_study_writes_the_figures_its_kind_promises(study, tmp_path):
    register_configs()
    tracker = Tracker(store_uri(tmp_path), study)
    for point in corner_of_grid(study):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            config = to_config(compose(
                "config", [f"+experiment={study}", "+scale=tiny", "train.progress=false",
                           *point]))
        assert config.train.checkpoints >= 2
        summary = run_job(config, tracker)
        assert not summary.failed
    analyze(tracker, study, tmp_path / "reports", tmp_path / "figures", log_run=False)
    drawn = {path.stem for path in (tmp_path / "figures" / study).glob("*.png")}
    assert drawn == PROMISED[study]
    assert (tmp_path / "reports" / study / "by_step.csv").exists()
    assert (tmp_path / "reports" / study / "mitigations.md").exists() == (study == "mitigations")
