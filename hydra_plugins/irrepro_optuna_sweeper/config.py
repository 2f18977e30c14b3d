"""Structured config of the ``irrepro_optuna`` sweeper, registered in Hydra's ConfigStore.

Hydra imports every module under ``hydra_plugins`` while discovering plugins, so the
registration below runs before any config is composed.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    """Options of :class:`~hydra_plugins.irrepro_optuna_sweeper.sweeper.OptunaSweeper`.

    ``sampler`` is a ``_target_`` dict instantiated by the sweeper itself (hence
    ``_recursive_: false``); ``direction`` is ``minimize``/``maximize`` or a list of them
    (multi-objective); ``n_trials`` counts the trials of this invocation only, also when a
    persistent ``storage`` resumes an existing study; ``n_jobs`` is the batch size handed to
    the launcher; ``params`` maps a config key to a Hydra sweep string such as
    ``choice(a, b)``, ``interval(0.0, 1.0)``, ``tag(log, interval(1e-4, 1e-1))`` or
    ``range(1, 4)`` (stop included).
    """

    _target_: str = "hydra_plugins.irrepro_optuna_sweeper.sweeper.OptunaSweeper"
    _recursive_: bool = False
    sampler: dict[str, Any] = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0}
    )
    direction: Any = "minimize"
    storage: str | None = None
    study_name: str = "irrepro"
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="irrepro_optuna", node=OptunaSweeperConf, provider="irrepro"
)
