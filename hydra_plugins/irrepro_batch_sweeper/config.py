"""Structured config of the ``irrepro_batch`` sweeper, registered in Hydra's ConfigStore.

Hydra imports every module under ``hydra_plugins`` while discovering plugins, so the
registration below runs before any config is composed.
"""

from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeperConf
from hydra.core.config_store import ConfigStore


@dataclass
class BatchSweeperConf(BasicSweeperConf):
    """Options of :class:`~hydra_plugins.irrepro_batch_sweeper.sweeper.BatchSweeper`: those of
    Hydra's basic sweeper (``max_batch_size``, ``params``), and ``max_replicas``, the most
    seeds one job trains (``null``: no limit)."""

    _target_: str = "hydra_plugins.irrepro_batch_sweeper.sweeper.BatchSweeper"
    max_replicas: int | None = 32


ConfigStore.instance().store(
    group="hydra/sweeper", name="irrepro_batch", node=BatchSweeperConf, provider="irrepro"
)

# The default sweeper of a config that lists `batch_seed_sweeps` in its defaults. An
# `override hydra/sweeper` in the primary config itself would win over an experiment's own
# (Hydra keeps the first override it meets, and meets the primary's first); this child is
# expanded after the experiments appended behind it, so theirs wins, and the command line's
# wins over both.
ConfigStore.instance().store(
    name="batch_seed_sweeps",
    node={"defaults": [{"override /hydra/sweeper": "irrepro_batch"}]},
    provider="irrepro",
)
