"""Time a K = 50 job of an MLP 2x16 (2 passes, default data) at several prediction chunk sizes.

    python bench/predict_chunks.py [--rounds 3]

The convergence rule predicts the whole training set twice and the test set once: chunks
whose activations fit in cache make those passes faster. Prints the best of `rounds`
interleaved runs per size and its ratio to 8192 rows (the values do not depend on it).
"""

from __future__ import annotations

import argparse
import time

from omegaconf import OmegaConf

from irrepro import models
from irrepro.config import to_config
from irrepro.data import make_dataset
from irrepro.training import train_replicas

SIZES = (8192, 2048, 512, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = to_config(OmegaConf.create({
        "model": {"name": "mlp", "depth": 2, "width": 16}, "train": {"progress": False}}))
    data = make_dataset(config.data)
    chosen = models.PREDICT_ROWS
    times: dict[int, list[float]] = {size: [] for size in SIZES}
    for _ in range(args.rounds):
        for size in SIZES:
            models.PREDICT_ROWS = size
            started = time.perf_counter()
            train_replicas(config, list(range(50)), data)
            times[size].append(time.perf_counter() - started)
    models.PREDICT_ROWS = chosen
    for size in SIZES:
        mark = "  (PREDICT_ROWS)" if size == chosen else ""
        print(f"{size:5d} rows: {min(times[size]):.2f} s, "
              f"{min(times[size]) / min(times[SIZES[0]]):.2f}x 8192 rows{mark}")


if __name__ == "__main__":
    main()
