"""Write an analysis: CSV and markdown tables, figures, and one MLflow run that holds them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from irrepro import analysis, comparisons, figures, mitigation_effects
from irrepro.names import folder_name
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
    """Select, group and measure the runs; write tables (comparisons among them) and figures
    into folders named after `study` (checked first); return the summary."""
    folder_name(study, "--experiment")
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
    single = sum(len(group.seeds) == 1 for group in groups)
    if single:
        log.warning("%d of %d groups hold a single run: they have no PD, relative PD or churn "
                    "(two seeds are the least that can disagree)", single, len(groups))
    few = sum(len(group.seeds) < 3 for group in groups)
    if few:
        log.warning("%d of %d groups have fewer than 3 seeds: their PD has no interval over "
                    "seeds, only over test examples", few, len(groups))
    summary = analysis.summary_frame(groups)
    compared = comparisons.comparisons(groups)
    effects = mitigation_effects.mitigation_effects(groups)
    ensembles = pd.DataFrame([row for group in groups for row in analysis.ensemble_rows(group)])
    by_step = pd.DataFrame([row for group in groups for row in analysis.by_step_rows(group)])
    # Without a teacher for every group, examples are binned by the runs' mean confidence.
    basis = "teacher" if all(analysis.has_teacher(g) for g in groups) else "confidence"
    per_example = {g.key: analysis.per_example(g, basis) for g in groups if len(g.run_ids) >= 2}
    reports = reports_dir / study
    reports.mkdir(parents=True, exist_ok=True)
    summary.to_csv(reports / "summary.csv", index=False)
    ensembles.to_csv(reports / "ensembles.csv", index=False)
    (reports / "by_step.csv").unlink(missing_ok=True)
    if not by_step.empty:
        by_step.to_csv(reports / "by_step.csv", index=False)
    text = f"# {study}\n\n{selection.describe()}, {len(groups)} groups.\n\n"
    (reports / "summary.md").write_text(text + analysis.markdown_table(
        readable_summary(summary)))
    compared.to_csv(reports / "comparisons.csv", index=False)
    (reports / "comparisons.md").write_text(comparisons.markdown(compared, study))
    for stale in ("mitigations.csv", "mitigations.md"):
        (reports / stale).unlink(missing_ok=True)
    if not effects.empty:
        effects.to_csv(reports / "mitigations.csv", index=False)
        (reports / "mitigations.md").write_text(mitigation_effects.markdown(effects, study))
    for stale in (figures_dir / study).glob("*.png"):
        stale.unlink()
    drawn = figures.draw_all(summary, ensembles, per_example, figures_dir / study, study,
                             by_step=by_step, per_example_basis=basis, effects=effects)
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


def readable_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The columns people read: config values that vary within the study, then runs, PD,
    relative PD and churn, excess loss (log loss without a teacher) and accuracy, each with
    its 95% interval over seeds and test examples; the seeds PD's interval would need for a
    half-width of 10%, and convergence."""
    table = summary[figures.varying(summary)].copy()
    table["runs"] = summary["n_runs"]
    for name, heading in (("pd", "PD"), ("pd_relative", "relative PD"), ("churn", "churn")):
        table[f"{heading} [95% CI]"] = _with_interval(summary, name, name)
        table.loc[summary["n_runs"] == 1, f"{heading} [95% CI]"] = "n/a: 1 run"
    quality = ("excess_log_loss" if "excess_log_loss_mean" in summary
               and summary["excess_log_loss_mean"].notna().any() else "log_loss")
    table[f"{quality.replace('_', ' ')} [95% CI]"] = _with_interval(
        summary, f"{quality}_mean", quality)
    table["accuracy [95% CI]"] = _with_interval(summary, "accuracy_mean", "accuracy")
    table["seeds for ±10%"] = summary["seeds_for_10pct"].map(
        lambda n: "" if pd.isna(n) else ("∞" if np.isinf(n) else f"{n:.0f}"))
    table["converged"] = summary["converged"].map(
        lambda value: "?" if pd.isna(value) else ("yes" if value else "no"))
    return table


def _with_interval(summary: pd.DataFrame, value: str, name: str) -> list[str]:
    """'value [low, high]', or the value with 'n/a' where the group has too few seeds."""
    return ["" if pd.isna(estimate) else
            analysis.with_interval(estimate, low, high, " [n/a: < 3 seeds]")
            for estimate, low, high in zip(summary[value], summary[f"{name}_low"],
                                           summary[f"{name}_high"], strict=True)]
