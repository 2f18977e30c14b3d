"""The training cost of each mitigation of the mitigations study against none, in one process.

    python bench/mitigations.py [--rounds 3]

Composes conf/experiment/mitigations.yaml for each model and arm, trains its 10 seeds as one
job, `rounds` times interleaved (so that load on the machine hits every arm alike), and
prints the median seconds and their ratio to the arm without a mitigation. The anchor's own
training (one model per configuration, shared by every seed and strength) is timed apart.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from irrepro.anchors import anchor_config
from irrepro.config import register_configs, to_config
from irrepro.data import make_dataset
from irrepro.training import train_replicas

CONF = Path(__file__).resolve().parent.parent / "conf"


def study_axes() -> tuple[list[str], list[str]]:
    """The models and arms the study sweeps."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("config", ["+experiment=mitigations"], return_hydra_config=True)
    params = config.hydra.sweeper.params
    return (str(params["+mitigation_model"]).split(","),
            str(params["+mitigation_arm"]).split(","))


def arm_config(model: str, arm: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return to_config(compose("config", [
            "+experiment=mitigations", f"+mitigation_model={model}", f"+mitigation_arm={arm}",
            "train.progress=false", "train.checkpoints=0"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    register_configs()
    models, arms = study_axes()
    for model in models:
        configs = {arm: arm_config(model, arm) for arm in arms}
        data = make_dataset(configs[arms[0]].data)
        seeds = list(range(configs[arms[0]].replicas))
        base = anchor_config(configs["anchor_weak"])
        started = time.perf_counter()
        anchor = train_replicas(base, [base.seed], data)[0].train_predictions
        anchor_seconds = time.perf_counter() - started
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(args.rounds):
            for arm, config in configs.items():
                started = time.perf_counter()
                train_replicas(config, seeds, data,
                               anchor if config.mitigation.name == "anchor" else None)
                times[arm].append(time.perf_counter() - started)
        none = statistics.median(times["none"])
        print(f"{model}: {len(seeds)} seeds per job, median of {args.rounds} rounds; the "
              f"anchor trains once in {anchor_seconds:.2f} s")
        for arm in arms:
            median = statistics.median(times[arm])
            print(f"  {arm:22s} {median:6.2f} s  {median / none:5.2f}x none")


if __name__ == "__main__":
    main()
