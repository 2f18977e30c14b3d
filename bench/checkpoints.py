"""The cost of checkpointed predictions: one checkpoint, and training with and without them.

    python bench/checkpoints.py [--replicas 10] [--repeats 3]

At the default sizes (two ReLU units, 20,000 training and 5,000 test examples) and for an
MLP of depth 2 and width 16, prints the seconds of one checkpoint (the test predictions of
every replica through the stacked model) and of training with 0 and with 32 checkpoints,
in one run; the per-checkpoint cost is the difference divided by 31 (the final
predictions are made either way).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from omegaconf import OmegaConf

from irrepro.config import to_config
from irrepro.data import make_dataset
from irrepro.models import encode_inputs, predict_probabilities
from irrepro.training import build_model, train_replicas

MODELS = {"two_units": {"name": "two_units"}, "mlp(2x16)": {"name": "mlp", "depth": 2,
                                                            "width": 16}}


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(model: dict, seeds: list[int], repeats: int) -> tuple[float, float, float]:
    """Seconds of one checkpoint, of training without checkpoints and with 32."""
    config = to_config(OmegaConf.create({"model": model, "train": {"progress": False}}))
    checked = to_config(OmegaConf.create(
        {"model": model, "train": {"progress": False, "checkpoints": 32}}))
    dataset = make_dataset(config.data)
    stacked = build_model(config, seeds)
    x_test = encode_inputs(config.model, dataset.x_test)
    return (
        best_of(repeats, partial(predict_probabilities, stacked, x_test)),
        best_of(repeats, partial(train_replicas, config, seeds, dataset)),
        best_of(repeats, partial(train_replicas, checked, seeds, dataset)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':<10} {'one checkpoint ms':>18} {'train, 0 ckpt s':>16} "
          f"{'train, 32 ckpt s':>17} {'ms per ckpt':>12}")
    for name, model in MODELS.items():
        one, plain, checked = measure(model, list(range(args.replicas)), args.repeats)
        print(f"{name:<10} {1000 * one:>18.2f} {plain:>16.3f} {checked:>17.3f} "
              f"{1000 * (checked - plain) / 31:>12.2f}")


if __name__ == "__main__":
    main()
