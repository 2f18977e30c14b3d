"""Write an analysis: CSV and markdown tables, figures, and one MLflow run that holds them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from irrepro import analysis, comparisons, figures, mitigation_effects
from irrepro.names import folder_name
from irrepro.summary_schema import loss_label, reported_loss, varying
from irrepro.tracking import Tracker

log = logging.getLogger(__name__)
ANALYSIS_TAG = "irrepro.analysis"
# The tables an analysis writes into its reports folder, those it has rows for.
TABLES = ("summary.csv", "summary.md", "comparisons.csv", "comparisons.md", "ensembles.csv",
          "by_step.csv", "mitigations.csv", "mitigations.md")


@dataclass
class Analysis:
    """What an analysis measured and wrote: its summary, the config columns that vary between
    its groups (those summary.md shows), the files it wrote, and its MLflow run."""

    summary: pd.DataFrame
    varying: list[str]
    written: list[Path]
    run_id: str | None = None


def analyze(
    tracker: Tracker,
    study: str,
    reports_dir: Path,
    figures_dir: Path,
    sweep_id: str | None = None,
    parent_run_id: str | None = None,
    filter_string: str = "",
    log_run: bool = True,
    workers: int | None = None,
) -> Analysis:
    """Select, group and measure the runs; write tables (comparisons among them) and figures
    into folders named after `study` (checked first). The figures are drawn by `workers`
    processes (default: one per core)."""
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
    columns = varying(summary)
    summary.to_csv(reports / "summary.csv", index=False)
    ensembles.to_csv(reports / "ensembles.csv", index=False)
    (reports / "by_step.csv").unlink(missing_ok=True)
    if not by_step.empty:
        by_step.to_csv(reports / "by_step.csv", index=False)
    text = f"# {study}\n\n{selection.describe()}, {len(groups)} groups.\n\n"
    (reports / "summary.md").write_text(text + analysis.markdown_table(
        readable_summary(summary, columns)))
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
                             by_step=by_step, per_example_basis=basis, effects=effects,
                             workers=workers)
    run_id = None
    if log_run:
        run_id = _log_analysis_run(tracker, study, reports, figures_dir / study, groups)
    log.info("wrote %s and %d figures in %s", reports, len(drawn), figures_dir / study)
    written = [reports / name for name in TABLES if (reports / name).exists()]
    return Analysis(summary, columns, written + drawn, run_id)


def _log_analysis_run(tracker, study, reports, figure_folder, groups) -> str:
    """Replace the study's previous analysis run with a new one holding the same files, and
    the number of groups and of runs they analysed; return its id."""
    for old in tracker.search(f"tags.`{ANALYSIS_TAG}` = '{study}'"):
        tracker.delete_run(old.info.run_id)
    run_id = tracker.start_run(f"analysis-{study}", {ANALYSIS_TAG: study})
    tracker.log_values(run_id, {"groups": len(groups),
                                "runs": sum(len(group.run_ids) for group in groups)})
    tracker.log_folder(run_id, reports, "reports")
    if figure_folder.exists():
        tracker.log_folder(run_id, figure_folder, "figures")
    tracker.end_run(run_id, "FINISHED")
    return run_id


def readable_summary(summary: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The columns people read: config values that vary within the study (`columns`, else
    found by `summary_schema.varying`), then runs, PD, relative PD and churn, excess loss (log loss
    without a teacher) and accuracy, each with its 95% interval over seeds and test examples;
    the seeds PD's interval would need for a half-width of 10%, and convergence."""
    table = summary[varying(summary) if columns is None else columns].copy()
    table["runs"] = summary["n_runs"]
    for name, heading in (("pd", "PD"), ("pd_relative", "relative PD"), ("churn", "churn")):
        table[f"{heading} [95% CI]"] = _with_interval(summary, name, name)
        table.loc[summary["n_runs"] == 1, f"{heading} [95% CI]"] = "n/a: 1 run"
    quality = reported_loss(summary)
    table[f"{loss_label(quality)} [95% CI]"] = _with_interval(
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
