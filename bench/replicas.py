"""Time K seeds trained as one stacked job against K single runs, in one process.

    python bench/replicas.py [--replicas 1 10 50] [--device cpu]

Prints, per model and K, the seconds of K single runs, of one K-replica job, and their
ratio; then the seconds of logging the runs of the largest K-replica job to a fresh SQLite
MLflow store against the seconds that job trained.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial

import numpy as np
from omegaconf import OmegaConf

from irrepro.config import config_hash, flatten, group_key, run_params, to_config
from irrepro.data import make_dataset
from irrepro.job import artifact_files, replica_config, run_name
from irrepro.metrics import run_metrics
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


def bench_logging(k):
    """Seconds to log the k runs of a k-replica job (as a job logs them) against the seconds
    that job trained, both measured here."""
    from irrepro import tracking

    config = to_config(OmegaConf.create({"train": {"progress": False}}))
    dataset = make_dataset(config.data)
    seeds = list(range(k))
    train_replicas(config, seeds, dataset)  # warm-up
    started = time.perf_counter()
    results = train_replicas(config, seeds, dataset)
    train = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        tracker = tracking.Tracker(f"sqlite:///{folder}/mlflow.db", "bench")
        started = time.perf_counter()
        for result in results:
            single = replica_config(config, result.seed)
            params = run_params(single)
            run_id = tracker.start_run(run_name(single), {
                "group_key": group_key(config), "config_hash": config_hash(single),
                "data_hash": dataset.digest, "seed": str(result.seed),
            })
            metrics = run_metrics(result.predictions, dataset.y_test, dataset.p_test)
            tracker.log_finished(
                run_id, flatten(params), metrics, result.curve,
                artifact_files(result, params, dataset.classes),
            )
        logging = time.perf_counter() - started
    print(f"MLflow logging of {k} runs: {logging:.2f} s, {logging / k * 1000:.0f} ms per run; "
          f"training the {k}-replica job: {train:.2f} s, {train / k * 1000:.0f} ms per run "
          f"(logging / training: {logging / train:.1f}x)")


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
