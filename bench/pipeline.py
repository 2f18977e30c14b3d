"""Wall time of real train.py invocations, and how much of it is training.

    python bench/pipeline.py

Runs, each in a fresh temporary SQLite store: one default run; the 30-job sweep
`activation=relu,smelu,swish seed=range(10)`; and 32 seeds three ways (the basic
launcher, the joblib launcher with 2 processes, one job of 32 replicas).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_train(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, seconds spent training, runs FINISHED) of one train.py invocation."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{folder}/mlflow.db"
        command = [sys.executable, str(ROOT / "train.py"), *args, f"tracking.uri={store}",
                   "train.progress=false", f"hydra.run.dir={folder}/out",
                   f"hydra.sweep.dir={folder}/multirun"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=folder)
        wall = time.perf_counter() - start
        client = MlflowClient(store)
        experiment = client.get_experiment_by_name("irrepro")
        runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                                  max_results=5000)
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


def main() -> None:
    report("one default run", [])
    report("30-job sweep (3 activations x 10 seeds)",
           ["-m", "activation=relu,smelu,swish", "seed=range(10)"])
    basic = report("32 seeds, basic launcher", ["-m", "seed=range(32)"])
    joblib = report("32 seeds, joblib launcher (2 processes)",
                    ["-m", "seed=range(32)", "hydra/launcher=local_parallel"])
    replicas = report("32 seeds, one job of 32 replicas", ["replicas=32"])
    print(f"speed-up over the basic launcher: joblib {basic / joblib:.1f}x, "
          f"replicas {basic / replicas:.1f}x")


if __name__ == "__main__":
    main()
