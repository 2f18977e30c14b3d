"""Reproducibility-aware tuning: a trial's two objectives, and the Pareto front of a study."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from irrepro import analysis, figures
from irrepro.config import Config, group_key, unused_keys
from irrepro.job import job_seeds
from irrepro.names import folder_name
from irrepro.summary_schema import EXCESS_LOSS, reported_loss
from irrepro.tracking import Tracker


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
    return row[f"{reported_loss(pd.DataFrame([row]))}_mean"], row["pd"]


class TrialGroup(NamedTuple):
    """What the analysis knows of a trial: the summary row of the group its runs form, and
    the config keys its options ignore (`config.unused_keys`)."""

    row: pd.Series
    ignored: tuple[str, ...]


def trials_frame(storage: str, study_name: str, groups: dict[int, TrialGroup] | None = None
                 ) -> pd.DataFrame:
    """Every complete trial of an Optuna study: number, objectives, the PD objective's 95%
    interval over seeds and test examples (from `groups`, by trial number, see
    `trial_groups`; NaN where unknown), params (blank where the trial's options ignore them:
    SmeLU's beta under ReLU, say), on the front."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as error:
        raise analysis.AnalysisError(f"no optuna study {study_name!r} in {storage}") from error
    front = {trial.number for trial in study.best_trials}
    objectives = objective_names(groups)
    rows = []
    for trial in study.trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        group = (groups or {}).get(trial.number)
        rows.append({
            "trial": trial.number, **dict(zip(objectives, trial.values, strict=True)),
            "pd_low": np.nan if group is None else group.row["pd_low"],
            "pd_high": np.nan if group is None else group.row["pd_high"],
            "pareto": trial.number in front,
            **{name: np.nan if group is not None and _ignored(name, group.ignored) else value
               for name, value in trial.params.items()},
        })
    if not rows:
        raise analysis.AnalysisError(f"optuna study {study_name!r} has no complete trial")
    return pd.DataFrame(rows).sort_values(objectives[0], kind="stable")


def objective_names(groups: dict[int, TrialGroup] | None) -> tuple[str, str]:
    """The names of a study's two objectives: the loss its trials' groups report (excess log
    loss with a teacher, log loss without; excess where no group is known) and PD."""
    rows = pd.DataFrame([group.row for group in (groups or {}).values()])
    return (reported_loss(rows) if len(rows) else EXCESS_LOSS), "pd"


def _ignored(param: str, ignored: tuple[str, ...]) -> bool:
    """Whether a trial's param sets a config key among `ignored` (or inside one of them)."""
    key = param.lstrip("+~")
    return any(key == name or key.startswith(f"{name}.") for name in ignored)


def trial_groups(tracker: Tracker, summary: pd.DataFrame) -> dict[int, TrialGroup]:
    """Each Optuna trial's group (see `TrialGroup`), from the runs of the trial."""
    by_group = summary.set_index("group_key")
    groups = {}
    for run in tracker.search("tags.`optuna.trial` LIKE '%'"):
        key, trial = run.data.tags.get("group_key"), int(run.data.tags["optuna.trial"])
        if key in by_group.index and trial not in groups:
            groups[trial] = TrialGroup(by_group.loc[key], unused_keys(analysis.config_of(run)))
    return groups


def pareto_report(storage: str, study_name: str, reports_dir: Path, figures_dir: Path,
                  groups: dict[int, TrialGroup] | None = None) -> list[Path]:
    """Write all trials (with their PD intervals from `groups`, see `trials_frame`) and the
    Pareto front as tables, and the front as a figure, into folders named after the study
    (checked first); return the paths written."""
    folder_name(study_name, "--optuna-study")
    frame = trials_frame(storage, study_name, groups)
    reports = reports_dir / study_name
    reports.mkdir(parents=True, exist_ok=True)
    frame.to_csv(reports / "trials.csv", index=False)
    # Trials that drew the same configuration (and so the same runs) appear once.
    front = frame[frame["pareto"]].drop(columns="pareto").drop_duplicates(
        objective_names(groups))
    front.to_csv(reports / "pareto.csv", index=False)
    (reports / "pareto.md").write_text(
        f"# {study_name}: Pareto front ({len(front)} distinct of {len(frame)} trials)\n\n"
        + analysis.markdown_table(front)
    )
    figure = figures.pareto(frame, figures_dir / study_name / "pareto.png", study=study_name)
    return [reports / name for name in ("trials.csv", "pareto.csv", "pareto.md")] + [figure]
