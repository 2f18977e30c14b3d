"""Time K seeds trained as one stacked job against K single runs, in one process.

    python bench/replicas.py [--replicas 1 10 50] [--device cpu]

Prints, per model and K, the seconds of K single runs, of one K-replica job, and their
ratio; then the seconds of logging the runs of the largest K-replica job to a fresh SQLite
MLflow store, run by run through MLflow's client and in bulk through the SQL writer, against
the seconds that job trained.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial

import numpy as np
from omegaconf import OmegaConf

from irrepro.config import group_key, to_config
from irrepro.data import make_dataset
from irrepro.job import finished_run, start_runs
from irrepro.training import train_replicas

MODELS = {
    "one_unit": {"model": {"name": "one_unit", "depth": 1, "width": 1}},
    "two_units": {"model": {"name": "two_units", "depth": 1, "width": 2}},
    "mlp(2x16)": {"model": {"name": "mlp", "depth": 2, "width": 16}},
}


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_each(config, seeds, dataset):
    """One single-replica job per seed, one after another."""
    return [train_replicas(config, [seed], dataset) for seed in seeds]


def bench_training(replica_counts, device):
    print(f"{'model':<10} {'K':>3} {'K single runs s':>16} {'one K-job s':>12} {'ratio':>7}")
    for name, overrides in MODELS.items():
        config = to_config(OmegaConf.create(
            {**overrides, "train": {"progress": False, "device": device}}))
        dataset = make_dataset(config.data)
        train_replicas(config, [0], dataset)  # warm-up
        for k in replica_counts:
            seeds = list(range(k))
            single = seconds(partial(train_each, config, seeds, dataset))
            stacked = seconds(partial(train_replicas, config, seeds, dataset))
            print(f"{name:<10} {k:>3} {single:>16.2f} {stacked:>12.2f} {single / stacked:>6.1f}x")


def log_job(tracker, config, results, dataset, train_seconds):
    """Log a job's runs as `run_job` does: start them, then finish them together."""
    seeds = [result.seed for result in results]
    run_ids = start_runs(config, seeds, group_key(config), dataset.digest, tracker)
    records, files = {}, {}
    for result in results:
        run_id = run_ids[result.seed]
        records[run_id], files[run_id] = finished_run(config, result, dataset, train_seconds)
    tracker.finish_runs(records, files)


def bench_logging(k):
    """Seconds to log the k runs of a k-replica job to a fresh SQLite store, through each
    writer, against the seconds that job trained, all measured here."""
    from irrepro import tracking
    from irrepro.run_writers import ClientWriter

    config = to_config(OmegaConf.create({"train": {"progress": False}}))
    dataset = make_dataset(config.data)
    seeds = list(range(k))
    train_replicas(config, seeds, dataset)  # warm-up
    started = time.perf_counter()
    results = train_replicas(config, seeds, dataset)
    train = time.perf_counter() - started
    print(f"training the {k}-replica job: {train:.2f} s, {train / k * 1000:.1f} ms per run")
    for writer in ("client", "sql"):
        with tempfile.TemporaryDirectory() as folder:
            tracker = tracking.Tracker(f"sqlite:///{folder}/mlflow.db", "bench")
            if writer == "client":
                tracker.writer = ClientWriter(tracker.client)
            logging = seconds(partial(log_job, tracker, config, results, dataset, train))
        print(f"logging its {k} runs, {writer} writer: {logging:.2f} s, "
              f"{logging / k * 1000:.1f} ms per run (logging / training: {logging / train:.2f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    np.set_printoptions(precision=3)
    bench_training(args.replicas, args.device)
    bench_logging(max(args.replicas))


if __name__ == "__main__":
    main()
