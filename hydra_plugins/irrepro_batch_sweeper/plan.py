"""The job plan of a seed sweep: per configuration of the other axes, jobs of several seeds.

Pure functions of parsed overrides and numbers, so that the plan is testable without
launching anything.
"""

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.types import Override
from hydra.errors import CompactHydraException

SEED_KEY = "seed"
SEEDS_KEY = "seeds"


class SeedSweepError(CompactHydraException):
    """A seed sweep that cannot be planned; Hydra prints the message alone."""


def seed_sweep(overrides: Sequence[Override]) -> Override | None:
    """The override that decides `seed` (the last one, as in Hydra's basic sweeper), when it
    is a sweep; else None."""
    seed = [override for override in overrides if override.get_key_element() == SEED_KEY]
    if not seed or not seed[-1].is_sweep_override():
        return None
    if any(override.get_key_element() == SEEDS_KEY for override in overrides):
        raise SeedSweepError(
            f"{seed[-1].input_line} and seeds= both given: "
            "a seed sweep sets the seeds of each job itself"
        )
    return seed[-1]


def seed_values(override: Override) -> list[int]:
    """The seeds of a `seed=` sweep (a list, range or choice of integers >= 0, at least one),
    sorted, each once."""
    text = override.input_line
    if not override.is_discrete_sweep():
        raise SeedSweepError(f"{text}: a seed sweep is a list, range or choice of integers")
    values = list(override.sweep_iterator())
    if not values:
        raise SeedSweepError(f"{text}: no seeds to train")
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SeedSweepError(f"{text}: {value!r} is not an integer >= 0")
    return sorted(set(values))


def worker_count(launcher: Mapping[str, Any]) -> int:
    """How many jobs a launcher runs at once: joblib's `n_jobs` (negative counts back from
    the CPUs, as joblib does), submitit's `array_parallelism`, else 1."""
    n_jobs = launcher.get("n_jobs")
    if n_jobs is not None:
        return n_jobs if n_jobs >= 1 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, launcher.get("array_parallelism") or 1)


def chunk(seeds: list[int], pieces: int) -> list[list[int]]:
    """`seeds` in `pieces` consecutive chunks whose sizes differ by at most one."""
    size, extra = divmod(len(seeds), pieces)
    chunks, start = [], 0
    for index in range(pieces):
        end = start + size + (index < extra)
        chunks.append(seeds[start:end])
        start = end
    return chunks


def chunks_per_config(
    n_seeds: int, n_configs: int, workers: int, max_replicas: int | None
) -> int:
    """Enough jobs per configuration to give every worker one, and none above
    `max_replicas` seeds; never more jobs than seeds."""
    pieces = math.ceil(workers / n_configs)
    if max_replicas is not None:
        pieces = max(pieces, math.ceil(n_seeds / max_replicas))
    return min(pieces, n_seeds)


def plan_jobs(
    configs: Sequence[Sequence[str]],
    seeds: list[int],
    replicas: Sequence[int],
    workers: int,
    max_replicas: int | None,
) -> list[list[str]]:
    """The overrides of every job of a seed sweep.

    `configs` are the overrides of each configuration of the other axes, `replicas` the
    value of `replicas` in each: swept seed s stands for seeds s .. s+replicas-1, as it does
    in a job of its own, and each seed of the union is trained once. A job gets the other
    axes' overrides, `seed=<its first seed>` and `seeds=[...]`.
    """
    jobs = []
    for config, count in zip(configs, replicas, strict=True):
        config_seeds = sorted({seed + offset for seed in seeds for offset in range(count)})
        if not config_seeds:
            continue
        pieces = chunks_per_config(len(config_seeds), len(configs), workers, max_replicas)
        for part in chunk(config_seeds, pieces):
            listed = ",".join(map(str, part))
            jobs.append([*config, f"{SEED_KEY}={part[0]}", f"{SEEDS_KEY}=[{listed}]"])
    return jobs


def covering_jobs(jobs: Sequence[Sequence[str]], swept: set[str]) -> list[Sequence[str]]:
    """The jobs, in order, that each bring a value of a swept key (an override's key as
    written, e.g. `+experiment`) that no earlier one had: together they hold every value of
    every swept key. Without swept keys, the first job."""
    chosen: list[Sequence[str]] = []
    seen: set[str] = set()
    for job in jobs:
        values = {value for value in job if value.split("=", 1)[0] in swept}
        if chosen and values <= seen:
            continue
        seen |= values
        chosen.append(job)
    return chosen
