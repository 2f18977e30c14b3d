"""What train.py and analyze.py print when they end: a line per group (its results, or what
failed) and where the runs and files are."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irrepro.summary_schema import loss_label, reported_run_loss

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class GroupOutcome:
    """One group's seeds in one command: their FINISHED runs, which of those an earlier command
    trained (`reused`: the seeds skipped now), and the seeds that failed, with reasons."""

    key: str
    label: str = ""
    finished: dict[int, Any] = field(default_factory=dict)
    reused: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)


def span(seeds: Iterable[int]) -> str:
    """Seeds as ranges, e.g. '0..9,12,15,16'."""
    blocks: list[list[int]] = []
    for seed in sorted(set(seeds)):
        if blocks and blocks[-1][-1] == seed - 1:
            blocks[-1].append(seed)
        else:
            blocks.append([seed])
    return ",".join(f"{block[0]}..{block[-1]}" if len(block) > 2 else ",".join(map(str, block))
                    for block in blocks)


def outcomes(runs: Iterable[Any], reused: Iterable[Any] = (),
             labels: dict[str, str] | None = None) -> list[GroupOutcome]:
    """The groups of a command's training runs (MLflow runs of any status: a seed finished when
    one of its runs is FINISHED, whatever other attempts left), with `reused`, FINISHED runs of
    the seeds its jobs skipped, and `labels` by group key; ordered by label, then key."""
    groups: dict[str, GroupOutcome] = {}
    for run in sorted(runs, key=lambda run: run.info.end_time or 0):
        tags = run.data.tags
        if "group_key" not in tags or "seed" not in tags:
            continue  # not a training run (an anchor)
        group = groups.setdefault(tags["group_key"], GroupOutcome(tags["group_key"]))
        seed = int(tags["seed"])
        if run.info.status == "FINISHED":
            group.finished[seed] = run
            group.failed.pop(seed, None)
        elif seed not in group.finished:
            group.failed[seed] = tags.get("failure_reason") or f"the run is {run.info.status}"
    for run in sorted(reused, key=lambda run: run.info.end_time or 0):
        key, seed = run.data.tags["group_key"], int(run.data.tags["seed"])
        group = groups.setdefault(key, GroupOutcome(key))
        if seed not in group.finished or seed in group.reused:
            group.finished[seed] = run
            group.reused.add(seed)
    for key, label in (labels or {}).items():
        if key in groups:
            groups[key].label = label
    return sorted(groups.values(), key=lambda group: (group.label, group.key))


def varying_overrides(overrides: dict[str, list[str]]) -> dict[str, str]:
    """Each group's overrides (by group key) that not every group shares, as one label."""
    common = set.intersection(*map(set, overrides.values())) if overrides else set()
    return {key: " ".join(o for o in chosen if o not in common)
            for key, chosen in overrides.items()}


def _estimate(values: list[float]) -> str:
    """One value, or the mean ± standard deviation of several."""
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{np.mean(values):.4g} ± {np.std(values):.2g}"


def _head(group: GroupOutcome) -> str:
    return f"{group.label}, group {group.key}" if group.label else f"group {group.key}"


def _seeds(seeds: Iterable[int]) -> str:
    seeds = list(seeds)
    return f"{'seed' if len(seeds) == 1 else 'seeds'} {span(seeds)}"


def group_line(group: GroupOutcome) -> str | None:
    """The group's FINISHED seeds: accuracy and loss (excess log loss where the data have a
    teacher, else log loss), mean ± std over seeds, and how many converged; None when none
    finished."""
    if not group.finished:
        return None
    metrics = [group.finished[seed].data.metrics for seed in sorted(group.finished)]
    loss = reported_run_loss(metrics)
    seeds = _seeds(group.finished)
    if group.reused:
        reused = len(group.reused)
        seeds += (" (already FINISHED)" if reused == len(group.finished)
                  else f" ({reused} already FINISHED)")
    parts = [f"accuracy {_estimate([m['accuracy'] for m in metrics])}",
             f"{loss_label(loss)} {_estimate([m[loss] for m in metrics])}"]
    judged = [m["converged"] for m in metrics if "converged" in m]
    if judged:
        parts.append(f"converged {sum(value == 1 for value in judged)}/{len(judged)}")
    return f"{_head(group)}, {seeds}: {', '.join(parts)}"


def failure_line(group: GroupOutcome) -> str | None:
    """The group's failed seeds and the first one's reason; None when none failed."""
    if not group.failed:
        return None
    failed = f"{_seeds(group.failed)} FAILED"
    if group.finished:
        failed += f" ({len(group.failed)} of {len(group.failed) + len(group.finished)})"
    return f"{_head(group)}, {failed}: {group.failed[min(group.failed)]}"


def where_line(experiment: str, uri: str, url: str | None = None, run_id: str | None = None,
               sweep: tuple[str, str] | None = None) -> str:
    """Where the runs are: one run (`run_id`), or a sweep's (`sweep`: its id and its parent
    run), or a job's; the experiment, the store and the UI's `url` when there is one."""
    if sweep:
        head = f"sweep {sweep[0]}, parent run {sweep[1]},"
    else:
        head = f"run {run_id} in" if run_id else "runs in"
    return f"{head} experiment {experiment} at {uri}" + (f": {url}" if url else "")


def analysis_lines(summary: pd.DataFrame, varying: list[str], written: list[Path],
                   url: str | None = None) -> list[str]:
    """A line per group of an analysis' summary (the config values that vary, PD with its
    interval, churn, convergence, runs), a line per folder it wrote into with the files, and
    the analysis run's `url` when there is one."""
    from irrepro.analysis import with_interval

    lines = []
    for row in summary.to_dict("records"):
        values = ", ".join(f"{key}={_value(row[key])}" for key in varying)
        head = f"{values}, group {row['group_key']}" if values else f"group {row['group_key']}"
        if np.isnan(row["pd"]):
            measured = "PD n/a"
        else:
            pd_text = with_interval(row["pd"], row["pd_low"], row["pd_high"], " [n/a: < 3 seeds]")
            measured = f"PD {pd_text}, churn {row['churn']:.3g}"
        converged = {True: "yes", False: "no"}.get(row["converged"], "?")
        runs = f"{row['n_runs']} run" + "s" * (row["n_runs"] != 1)
        lines.append(f"{head}: {measured}, converged {converged}, {runs}")
    folders: dict[Path, list[str]] = {}
    for path in written:
        folders.setdefault(path.parent, []).append(path.name)
    lines += [f"{folder}/: {' '.join(names)}" for folder, names in folders.items()]
    if url:
        lines.append(f"analysis run: {url}")
    return lines


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
