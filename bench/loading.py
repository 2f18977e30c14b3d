"""Time the analysis stage's reading of 500 runs (search + predictions) from a SQLite store.

    python bench/loading.py [--runs 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from omegaconf import OmegaConf

from irrepro import analysis
from irrepro.config import to_config
from irrepro.job import run_job
from irrepro.tracking import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tracker = Tracker(f"sqlite:///{folder}/mlflow.db", "loading")
        jobs = args.runs // 50
        for job in range(jobs):
            config = to_config(OmegaConf.create({
                "seed": 50 * job, "replicas": 50, "train": {"progress": False, "passes": 1},
                "data": {"n_train": 1000}}))
            run_job(config, tracker)
        start = time.perf_counter()
        selection = analysis.select_runs(tracker)
        searched = time.perf_counter()
        groups = analysis.build_groups(tracker, selection)
        loaded = time.perf_counter()
    runs = sum(len(group.run_ids) for group in groups)
    print(f"{runs} runs: search {searched - start:.2f} s, predictions "
          f"{loaded - searched:.2f} s, total {loaded - start:.2f} s")


if __name__ == "__main__":
    main()
