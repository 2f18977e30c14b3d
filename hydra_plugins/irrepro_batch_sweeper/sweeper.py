"""Hydra's basic sweeper, with the seed axis of a multirun trained as replica jobs.

``train.py -m activation=relu,smelu seed=range(10)`` expands the other axes exactly as the
basic sweeper does (it is the basic sweeper), then gives each of their configurations jobs
of several seeds (``seeds=[...]``) instead of one job per seed: as many per configuration
as it takes to give every worker of the launcher a job, none above ``max_replicas`` seeds
(see :mod:`~hydra_plugins.irrepro_batch_sweeper.plan`). Without a seed axis it is the
basic sweeper. Either way, the launcher composes each job, and before it launches them the
sweeper composes each configuration at most once (the basic sweeper composes every job, in
series): a seed sweep each configuration, to read its `replicas`; any other sweep only the
jobs that bring a swept value no earlier job had.
"""

import logging
from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override

from hydra_plugins.irrepro_batch_sweeper.plan import (
    SEED_KEY,
    SeedSweepError,
    covering_jobs,
    plan_jobs,
    seed_sweep,
    seed_values,
    worker_count,
)

log = logging.getLogger(__name__)


class BatchSweeper(BasicSweeper):
    """Hydra's :class:`BasicSweeper` that trains the seeds of a seed sweep in replica jobs."""

    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        max_replicas: int | None = 32,
    ) -> None:
        super().__init__(max_batch_size, params)
        if max_replicas is not None and max_replicas < 1:
            raise SeedSweepError(f"hydra.sweeper.max_replicas={max_replicas} must be >= 1")
        self.max_replicas = max_replicas
        self.swept: set[str] = set()
        self.composed_in_planning = False  # a seed sweep composes each configuration to plan

    def split_arguments(  # the basic sweeper's static method, here needing the config
        self, overrides: Sequence[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        """The batches of job overrides: the basic sweeper's, unless `seed` is swept."""
        self.swept = {override.get_key_element() for override in overrides
                      if override.is_sweep_override() and override.get_key_element() != SEED_KEY}
        seed = seed_sweep(overrides)
        if seed is None:
            return BasicSweeper.split_arguments(list(overrides), max_batch_size)
        others = [override for override in overrides if override.get_key_element() != SEED_KEY]
        configs = BasicSweeper.split_arguments(others, None)[0]
        self.composed_in_planning = True
        workers = worker_count(self.config.hydra.launcher)
        jobs = plan_jobs(
            configs, seed_values(seed), [self._replicas(config) for config in configs],
            workers, self.max_replicas,
        )
        log.info(
            "seed sweep: %d configurations as %d replica jobs (workers=%d, max_replicas=%s)",
            len(configs), len(jobs), workers, self.max_replicas,
        )
        if max_batch_size is None:
            return [jobs]
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose the jobs of the batch that bring a swept value no earlier job had, so that a
        value that does not compose stops the sweep before it launches; a value that fails
        only beside another fails its job. A seed sweep's plan composed every configuration
        already (its jobs add seeds only)."""
        if self.composed_in_planning:
            return
        loader = self.hydra_context.config_loader
        for job in covering_jobs(batch, self.swept):
            loader.load_sweep_config(master_config=self.config, sweep_overrides=list(job))

    def _replicas(self, overrides: list[str]) -> int:
        """`replicas` in the config these overrides compose (an experiment may set it)."""
        loader = self.hydra_context.config_loader
        return int(loader.load_sweep_config(self.config, overrides).get("replicas", 1))
