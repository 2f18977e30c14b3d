"""Helpers that drive the real entry points in subprocesses against a temporary store."""

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = [
    "data.n_train=256", "data.n_test=64", "data.dim=8", "train.batch_size=32",
    "train.passes=1", "train.log_every=4",
]


def environment(env=None):
    """This environment without the variables that would redirect or reformat a run."""
    merged = {**os.environ, **(env or {})}
    merged.pop("MLFLOW_TRACKING_URI", None)
    merged.pop("HYDRA_FULL_ERROR", None)
    return merged


def run_script(script, args, cwd, timeout=300, check=True, env=None):
    """Run `script` (train.py, analyze.py) with args in `cwd`; return the CompletedProcess."""
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=environment(env),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout}\n{result.stderr}")
    return result


@functools.cache
def migrated_store() -> Path:
    """An empty MLflow store with its tables made, once per session, for tests to copy:
    making them costs each new store about 1.5 s. Tests of store creation (parallel first
    writers, `make figures`) start from nothing instead."""
    from mlflow.tracking import MlflowClient

    folder = tempfile.mkdtemp(prefix="irrepro-store-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def store_uri(folder) -> str:
    """The URI of the store in `folder`, made there from the migrated one when missing."""
    path = Path(folder) / "mlflow.db"
    if not path.exists():
        shutil.copyfile(migrated_store(), path)
    return f"sqlite:///{path}"


def train_args(args, cwd):
    """train.py's arguments: tiny data, store and outputs inside `cwd`, unless `args` say
    otherwise; flags first."""
    defaults = [*TINY_ARGS, f"tracking.uri=sqlite:///{cwd}/mlflow.db",
                f"hydra.run.dir={cwd}/outputs/run", f"hydra.sweep.dir={cwd}/multirun"]
    flags = [arg for arg in args if arg.startswith("-")]
    overrides = [arg for arg in args if not arg.startswith("-")]
    given = {arg.split("=", 1)[0] for arg in overrides}
    return [*flags, *[d for d in defaults if d.split("=", 1)[0] not in given], *overrides]


def train(args, cwd, **kwargs):
    """train.py run to its end, on the store in `cwd` (copied from the migrated one) unless
    `args` name another."""
    if not any(arg.startswith("tracking.uri=") for arg in args):
        store_uri(cwd)
    return run_script("train.py", train_args(args, cwd), cwd, **kwargs)


def start_train(args, cwd):
    """train.py in the background, taking Ctrl-C as from a terminal (the workers of pytest -n
    ignore it, and a child would inherit that); its stderr is kept for the caller."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *train_args(args, cwd)], cwd=cwd,
        env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def client(cwd):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store_uri(cwd))


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


@contextmanager
def throwaway_service(script, state_env, name):
    """Start a service with its script in scripts/ (state in a fresh temp dir outside pytest's
    private one, so that the daemons' own users reach it; nothing installed), yield what the
    script exports, and stop it afterwards. A test skips, saying why, when it will not start."""
    state = Path(tempfile.gettempdir()) / f"irrepro-{name.lower()}-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, state_env: str(state), "IRREPRO_NO_INSTALL": "1"}
    try:
        started = subprocess.run([str(script), "start"], env=env, capture_output=True,
                                 text=True, timeout=120)
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in started.stdout.splitlines() if line.startswith("export "))
        if started.returncode != 0 or not exports:
            pytest.skip(f"no {name} here: {script.name} start failed: "
                        f"{started.stderr.strip().splitlines()[-1:]}")
        yield exports
    finally:
        subprocess.run([str(script), "stop"], env=env, capture_output=True, timeout=120)


def train_in_process(cwd, *overrides):
    """train.py's task function in this process, on tiny data and the store in `cwd` (unless
    `overrides` name another); what it returns, or the SystemExit it raises."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from irrepro.config import register_configs
    from irrepro.hydra_app import train_from_hydra

    register_configs()
    if not any(arg.startswith("tracking.uri=") for arg in overrides):
        overrides = (f"tracking.uri={store_uri(cwd)}", *overrides)
    args = [*TINY_ARGS, "train.progress=false", *overrides]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = compose(config_name="config", overrides=args, return_hydra_config=True)
        config.hydra.runtime.cwd = str(cwd)
        HydraConfig.instance().set_config(config)
        return train_from_hydra(config)


def analyze_in_process(cwd, *args):
    """analyze.py's main in this process, with its outputs in `cwd`: its exit status."""
    sys.path.insert(0, str(ROOT))
    try:
        import analyze
    finally:
        sys.path.remove(str(ROOT))
    return analyze.main([*args, "--reports", str(Path(cwd) / "reports"),
                         "--figures", str(Path(cwd) / "figures")])
