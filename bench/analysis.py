"""Wall time of one study's analysis with its figures drawn on one core and on every core.

    python bench/analysis.py [--tracking-uri URI] [--experiment STUDY] [--repeats N]

The store `make figures` filled (default `sqlite:///mlflow.db`, study `single_units`) is
analysed in this process, interleaved `repeats` times each way into temporary folders, with
no analysis run logged; prints the median of each, their ratio, and whether the two ways
wrote the same bytes in every report and figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from irrepro import parallel  # noqa: E402
from irrepro.report import analyze  # noqa: E402
from irrepro.tracking import Tracker  # noqa: E402


def timed(tracker: Tracker, study: str, workers: int, folder: Path) -> tuple[float, dict]:
    """Seconds of one analysis by `workers` processes, and the bytes of what it wrote."""
    start = time.perf_counter()
    analyze(tracker, study, folder / "reports", folder / "figures", log_run=False,
            workers=workers)
    seconds = time.perf_counter() - start
    return seconds, {path.name: path.read_bytes() for kind in ("reports", "figures")
                     for path in sorted((folder / kind / study).iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="single_units")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tracker = Tracker(args.tracking_uri, args.experiment)
    ways = {"one core": 1, f"{parallel.cores()} cores": parallel.cores()}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    reports: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for name, workers in ways.items():
                took, reports[name] = timed(tracker, args.experiment, workers,
                                            Path(folder) / f"{repeat}-{workers}")
                seconds[name].append(took)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"{args.experiment} analysed on {name}: {median:.1f} s "
              f"(runs: {', '.join(f'{s:.1f}' for s in seconds[name])})")
    one, every = medians.values()
    same = len({tuple(written.items()) for written in reports.values()}) == 1
    print(f"ratio {one / every:.2f}x; the same bytes in every report and figure: {same}")


if __name__ == "__main__":
    main()
