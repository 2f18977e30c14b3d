"""Helpers that drive the real entry points in subprocesses against a temporary store."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = [
    "data.n_train=256", "data.n_test=64", "data.dim=8", "train.batch_size=32",
    "train.passes=1", "train.log_every=4",
]


def run_script(script, args, cwd, timeout=300, check=True, env=None):
    """Run `script` (train.py, analyze.py) with args in `cwd`; return the CompletedProcess."""
    environment = {**os.environ, **(env or {})}
    environment.pop("MLFLOW_TRACKING_URI", None)
    environment.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=environment,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout}\n{result.stderr}")
    return result


def train(args, cwd, **kwargs):
    """train.py with tiny data, its store and outputs inside `cwd`."""
    store = [f"tracking.uri=sqlite:///{cwd}/mlflow.db", f"hydra.run.dir={cwd}/outputs/run",
             f"hydra.sweep.dir={cwd}/multirun"]
    flags = [arg for arg in args if arg.startswith("-")]
    overrides = [arg for arg in args if not arg.startswith("-")]
    return run_script("train.py", [*flags, *TINY_ARGS, *store, *overrides], cwd, **kwargs)


def client(cwd):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")


def runs(cwd, experiment="irrepro", filter_string=""):
    """All runs of an experiment in the temporary store."""
    mlflow_client = client(cwd)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow_client.search_runs([found.experiment_id], filter_string, max_results=5000)


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url, timeout=120):
    """Poll `url` until it answers 200; return the body."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
