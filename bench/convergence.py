"""Does every group of a study converge at its training budget? Measured, not assumed.

    python bench/convergence.py depth_width [--replicas 2] [--only KEY=VALUE ...] [OVERRIDE ...]

Composes the study's config (conf/experiment/<study>.yaml) for every point of its sweep
grid, trains a few replicas of each in this process (nothing is logged) at the study's
budget and at twice as many passes, and prints per group:

- rule: the largest relative fall of a replica's training-set loss over the last tenth of
  training (the per-run convergence rule: under 1%, over at least 20 updates, to a loss
  below that of predicting the label frequencies);
- doubling: the relative fall of the mean training-set loss when the passes double (the
  budget is enough when this is under 1% too: a decaying learning rate can meet the rule
  while the model is still learning, doubling cannot be fooled that way);
- the mean excess test log loss at both budgets, and the seconds of the study's budget.

Extra overrides (e.g. `train.passes=8 optimizer.schedule=cosine`) apply to every group;
`--only model.depth=4` keeps the grid points whose overrides include that one.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from irrepro.config import Config, register_configs, to_config
from irrepro.data import make_dataset
from irrepro.job import convergence
from irrepro.metrics import run_metrics
from irrepro.schedule import CONVERGENCE_TOLERANCE
from irrepro.training import train_replicas

CONF = Path(__file__).resolve().parents[1] / "conf"


def grid(study: str) -> list[list[str]]:
    """The sweep overrides of every point of the study's grid."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        base = compose("config", [f"+experiment={study}"], return_hydra_config=True)
    axes = [[f"{key}={value.strip()}" for value in str(values).split(",")]
            for key, values in base.hydra.sweeper.params.items()]
    return [list(point) for point in itertools.product(*axes)]


def compose_config(overrides: list[str]) -> Config:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return to_config(compose("config", overrides))


def measure(config: Config, replicas: int) -> tuple[list, float]:
    """Results of `replicas` seeds trained together, and the seconds it took."""
    started = time.perf_counter()
    results = train_replicas(config, list(range(replicas)), make_dataset(config.data))
    return results, time.perf_counter() - started


def excess(config: Config, results) -> float:
    dataset = make_dataset(config.data)
    return float(np.mean([
        run_metrics(r.predictions, dataset.y_test, dataset.p_test)["excess_log_loss"]
        for r in results
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args()
    register_configs()
    points = [p for p in grid(args.study) if set(args.only) <= set(p)]
    print(f"{'group':<44} {'rule':>7} {'doubling':>8} {'ok':>3} {'excess':>7} {'at 2x':>7} "
          f"{'s':>6}")
    failing = 0
    for point in points:
        overrides = [f"+experiment={args.study}", *point, *args.overrides, "train.progress=false"]
        config = compose_config(overrides)
        longer = compose_config([*overrides, f"train.passes={2 * config.train.passes}"])
        results, seconds = measure(config, args.replicas)
        doubled, _ = measure(longer, args.replicas)
        if any(r.failure for r in results + doubled):
            print(f"{' '.join(p.split('=', 1)[1] for p in point):<44} failed", flush=True)
            failing += 1
            continue
        rule = max(abs(r.loss_change) for r in results)
        loss, loss_doubled = (np.mean([r.train_loss for r in rs]) for rs in (results, doubled))
        doubling = (loss - loss_doubled) / loss
        dataset = make_dataset(config.data)
        ok = all(convergence(config, r, dataset)[0] for r in results) and (
            abs(doubling) < CONVERGENCE_TOLERANCE)
        failing += not ok
        name = " ".join(p.split("=", 1)[1] for p in point)
        print(f"{name:<44} {rule:>7.4f} {doubling:>8.4f} {'yes' if ok else 'NO':>3} "
              f"{excess(config, results):>7.4f} {excess(longer, doubled):>7.4f} {seconds:>6.2f}",
              flush=True)
    print(f"{failing} of {len(points)} groups not converged "
          f"(passes={compose_config([f'+experiment={args.study}', *args.overrides]).train.passes})")


if __name__ == "__main__":
    main()
