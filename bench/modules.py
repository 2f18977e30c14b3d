"""Time K seeds of a user's module (examples/mlp.py) trained as one stacked job against K
single runs, in one process.

    python bench/modules.py [--replicas 10 50] [--dataset digits] [--hidden 32]

Trains the example MLP (one hidden layer, ReLU) on one of scikit-learn's bundled sets with
the default training settings; prints, per K, the seconds of K single runs, of one K-replica
job, their ratio, and the largest difference between a seed's predictions as a replica and
alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from irrepro.config import to_config
from irrepro.data import make_dataset
from irrepro.training import train_replicas

ROOT = Path(__file__).resolve().parents[1]


def train_each(config, seeds, dataset):
    """One single-replica job per seed, one after another."""
    return [train_replicas(config, [seed], dataset)[0] for seed in seeds]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # examples.mlp, as train.py finds it from the project root
    config = to_config(OmegaConf.create({
        "data": {"name": "sklearn", "dataset": args.dataset},
        "model": {"name": "module", "target": "examples.mlp.mlp",
                  "kwargs": {"hidden": args.hidden}},
        "train": {"progress": False},
    }))
    dataset = make_dataset(config.data)
    train_replicas(config, [0], dataset)  # warm-up
    print(f"examples.mlp.mlp (hidden={args.hidden}) on {args.dataset}: "
          f"{dataset.x_train.shape[0]} training examples, {dataset.x_train.shape[1]} features, "
          f"{dataset.n_classes} classes")
    print(f"{'K':>3} {'K single runs s':>16} {'one K-job s':>12} {'ratio':>7} {'max |diff|':>11}")
    for k in args.replicas:
        seeds = list(range(k))
        singles, single_seconds = timed(train_each, config, seeds, dataset)
        stacked, stacked_seconds = timed(train_replicas, config, seeds, dataset)
        difference = max(float(np.abs(a.predictions - b.predictions).max())
                         for a, b in zip(singles, stacked, strict=True))
        print(f"{k:>3} {single_seconds:>16.2f} {stacked_seconds:>12.2f} "
              f"{single_seconds / stacked_seconds:>6.1f}x {difference:>11.1e}")


if __name__ == "__main__":
    main()
