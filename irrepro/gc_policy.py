"""The garbage-collector policy of irrepro's processes. The objects that imports create (torch,
MLflow, Hydra: hundreds of thousands) live as long as the process, so a collection that walks
them finds nothing to free: entry points import with the collector off, then freeze what
exists, and freeze again at exit so that the interpreter's last collection skips it all."""

from __future__ import annotations

import atexit
import gc

_frozen = False


def settle() -> None:
    """Freeze every object alive now (collections no longer walk them) and collect from here
    on as usual; at exit, freeze again."""
    global _frozen
    gc.freeze()
    gc.enable()
    if not _frozen:
        atexit.register(gc.freeze)
    _frozen = True


def settle_once() -> None:
    """`settle`, the first time a process calls it (a launcher's worker, at its first job):
    freezing again would keep whatever garbage the jobs since had left in cycles."""
    if not _frozen:
        settle()
