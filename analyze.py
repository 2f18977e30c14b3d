"""Measure cross-run disagreement of finished runs in MLflow; write reports and figures."""

import argparse
import gc
import logging
import os
import sys
from pathlib import Path


def comparison(text: str) -> tuple[str, str, str]:
    """KEY=A,B as (KEY, A, B)."""
    key, _, levels = text.partition("=")
    level_a, _, level_b = levels.partition(",")
    if not key or not level_a or not level_b or "," in level_b:
        raise argparse.ArgumentTypeError(f"expected KEY=A,B, got {text!r}")
    return key, level_a, level_b


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="irrepro", help="MLflow experiment (the study)")
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    parser.add_argument("--sweep-id", help="only runs of this sweep")
    parser.add_argument("--parent-run-id", help="only children of this parent run")
    parser.add_argument("--filter", default="", help="an MLflow search filter string")
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--figures", type=Path, default=Path("figures"))
    parser.add_argument("--optuna-study", help="also draw this Optuna study's Pareto front")
    parser.add_argument("--optuna-storage", default="sqlite:///optuna.db",
                        help="the Optuna storage URL (default: sqlite:///optuna.db)")
    parser.add_argument("--no-mlflow-run", action="store_true",
                        help="do not log the analysis as an MLflow run")
    parser.add_argument("--compare", metavar="KEY=A,B", type=comparison,
                        help="print the comparison of PD between levels A and B of config key "
                             "KEY, e.g. activation.name=relu,smelu")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    gc.disable()  # no collections while the imports build their long-lived objects
    try:
        from mlflow.exceptions import MlflowException

        from irrepro.analysis import AnalysisError
        from irrepro.console import analysis_lines
        from irrepro.data import DataError
        from irrepro.report import analyze
        from irrepro.tracking import Tracker, TrackingError, resolve_uri
    finally:
        from irrepro.gc_policy import settle

        settle()

    try:
        uri = resolve_uri(args.tracking_uri, os.getcwd())
        tracker = Tracker(uri, args.experiment, create=False)
        result = analyze(tracker, args.experiment, args.reports, args.figures, args.sweep_id,
                         args.parent_run_id, args.filter, log_run=not args.no_mlflow_run)
        if args.compare:
            from irrepro.comparisons import describe

            print(describe(args.reports / args.experiment / "comparisons.csv", *args.compare))
        if args.optuna_study:
            from irrepro.tuning import pareto_report, trial_groups

            result.written += pareto_report(args.optuna_storage, args.optuna_study,
                                            args.reports, args.figures,
                                            trial_groups(tracker, result.summary))
        url = tracker.run_url(result.run_id) if result.run_id else None
        print("\n".join(analysis_lines(result.summary, result.varying, result.written, url)))
    except (AnalysisError, TrackingError, MlflowException, DataError, ValueError) as error:
        print(f"analyze.py: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
