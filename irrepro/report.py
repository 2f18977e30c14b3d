"""Write an analysis: CSV and markdown tables, figures, and one MLflow run that holds them."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from irrepro import analysis, figures
from irrepro.tracking import Tracker

log = logging.getLogger(__name__)
ANALYSIS_TAG = "irrepro.analysis"


def analyze(
    tracker: Tracker,
    study: str,
    reports_dir: Path,
    figures_dir: Path,
    sweep_id: str | None = None,
    parent_run_id: str | None = None,
    filter_string: str = "",
    log_run: bool = True,
) -> pd.DataFrame:
    """Select, group and measure the runs; write tables and figures; return the summary."""
    selection = analysis.select_runs(tracker, sweep_id, parent_run_id, filter_string)
    if not selection.runs:
        raise analysis.AnalysisError(
            f"no FINISHED training runs in experiment {study!r} at {tracker.uri}"
            + (f" ({selection.describe()})" if selection.skipped else "")
        )
    groups = analysis.build_groups(tracker, selection)
    if not groups:
        raise analysis.AnalysisError(f"nothing to analyze in {study!r}: {selection.describe()}")
    log.info("%s in %d groups", selection.describe(), len(groups))
    summary = analysis.summary_frame(groups)
    ensembles = pd.DataFrame([row for group in groups for row in analysis.ensemble_rows(group)])
    per_example = {g.key: analysis.per_example(g) for g in groups if len(g.run_ids) >= 2}
    reports = reports_dir / study
    reports.mkdir(parents=True, exist_ok=True)
    summary.to_csv(reports / "summary.csv", index=False)
    ensembles.to_csv(reports / "ensembles.csv", index=False)
    text = f"# {study}\n\n{selection.describe()}, {len(groups)} groups.\n\n"
    (reports / "summary.md").write_text(text + analysis.markdown_table(summary.drop(
        columns="group_key")))
    for stale in (figures_dir / study).glob("*.png"):
        stale.unlink()
    drawn = figures.draw_all(summary, ensembles, per_example, figures_dir / study, study)
    if log_run:
        _log_analysis_run(tracker, study, reports, figures_dir / study, len(groups), selection)
    log.info("wrote %s and %d figures in %s", reports, len(drawn), figures_dir / study)
    return summary


def _log_analysis_run(tracker, study, reports, figure_folder, n_groups, selection) -> None:
    """Replace the study's previous analysis run with a new one holding the same files."""
    for old in tracker.search(f"tags.`{ANALYSIS_TAG}` = '{study}'"):
        tracker.client.delete_run(old.info.run_id)
    run_id = tracker.start_run(f"analysis-{study}", {ANALYSIS_TAG: study})
    from mlflow.entities import Metric

    tracker.client.log_batch(run_id, metrics=[
        Metric("groups", n_groups, 0, 0), Metric("runs", len(selection.runs), 0, 0),
    ])
    tracker.client.log_artifacts(run_id, str(reports), "reports")
    if figure_folder.exists():
        tracker.client.log_artifacts(run_id, str(figure_folder), "figures")
    tracker.end_run(run_id, "FINISHED")
