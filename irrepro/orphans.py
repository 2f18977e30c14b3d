"""A launcher's worker process dies with the sweep that started it: once the sweep's main
process is gone (SIGKILL, SIGTERM), nothing of the worker's may reach the store after it."""

from __future__ import annotations

import os
import signal
import threading
import time

SWEEP_PID_ENV = "IRREPRO_SWEEP_PID"
_watched = False


def watch_sweep(interval: float = 0.5) -> None:
    """In a direct child of the sweep's main process (a joblib worker), start a thread that
    kills this process within `interval` seconds of the main process's end. Elsewhere (the
    main process, a SLURM job, a single run) nothing happens. Once per process."""
    global _watched
    main = os.environ.get(SWEEP_PID_ENV)
    if _watched or not main or int(main) == os.getpid() or int(main) != os.getppid():
        return
    _watched = True
    threading.Thread(target=_watch, args=(int(main), interval), daemon=True,
                     name="irrepro-sweep-watch").start()


def check_sweep_alive() -> None:
    """Kill this worker at once when its sweep's main process has gone: called before it
    writes a result."""
    main = os.environ.get(SWEEP_PID_ENV)
    if _watched and main and os.getppid() != int(main):
        os.kill(os.getpid(), signal.SIGKILL)


def _watch(main: int, interval: float) -> None:
    while os.getppid() == main:
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGKILL)
