"""Work spread over the cores: forked worker processes inherit the inputs (nothing is pickled
but the results), so that a study's figures are drawn on every core. (Its groups are not
measured so: numpy's BLAS already runs their products on every core, and forked workers
measured them 2x slower.)"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

# What the forked workers compute: (function, items), set only while a fork_map runs.
_work: tuple[Callable[[Any], Any], Sequence[Any]] | None = None


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fork_map(function: Callable[[Any], Any], items: Sequence[Any], workers: int | None = None
             ) -> list:
    """`[function(item) for item in items]`, computed by up to `workers` forked processes
    (default: one per core), in order; one by one where the platform does not fork or one
    worker would do. An exception in a worker is raised here."""
    global _work
    workers = min(workers or cores(), len(items))
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [function(item) for item in items]
    _work = (function, items)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_apply, range(len(items)), chunksize=1)
    finally:
        _work = None


def _apply(index: int) -> Any:
    function, items = _work
    return function(items[index])
