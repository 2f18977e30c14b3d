"""The work of the ``irrepro_optuna`` sweeper: an Optuna study run through the public
ask/tell API. Hydra's plugin scan skips modules whose names start with ``_``, so Optuna is
imported only when a sweep uses this sweeper.

Search space: each sweep override becomes an Optuna distribution (see ``to_distribution``);
non-sweep overrides are passed unchanged to every trial. Each trial also gets
``++optuna.trial=<number>`` and ``++optuna.study=<study name>``, so a task can read
``cfg.optuna.trial`` (``++`` adds the key, so apps without an ``optuna`` node still work).
"""

import logging
import math
import numbers
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

log = logging.getLogger(__name__)


def to_distribution(override: Override) -> BaseDistribution:
    """Map a parsed sweep override to an Optuna distribution, rejecting invalid spaces.

    ``choice``/``glob`` -> categorical; ``interval(lo, hi)`` -> float (Hydra always parses
    interval bounds as floats); ``range(lo, hi[, step])`` -> int, or float with ``step`` if any
    bound is a float, with ``hi`` INCLUDED (unlike Hydra's basic sweeper); ``tag(log, ...)``
    makes an interval or range log-scaled.
    """
    key, value = override.get_key_element(), override.value()
    tags = set(getattr(value, "tags", ()))
    if tags - {"log"}:
        raise ValueError(f"Param '{key}': unsupported tag(s) {sorted(tags - {'log'})}")
    log_scale = "log" in tags
    if override.is_choice_sweep() and not log_scale:
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise ValueError(f"Param '{key}': empty choice")
        return CategoricalDistribution(choices)
    if override.is_interval_sweep():
        low, high, step = value.start, value.end, None
    elif override.is_range_sweep():
        low, high, step = value.start, value.stop, value.step
    else:
        raise ValueError(f"Param '{key}': unsupported sweep '{override.input_line}'")
    if low > high:
        raise ValueError(f"Param '{key}': low > high ({low} > {high})")
    if log_scale and low <= 0:
        raise ValueError(f"Param '{key}': log scale needs bounds > 0, got low={low}")
    try:
        if all(isinstance(v, int) for v in (low, high, step)):
            return IntDistribution(low, high, log=log_scale, step=step)
        return FloatDistribution(low, high, log=log_scale, step=step)
    except ValueError as e:
        raise ValueError(f"Param '{key}': {e}") from e


def objective_values(value: Any, n_objectives: int) -> list[float]:
    """Turn a task's return value (a number or a sequence of numbers) into Optuna values."""
    values = [value] if isinstance(value, numbers.Real) else list(value)
    if len(values) != n_objectives or not all(isinstance(v, numbers.Real) for v in values):
        raise ValueError(f"expected {n_objectives} number(s), got {value!r}")
    if any(math.isnan(v) for v in values):
        raise ValueError(f"NaN objective in {value!r}")
    return [float(v) for v in values]


class OptunaSweeperImpl(Sweeper):
    """Ask ``n_jobs`` trials at a time, launch them, and tell their results to the study."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: dict[str, str],
    ) -> None:
        self.directions = [direction] if isinstance(direction, str) else list(direction)
        if not self.directions or set(self.directions) - {"minimize", "maximize"}:
            raise ValueError(f"direction must be 'minimize'/'maximize' or a list, got {direction}")
        if n_trials < 1 or n_jobs < 1 or not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError("need n_trials >= 1, n_jobs >= 1 and 0 <= max_failure_rate <= 1")
        self.sampler = instantiate(sampler)
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = dict(params)
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.config_loader = hydra_context.config_loader
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _check_group_choices(self, key: str, group: str, choices: tuple[Any, ...]) -> None:
        """If ``group`` is a config group, every choice must be one of its options."""
        options = self.config_loader.get_group_options(group)
        bad = [c for c in choices if str(c) not in options]
        if options and bad:
            raise ValueError(
                f"Param '{key}': {bad} not in config group '{group}'; available options: {options}"
            )

    def _search_space(self, arguments: list[str]) -> tuple[list[str], dict[str, Any]]:
        """Split ``params`` + command line into fixed overrides and a validated search space."""
        parser = OverridesParser.create(config_loader=self.config_loader)
        lines = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        fixed: dict[str, str] = {}
        space: dict[str, BaseDistribution] = {}
        for override in parser.parse_overrides(lines):  # later overrides win
            key = override.get_key_element()
            fixed.pop(key, None)
            space.pop(key, None)
            if not override.is_sweep_override():
                fixed[key] = override.input_line
                continue
            space[key] = to_distribution(override)
            if isinstance(space[key], CategoricalDistribution):
                self._check_group_choices(key, override.key_or_group, space[key].choices)
        return list(fixed.values()), space

    def sweep(self, arguments: list[str]) -> optuna.Study:
        """Run ``n_trials`` new trials, then write ``optimization_results.yaml``."""
        fixed, space = self._search_space(arguments)  # validate before touching storage
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            directions=self.directions,
            load_if_exists=True,
        )
        done = 0
        failures = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [
                fixed
                + [f"{k}={v}" for k, v in t.params.items()]
                + [f"++optuna.trial={t.number}", f"++optuna.study={study.study_name}"]
                for t in trials
            ]
            try:
                results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            except BaseException:
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            for trial, ret in zip(trials, results, strict=True):
                try:
                    study.tell(trial, objective_values(ret.return_value, len(self.directions)))
                except Exception as e:
                    log.warning(f"Trial {trial.number} failed: {e!r}")
                    study.tell(trial, state=TrialState.FAIL)
                    failures += 1
            # The rate is of the whole invocation: up to max_failure_rate * n_trials may fail.
            if failures > self.max_failure_rate * self.n_trials:
                raise RuntimeError(
                    f"{failures} of {self.n_trials} trials failed, "
                    f"above max_failure_rate={self.max_failure_rate}"
                )
            self.job_idx += len(trials)
            done += len(trials)
        best = [
            {"number": t.number, "params": t.params, "values": t.values} for t in study.best_trials
        ]
        log.info(f"Best trial(s) of study '{study.study_name}': {best}")
        results_yaml = {
            "name": study.study_name,
            "directions": self.directions,
            "best_trials": best,
        }
        OmegaConf.save(OmegaConf.create(results_yaml), sweep_dir / "optimization_results.yaml")
        return study
