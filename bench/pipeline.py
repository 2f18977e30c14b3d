"""Wall time of real train.py invocations, and how much of it is training.

    python bench/pipeline.py

First the user's sweep `activation=relu,smelu,swish 'seed=range(10)'` on a fresh store
against the bare import of torch, MLflow and Hydra (`python -c "import torch, mlflow,
hydra"`), interleaved three times, as a ratio of medians. Then, each in a fresh temporary
SQLite store: one default run; the 30-run sweep
`activation=relu,smelu,swish seed=range(10)` with the batching sweeper (the default: one
replica job per activation) against `hydra/sweeper=basic` (30 jobs), with the largest
difference between the predictions of each (group, seed) in the two stores; and 32 seeds
three ways (one job per seed through the basic launcher and through the joblib launcher
with 2 processes, one job of 32 replicas).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def store(folder: str) -> str:
    return f"sqlite:///{folder}/mlflow.db"


def run_train(args: list[str], folder: str) -> float:
    """Wall seconds of one train.py invocation with its store and outputs in `folder`."""
    command = [sys.executable, str(ROOT / "train.py"), *args, f"tracking.uri={store(folder)}",
               "train.progress=false", f"hydra.run.dir={folder}/out",
               f"hydra.sweep.dir={folder}/multirun"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=folder)
    return time.perf_counter() - start


def finished_runs(folder: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store(folder))
    experiment = client.get_experiment_by_name("irrepro")
    return client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                              max_results=5000)


def predictions_by_seed(folder: str) -> dict[tuple[str, int], np.ndarray]:
    """{(group_key, seed): test predictions} of the FINISHED runs in the store in `folder`."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
    from mlflow.tracking import MlflowClient

    os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"
    client = MlflowClient(store(folder))
    found = {}
    for run in finished_runs(folder):
        if "seed" in run.data.tags:
            path = client.download_artifacts(run.info.run_id, "predictions.npy", folder)
            found[run.data.tags["group_key"], int(run.data.tags["seed"])] = np.load(path)
    return found


def timed_train(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, seconds spent training, runs FINISHED) of one train.py invocation."""
    with tempfile.TemporaryDirectory() as folder:
        wall = run_train(args, folder)
        runs = finished_runs(folder)
        jobs = {}
        for run in runs:
            if "job_train_seconds" in run.data.metrics:
                jobs[run.data.tags["job_id"]] = run.data.metrics["job_train_seconds"]
        trained = sum(jobs.values())
        return wall, trained, sum("job_train_seconds" in r.data.metrics for r in runs)


def report(name: str, args: list[str]) -> float:
    wall, trained, finished = timed_train(args)
    print(f"{name:<42} {wall:7.1f} s wall, {finished:3d} runs, training {trained:6.1f} s, "
          f"outside training {100 * (1 - trained / wall):3.0f}%")
    return wall


def compare_sweepers(args: list[str]) -> None:
    """The same sweep with the batching sweeper and with Hydra's basic one: wall times, and
    whether every (group, seed) has the same predictions in both stores."""
    with tempfile.TemporaryDirectory() as batch, tempfile.TemporaryDirectory() as basic:
        batch_wall = run_train(args, batch)
        basic_wall = run_train([*args, "hydra/sweeper=basic"], basic)
        batched, single = predictions_by_seed(batch), predictions_by_seed(basic)
    print(f"{'  batching sweeper (replica jobs)':<42} {batch_wall:7.1f} s wall, "
          f"{len(batched):3d} runs")
    print(f"{'  hydra/sweeper=basic (one job per seed)':<42} {basic_wall:7.1f} s wall, "
          f"{len(single):3d} runs")
    print(f"  speed-up {basic_wall / batch_wall:.1f}x")
    if batched.keys() != single.keys():
        print(f"  different runs: {sorted(batched.keys() ^ single.keys())}")
        return
    differences = {key: float(np.abs(batched[key] - single[key]).max()) for key in single}
    identical = sum(np.array_equal(batched[key], single[key]) for key in single)
    print(f"  predictions identical for {identical} of {len(single)} (group, seed); "
          f"max abs difference {max(differences.values()):.3g}")
    for key, difference in sorted(differences.items()):
        if difference:
            print(f"    group {key[0]} seed {key[1]}: {difference:.3g}")


def bare_import() -> float:
    """Wall seconds of a process that only imports torch, MLflow and Hydra."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, mlflow, hydra"], check=True)
    return time.perf_counter() - start


def sweep_against_imports(rounds: int = 3) -> None:
    """The user's sweep on a fresh store over the bare import, each timed `rounds` times,
    alternating: the ratio of the medians."""
    sweep = ["-m", "activation=relu,smelu,swish", "seed=range(10)"]
    sweeps, imports = [], []
    for _ in range(rounds):
        imports.append(bare_import())
        with tempfile.TemporaryDirectory() as folder:
            sweeps.append(run_train(sweep, folder))
    sweep_s, import_s = float(np.median(sweeps)), float(np.median(imports))
    print(f"user's sweep (30 runs, fresh store) {sweep_s:6.2f} s, bare import {import_s:5.2f} s"
          f" (medians of {rounds}): ratio {sweep_s / import_s:.2f}x")


def main() -> None:
    sweep_against_imports()
    report("one default run", [])
    print("30-run sweep (3 activations x 10 seeds)")
    compare_sweepers(["-m", "activation=relu,smelu,swish", "seed=range(10)"])
    basic = report("32 seeds, basic launcher", ["-m", "seed=range(32)", "hydra/sweeper=basic"])
    joblib = report("32 seeds, joblib launcher (2 processes)",
                    ["-m", "seed=range(32)", "hydra/sweeper=basic",
                     "hydra/launcher=local_parallel"])
    replicas = report("32 seeds, one job of 32 replicas", ["replicas=32"])
    print(f"speed-up over the basic launcher: joblib {basic / joblib:.1f}x, "
          f"replicas {basic / replicas:.1f}x")


if __name__ == "__main__":
    main()
