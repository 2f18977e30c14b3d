"""Reproducibility-aware tuning: a trial's two objectives, and the Pareto front of a study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from irrepro import analysis, figures
from irrepro.config import Config, group_key
from irrepro.job import job_seeds
from irrepro.names import folder_name
from irrepro.tracking import Tracker

OBJECTIVES = ("excess_log_loss", "pd")


def trial_objectives(config: Config, tracker: Tracker) -> tuple[float, float]:
    """Mean excess log loss (log loss where the data have no teacher) and PD of the trial's
    seeds, computed as the analysis stage does."""
    seeds = job_seeds(config)
    selection = analysis.select_runs(
        tracker, filter_string=f"tags.group_key = '{group_key(config)}'"
    )
    selection.runs = [run for run in selection.runs if int(run.data.tags["seed"]) in seeds]
    groups = analysis.build_groups(tracker, selection)
    if not groups or len(groups[0].run_ids) < 2:
        raise analysis.AnalysisError(
            f"trial {config.optuna.trial}: fewer than 2 replicas finished, PD is undefined"
        )
    row = analysis.summarize(groups[0])
    return row.get("excess_log_loss_mean", row["log_loss_mean"]), row["pd"]


def trials_frame(storage: str, study_name: str, pd_intervals: dict[int, tuple[float, float]]
                 | None = None) -> pd.DataFrame:
    """Every complete trial of an Optuna study: number, objectives, the PD objective's 95%
    interval over seeds and test examples (from `pd_intervals` by trial number, NaN where
    unknown), params, on the front."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as error:
        raise analysis.AnalysisError(f"no optuna study {study_name!r} in {storage}") from error
    front = {trial.number for trial in study.best_trials}
    rows = [
        {"trial": trial.number, **dict(zip(OBJECTIVES, trial.values, strict=True)),
         **dict(zip(("pd_low", "pd_high"),
                    (pd_intervals or {}).get(trial.number, (np.nan, np.nan)), strict=True)),
         "pareto": trial.number in front, **trial.params}
        for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE
    ]
    if not rows:
        raise analysis.AnalysisError(f"optuna study {study_name!r} has no complete trial")
    return pd.DataFrame(rows).sort_values("excess_log_loss", kind="stable")


def trial_pd_intervals(tracker: Tracker, summary: pd.DataFrame
                       ) -> dict[int, tuple[float, float]]:
    """Each Optuna trial's PD interval, from the summary row of the group its runs form."""
    by_group = summary.set_index("group_key")[["pd_low", "pd_high"]]
    intervals = {}
    for run in tracker.search("tags.`optuna.trial` LIKE '%'"):
        key = run.data.tags.get("group_key")
        if key in by_group.index:
            intervals[int(run.data.tags["optuna.trial"])] = tuple(by_group.loc[key])
    return intervals


def pareto_report(storage: str, study_name: str, reports_dir: Path, figures_dir: Path,
                  pd_intervals: dict[int, tuple[float, float]] | None = None) -> list[Path]:
    """Write all trials (with their PD intervals, see `trials_frame`) and the Pareto front as
    tables, and the front as a figure, into folders named after the study (checked first);
    return the paths written."""
    folder_name(study_name, "--optuna-study")
    frame = trials_frame(storage, study_name, pd_intervals)
    reports = reports_dir / study_name
    reports.mkdir(parents=True, exist_ok=True)
    frame.to_csv(reports / "trials.csv", index=False)
    # Trials that drew the same configuration (and so the same runs) appear once.
    front = frame[frame["pareto"]].drop(columns="pareto").drop_duplicates(OBJECTIVES)
    front.to_csv(reports / "pareto.csv", index=False)
    (reports / "pareto.md").write_text(
        f"# {study_name}: Pareto front ({len(front)} distinct of {len(frame)} trials)\n\n"
        + analysis.markdown_table(front)
    )
    figure = figures.pareto(frame, figures_dir / study_name / "pareto.png", study=study_name)
    return [reports / name for name in ("trials.csv", "pareto.csv", "pareto.md")] + [figure]
