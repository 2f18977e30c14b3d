"""Tests of the ``irrepro_optuna`` Hydra sweeper (hydra_plugins/irrepro_optuna_sweeper)."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.irrepro_optuna_sweeper._impl import to_distribution

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "optuna_app" / "app.py"
WEIGHTS = {"a": 1.0, "b": 2.0}  # tests/optuna_app/conf/kind/*.yaml


def expected_values(params: dict) -> list[float]:
    """The two objectives tests/optuna_app/app.py computes from a trial's params."""
    x, n, kind = params["x"], params["n"], params["kind"]
    return [(x - 0.3) ** 2 + WEIGHTS[kind] * n, x * n]


def run_app(tmp_path: Path, *overrides: str, sweep_dir: str = "multirun"):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        str(APP),
        "-m",
        f"hydra.sweep.dir={tmp_path / sweep_dir}",
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        *overrides,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def load_trials(tmp_path: Path, study_name: str = "irrepro") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=storage_url(tmp_path)).trials


def total_trials_in_storage(tmp_path: Path) -> int:
    return sum(s.n_trials for s in optuna.get_all_study_summaries(storage_url(tmp_path)))


def test_multi_objective_nsga2_then_resume(tmp_path):
    proc = run_app(tmp_path, "hydra.sweeper.sampler._target_=optuna.samplers.NSGAIISampler")
    assert proc.returncode == 0, proc.stderr
    trials = load_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    for t in trials:
        assert t.values == pytest.approx(expected_values(t.params), rel=1e-12)
        overrides = OmegaConf.load(tmp_path / "multirun" / str(t.number) / ".hydra/overrides.yaml")
        assert f"++optuna.trial={t.number}" in overrides
    results = OmegaConf.load(tmp_path / "multirun" / "optimization_results.yaml")
    assert results.directions == ["minimize", "maximize"]
    assert 1 <= len(results.best_trials) <= 6
    for best in results.best_trials:
        assert list(best["values"]) == trials[best.number].values

    proc = run_app(
        tmp_path,
        "hydra.sweeper.sampler._target_=optuna.samplers.NSGAIISampler",
        "hydra.sweeper.n_trials=3",
        sweep_dir="resumed",
    )
    assert proc.returncode == 0, proc.stderr
    resumed = load_trials(tmp_path)
    assert [t.number for t in resumed] == list(range(9))
    assert all(t.state == TrialState.COMPLETE for t in resumed)
    assert [t.values for t in resumed[:6]] == [t.values for t in trials]


def test_single_objective_tpe(tmp_path):
    proc = run_app(
        tmp_path,
        "objectives=1",
        "hydra.sweeper.direction=minimize",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.n_jobs=3",
    )
    assert proc.returncode == 0, proc.stderr
    trials = load_trials(tmp_path)
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.values == pytest.approx(expected_values(t.params)[:1], rel=1e-12)
    results = OmegaConf.load(tmp_path / "multirun" / "optimization_results.yaml")
    assert results.best_trials[0]["values"][0] == min(t.values[0] for t in trials)


def test_reversed_interval_fails_before_any_trial(tmp_path):
    proc = run_app(tmp_path, "x=interval(1.0, 0.1)")
    assert proc.returncode != 0
    assert "Param 'x': low > high (1.0 > 0.1)" in proc.stderr
    assert total_trials_in_storage(tmp_path) == 0


def test_unknown_group_choice_fails_before_any_trial(tmp_path):
    proc = run_app(tmp_path, "kind=choice(a, zzz)")
    assert proc.returncode != 0
    assert "Param 'kind': ['zzz'] not in config group 'kind'" in proc.stderr
    assert "available options: ['a', 'b']" in proc.stderr
    assert total_trials_in_storage(tmp_path) == 0


def test_failing_trials_are_recorded_as_fail(tmp_path):
    proc = run_app(tmp_path, "fail_on=b", "hydra.sweeper.max_failure_rate=1.0")
    assert proc.returncode == 0, proc.stderr
    trials = load_trials(tmp_path)
    assert len(trials) == 6
    for t in trials:
        expected = TrialState.FAIL if t.params["kind"] == "b" else TrialState.COMPLETE
        assert t.state == expected
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.COMPLETE}


def test_failure_rate_exceeded_aborts(tmp_path):
    proc = run_app(tmp_path, "fail_on=b", "kind=b")  # default max_failure_rate=0.0
    assert proc.returncode != 0
    assert "above max_failure_rate=0.0" in proc.stderr
    assert [t.state for t in load_trials(tmp_path)] == [TrialState.FAIL] * 2


def test_failure_rate_counts_over_the_whole_study(tmp_path):
    # one trial at a time: a quarter of 8 trials may fail, the third failure stops the study
    proc = run_app(tmp_path, "fail_on=b", "kind=b", "hydra.sweeper.n_jobs=1",
                   "hydra.sweeper.n_trials=8", "hydra.sweeper.max_failure_rate=0.25")
    assert proc.returncode != 0
    assert "3 of 8 trials failed" in proc.stderr
    assert [t.state for t in load_trials(tmp_path)] == [TrialState.FAIL] * 3


def parse(line: str, config_loader=None):
    return OverridesParser.create(config_loader=config_loader).parse_overrides([line])[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("p=choice(relu, smelu)", CategoricalDistribution(["relu", "smelu"])),
        ("p=interval(0.01, 1.0)", FloatDistribution(0.01, 1.0)),
        ("p=tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("p=range(1, 4)", IntDistribution(1, 4)),  # stop is included
        ("p=range(2, 10, 4)", IntDistribution(2, 10, step=4)),
        ("p=tag(log, range(1, 64))", IntDistribution(1, 64, log=True)),
        ("p=range(0.0, 1.0, 0.25)", FloatDistribution(0.0, 1.0, step=0.25)),
    ],
)
def test_to_distribution(line, expected):
    assert to_distribution(parse(line)) == expected


class _GroupLoader:
    """Stands in for Hydra's config loader when expanding ``glob(...)``."""

    def get_group_options(self, group, results_filter=None):
        return ["a", "b"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lr=interval(1.0, 0.1)", "Param 'lr': low > high"),
        ("n=range(5, 1)", "Param 'n': low > high"),
        ("lr=tag(log, interval(0.0, 1.0))", "Param 'lr': log scale needs bounds > 0"),
        ("lr=tag(foo, interval(0.1, 1.0))", "Param 'lr': unsupported tag(s) ['foo']"),
        ("act=tag(log, choice(a, b))", "Param 'act': unsupported sweep"),
        ("n=tag(log, range(1, 9, 2))", "Param 'n': Samplers and other components"),
        ("kind=glob(zz*)", "Param 'kind': empty choice"),
    ],
)
def test_invalid_search_space_names_the_key(line, message):
    with pytest.raises(ValueError) as info:
        to_distribution(parse(line, _GroupLoader()))
    assert message in str(info.value)


def test_the_plugin_scan_does_not_import_optuna():
    """Hydra imports every plugin module when it scans them, for every run: Optuna waits
    until a sweep uses the sweeper."""
    scan = (
        "import sys\n"
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "names = [plugin.__name__ for plugin in Plugins.instance().discover(Sweeper)]\n"
        "assert 'OptunaSweeper' in names, names\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'optuna'))\n"
    )
    result = subprocess.run([sys.executable, "-c", scan], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
