"""Does every group of a study converge at its training budget? Measured, not assumed.

    python bench/convergence.py depth_width [--replicas 2] [OVERRIDE ...]

Composes the study's config (conf/experiment/<study>.yaml) for every point of its sweep
grid, trains a few replicas of each in this process (nothing is logged), and prints per
group: the largest relative change of a replica's training-set loss over the last tenth of
training (the convergence rule: under 1%), the mean excess test log loss, and the seconds.
Extra overrides (e.g. `train.passes=8 optimizer.schedule=cosine`) apply to every group.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from irrepro.config import register_configs, to_config
from irrepro.data import make_dataset
from irrepro.metrics import run_metrics
from irrepro.schedule import converged
from irrepro.training import train_replicas

CONF = Path(__file__).resolve().parents[1] / "conf"


def grid(study: str, overrides: list[str]) -> list[list[str]]:
    """The override lists of every point of the study's sweep grid."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        base = compose("config", [f"+experiment={study}"], return_hydra_config=True)
    axes = [[f"{key}={value.strip()}" for value in str(values).split(",")]
            for key, values in base.hydra.sweeper.params.items()]
    return [[f"+experiment={study}", *point, *overrides] for point in itertools.product(*axes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    register_configs()
    points = grid(args.study, [*args.overrides, "train.progress=false"])
    print(f"{'group':<60} {'loss change':>11} {'conv':>5} {'excess':>8} {'s':>6}")
    unconverged = 0
    for point in points:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            config = to_config(compose("config", point))
        dataset = make_dataset(config.data)
        started = time.perf_counter()
        results = train_replicas(config, list(range(args.replicas)), dataset)
        seconds = time.perf_counter() - started
        finished = [r for r in results if r.failure is None]
        changes = [r.loss_change for r in finished]
        excess = [run_metrics(r.predictions, dataset.y_test, dataset.p_test)["excess_log_loss"]
                  for r in finished]
        ok = len(finished) == len(results) and all(converged(c) for c in changes)
        unconverged += not ok
        name = " ".join(p.split("=", 1)[1] for p in point[1:len(point) - len(args.overrides) - 1])
        print(f"{name:<60} {np.max(np.abs(changes)) if changes else np.nan:>11.4f} "
              f"{'yes' if ok else 'NO':>5} {np.mean(excess) if excess else np.nan:>8.4f} "
              f"{seconds:>6.2f}", flush=True)
    print(f"{unconverged} of {len(points)} groups not converged")


if __name__ == "__main__":
    main()
