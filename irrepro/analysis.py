"""The analysis stage: select finished runs, group them by group key, measure disagreement."""

from __future__ import annotations

import ast
import logging
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irrepro import metrics, training, uncertainty
from irrepro.config import Config, flatten, run_params, to_config
from irrepro.data import Dataset, make_dataset
from irrepro.tracking import CHECKPOINTS, PREDICTIONS, Tracker, local_artifact_folder

log = logging.getLogger(__name__)

RUN_METRICS = ("log_loss", "excess_log_loss", "accuracy", "auc", "converged", "n_params")
# Config columns every summary keeps, varying or not: they label the figures.
LABEL_COLUMNS = (
    "data.name", "model.name", "model.depth", "model.width", "activation.name",
    "activation.beta", "randomness.name", "randomness.window", "optimizer.name", "optimizer.lr",
)


class AnalysisError(RuntimeError):
    """Nothing to analyze, or an artifact that cannot be read; the message says which."""


@dataclass
class Selection:
    """The finished runs chosen for analysis, and why others were left out."""

    runs: list[Any]
    skipped: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        """One line: how many runs were selected and how many skipped, by reason."""
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"{len(self.runs)} runs selected" + (f"; skipped {reasons}" if reasons else "")


@dataclass
class Group:
    """Runs that differ only in seed, with their predictions stacked as [runs, examples] (binary
    labels) or [runs, examples, classes].

    `checkpoints` holds the checkpoint steps [C] and predictions [runs, C, examples] when
    every run stored the same checkpoints, else None. `dataset` is the data the runs were
    trained on, built from `config` when not given: once per group.
    """

    key: str
    config: Config
    run_ids: list[str]
    seeds: list[int]
    predictions: np.ndarray
    run_metrics: dict[str, np.ndarray]
    checkpoints: tuple[np.ndarray, np.ndarray] | None = None
    dataset: Dataset | None = None

    def __post_init__(self) -> None:
        if self.dataset is None:
            self.dataset = make_dataset(self.config.data)

    @cached_property
    def n_params(self) -> float:
        """Trainable parameters of one model of the group, as its runs logged them; for runs
        logged before they did, counted on a built-in model (see `parameter_count`)."""
        logged = self.run_metrics.get("n_params", np.array([np.nan]))
        if np.isfinite(logged).any():
            return float(logged[np.isfinite(logged)][0])
        return parameter_count(self.config, self.dataset)


@dataclass
class Artifacts:
    """What the analysis reads of one run: its predictions, and its checkpoints if any."""

    predictions: np.ndarray
    checkpoints: tuple[np.ndarray, np.ndarray] | None


def select_runs(
    tracker: Tracker,
    sweep_id: str | None = None,
    parent_run_id: str | None = None,
    filter_string: str = "",
) -> Selection:
    """Training runs of the experiment (optionally of one sweep or parent) that FINISHED."""
    clauses = ["tags.group_key LIKE '%'"]
    if sweep_id:
        clauses.append(f"tags.sweep_id = '{sweep_id}'")
    if parent_run_id:
        clauses.append(f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    if filter_string:
        clauses.append(filter_string)
    selection = Selection([])
    for run in tracker.search(" and ".join(clauses)):
        status = run.info.status
        if status == "FINISHED":
            selection.runs.append(run)
        else:
            selection.skipped[status.lower()] += 1
    return selection


def _load_one(tracking_uri: str, run: Any) -> Artifacts | None:
    """A run's artifacts (None without predictions), read in place when the artifact store is
    a local folder, else downloaded (those the run has)."""
    local = local_artifact_folder(run.info.artifact_uri)
    if local is not None:
        return _read_artifacts(run, local)
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        try:
            present = {item.path for item in mlflow.artifacts.list_artifacts(
                run_id=run.info.run_id, tracking_uri=tracking_uri)}
            for name in present & {PREDICTIONS, CHECKPOINTS}:
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path=name, tracking_uri=tracking_uri,
                    dst_path=folder,
                )
        except Exception as error:  # MLflow raises several types for a failed transfer
            raise AnalysisError(
                f"run {run.info.run_id}: cannot download its artifacts: {error}"
            ) from error
        return _read_artifacts(run, Path(folder))


def _read_artifacts(run: Any, folder: Path) -> Artifacts | None:
    if not (folder / PREDICTIONS).exists():
        return None
    predictions = _read(run, folder / PREDICTIONS)
    checkpoints = None
    if (folder / CHECKPOINTS).exists():
        checkpoints = _read_checkpoints(run, folder / CHECKPOINTS, predictions)
    return Artifacts(predictions, checkpoints)


def _read(run: Any, path: str | Path) -> np.ndarray:
    try:
        predictions = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise AnalysisError(
            f"run {run.info.run_id}: {PREDICTIONS} is unreadable ({error})"
        ) from error
    if predictions.ndim not in (1, 2):
        raise AnalysisError(f"run {run.info.run_id}: {PREDICTIONS} is not an [N] or [N, C] "
                            f"array (its shape is {predictions.shape})")
    _check_probabilities(run, PREDICTIONS, predictions)
    return predictions


def _check_probabilities(run: Any, name: str, values: np.ndarray) -> None:
    """Refuse an artifact that cannot hold probabilities: not floats, not finite, or outside
    [0, 1]."""
    where = f"run {run.info.run_id}: {name}"
    if not np.issubdtype(values.dtype, np.floating):
        raise AnalysisError(f"{where} holds {values.dtype} values, not probabilities (floats)")
    if not np.isfinite(values).all():
        raise AnalysisError(f"{where} holds values that are not finite")
    if values.size and not 0 <= values.min() <= values.max() <= 1:
        raise AnalysisError(f"{where} holds values outside [0, 1] (from {values.min():g} to "
                            f"{values.max():g})")


def _read_checkpoints(run: Any, path: Path, final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checkpoint steps [C] and predictions [C, ...], checked against the final predictions."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            steps, predictions = stored["steps"], stored["predictions"]
    except (ValueError, OSError, EOFError, KeyError) as error:
        raise AnalysisError(
            f"run {run.info.run_id}: {CHECKPOINTS} is unreadable ({error})"
        ) from error
    if predictions.shape[1:] != final.shape or len(steps) != len(predictions):
        raise AnalysisError(f"run {run.info.run_id}: {CHECKPOINTS} does not match its predictions")
    _check_probabilities(run, CHECKPOINTS, predictions)
    return steps, predictions


def load_artifacts(tracker: Tracker, runs: list[Any], workers: int = 16) -> list:
    """Every run's artifacts (None where predictions are missing), fetched in parallel from a
    server."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda run: _load_one(tracker.uri, run), runs))


def config_of(run: Any) -> Config:
    """The typed config a run was trained with, rebuilt from its params (logged as the str()
    of each value: None, lists and the numbers in `model.kwargs` are read back as Python
    literals)."""
    nested: dict[str, Any] = {}
    for key, value in run.data.params.items():
        node = nested
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = _literal(value)
    return to_config(nested)


def _literal(text: str) -> Any:
    """A param's value: the Python literal it spells, else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def build_groups(tracker: Tracker, selection: Selection) -> list[Group]:
    """Group the selected runs; drop runs with missing predictions or foreign data."""
    by_key: dict[str, list[tuple[Any, Artifacts]]] = {}
    for run, artifacts in zip(
        selection.runs, load_artifacts(tracker, selection.runs), strict=True
    ):
        if artifacts is None:
            selection.skipped["missing predictions artifact"] += 1
            continue
        by_key.setdefault(run.data.tags["group_key"], []).append((run, artifacts))
    groups = []
    for key, members in sorted(by_key.items()):
        members = _latest_per_seed(members, selection)
        config = config_of(members[0][0])
        dataset = make_dataset(config.data)
        kept = [(run, p) for run, p in members
                if run.data.tags.get("data_hash") == dataset.digest]
        selection.skipped["different data hash"] += len(members) - len(kept)
        if not kept:
            continue
        kept.sort(key=lambda member: int(member[0].data.tags["seed"]))
        groups.append(Group(
            key=key,
            config=config,
            run_ids=[run.info.run_id for run, _ in kept],
            seeds=[int(run.data.tags["seed"]) for run, _ in kept],
            predictions=np.stack([a.predictions for _, a in kept]),
            run_metrics={
                name: np.array([run.data.metrics.get(name, np.nan) for run, _ in kept])
                for name in RUN_METRICS
            },
            checkpoints=_common_checkpoints([a for _, a in kept]),
            dataset=dataset,
        ))
    selection.skipped = Counter({k: v for k, v in selection.skipped.items() if v})
    return groups


def _common_checkpoints(members: list[Artifacts]) -> tuple[np.ndarray, np.ndarray] | None:
    """Steps and stacked checkpoint predictions when every run has the same steps."""
    if any(a.checkpoints is None for a in members):
        return None
    steps = members[0].checkpoints[0]
    if any(not np.array_equal(a.checkpoints[0], steps) for a in members):
        return None
    return steps, np.stack([a.checkpoints[1] for a in members])


def _latest_per_seed(members: list, selection: Selection) -> list:
    """One run per seed (a seed retrained with force=true counts once): the latest."""
    latest: dict[str, tuple[Any, np.ndarray]] = {}
    for run, predictions in sorted(members, key=lambda member: member[0].info.end_time or 0):
        latest[run.data.tags["seed"]] = (run, predictions)
    selection.skipped["older run of the same seed"] += len(members) - len(latest)
    return list(latest.values())


def config_columns(group: Group) -> dict[str, Any]:
    """The group's config as dotted keys, without the seed."""
    params = run_params(group.config)
    params.pop("seed")
    return flatten(params)


def _group_columns(group: Group) -> dict[str, Any]:
    columns = {"group_key": group.key, **config_columns(group)}
    columns["n_params"] = group.n_params
    columns["n_runs"] = len(group.run_ids)
    return columns


def parameter_count(config: Config, dataset: Dataset) -> float:
    """Trainable parameters of a built-in model of `config` on `dataset`; NaN for a user's
    module: reading a store never imports what its params name."""
    if config.model.name == "module":
        return np.nan
    return training.parameter_count(config, dataset)


def has_teacher(group: Group) -> bool:
    """Whether the group's data come from a known teacher (synthetic data): then excess loss
    is defined."""
    return group.dataset.p_test is not None


def disagreement_intervals(P: np.ndarray, statistics: tuple[str, ...] = uncertainty.PAIR_STATISTICS
                           ) -> dict[str, float]:
    """For each pair statistic (PD, relative PD, L2 PD, churn) its 95% interval over seeds
    and test examples (`<name>_low`, `<name>_high`; NaN below 3 seeds) and over the test
    examples alone (`<name>_low_examples`, ...); and the seeds PD's interval would need for a
    half-width of 10% (`seeds_for_10pct`)."""
    row = {}
    for name in statistics:
        sample = uncertainty.sample(uncertainty.pair_values(P, name))
        intervals = {"": sample.interval(), "_examples": sample.examples_interval()}
        for suffix, bounds in intervals.items():
            # L2 PD is the root of the mean squared difference: its bounds are the roots
            low, high = np.sqrt(bounds) if name == "pd_l2" else bounds
            row[f"{name}_low{suffix}"], row[f"{name}_high{suffix}"] = float(low), float(high)
        if name == "pd":
            row["seeds_for_10pct"] = sample.seeds_needed()
    return row


def example_losses(P: np.ndarray, dataset: Dataset, excess: bool = False) -> np.ndarray:
    """Each run's log loss on each test example [R, N]; with `excess`, less the teacher's."""
    losses = np.stack([metrics.example_log_loss(p, dataset.y_test) for p in P])
    if excess:
        losses -= metrics.example_log_loss(dataset.p_test, dataset.y_test)
    return losses


def quality_intervals(P: np.ndarray, dataset: Dataset, means: dict[str, float] | None = None
                      ) -> dict[str, float]:
    """Mean log loss, excess log loss (where there is a teacher) and accuracy of the runs P,
    each with its 95% interval over seeds and test examples and over the examples alone:
    `<name>_mean`, `<name>_low`, `<name>_high`, `<name>_low_examples`, ... Intervals are
    centred on `means` where given (the runs' logged metrics), else on the mean of P's runs,
    with their standard deviation over runs (`<name>_std`)."""
    y = dataset.y_test
    values = {"log_loss": example_losses(P, dataset),
              "accuracy": np.stack([metrics.example_correct(p, y) for p in P])}
    if dataset.p_test is not None:
        values["excess_log_loss"] = example_losses(P, dataset, excess=True)
    row = {}
    for name, per_example in values.items():
        sample = uncertainty.sample(uncertainty.run_values(per_example), pairs=False)
        if means is None:
            center = sample.estimate
            row[f"{name}_std"] = float(np.std(per_example.mean(axis=1)))
        else:
            center = means.get(name, sample.estimate)
        row[f"{name}_mean"] = center
        row[f"{name}_low"], row[f"{name}_high"] = sample.spread().interval(center)
        row[f"{name}_low_examples"], row[f"{name}_high_examples"] = (
            sample.examples_spread().interval(center))
    return row


def summarize(group: Group) -> dict[str, Any]:
    """One summary row: the group's config, its disagreement with intervals, its run metrics
    (those the runs have: no excess log loss without a teacher) with intervals."""
    row = _group_columns(group)
    if len(group.run_ids) >= 2:
        row.update(metrics.disagreement(group.predictions))
        row.update(disagreement_intervals(group.predictions))
    else:  # one run: no disagreement
        row.update(dict.fromkeys(metrics.DISAGREEMENT_KEYS, np.nan))
        row.update(dict.fromkeys([f"{name}_{end}{suffix}"
                                  for name in uncertainty.PAIR_STATISTICS
                                  for end in ("low", "high") for suffix in ("", "_examples")],
                                 np.nan), seeds_for_10pct=np.nan)
    means = {}
    for name, values in group.run_metrics.items():
        if name == "converged":  # every run met the rule; unknown for runs that predate it
            row["converged"] = bool(values.all()) if np.isfinite(values).all() else np.nan
            continue
        # n_params is a column of its own; excess log loss is missing without a teacher
        if name == "n_params" or np.isnan(values).all():
            continue
        means[name] = row[f"{name}_mean"] = float(np.mean(values))
        row[f"{name}_std"] = float(np.std(values))
    row.update(quality_intervals(group.predictions, group.dataset, means))
    return row


def by_step_rows(group: Group) -> list[dict[str, Any]]:
    """Disagreement and run quality at each checkpoint of a group of 2 runs or more, PD and
    run quality with their intervals; the excess log loss only where there is a teacher."""
    if group.checkpoints is None or len(group.run_ids) < 2:
        return []
    labels = _group_columns(group)
    dataset = group.dataset
    steps, history = group.checkpoints
    rows = []
    for index, step in enumerate(steps):
        P = history[:, index]
        row = {**labels, "step": int(step), "pd": metrics.pd_l1(P),
               "pd_relative": metrics.pd_relative(P), "churn": metrics.churn(P)}
        row.update(disagreement_intervals(P, ("pd",)))
        row.update(quality_intervals(P, dataset))
        rows.append(row)
    return rows


def ensemble_rows(group: Group) -> list[dict[str, Any]]:
    """Disagreement between ensembles of k runs, for k = 1, 2, 4, ..., and their accuracy,
    with intervals over the ensembles (as seeds) and the test examples."""
    if len(group.run_ids) < 2:
        return []
    labels = _group_columns(group)
    dataset = group.dataset
    rows = []
    for row, (_, members) in zip(metrics.ensemble_disagreement(group.predictions, dataset.y_test),
                                 metrics.ensembles(group.predictions), strict=True):
        intervals = disagreement_intervals(members, ("pd",))
        quality = quality_intervals(members, dataset)
        rows.append({**labels, **row, "pd_low": intervals["pd_low"],
                     "pd_high": intervals["pd_high"], "accuracy_low": quality["accuracy_low"],
                     "accuracy_high": quality["accuracy_high"]})
    return rows


def per_example(group: Group, basis: str = "teacher") -> tuple[np.ndarray, np.ndarray]:
    """Each test example's PD across the group's runs, with what the examples are binned by:
    the teacher's probability p*(x) (basis "teacher", synthetic data) or the runs' mean
    confidence (basis "confidence": the mean over runs of the top class probability, or of p
    for binary labels)."""
    pd_x = metrics.per_example_pd(group.predictions)
    if basis == "teacher":
        return group.dataset.p_test, pd_x
    P = group.predictions
    top = P.max(axis=2) if P.ndim == 3 else P
    return top.mean(axis=0, dtype=np.float64), pd_x


def summary_frame(groups: list[Group]) -> pd.DataFrame:
    """One row per group: label columns, the config values that vary, then the measures."""
    frame = pd.DataFrame([summarize(group) for group in groups])
    for column in LABEL_COLUMNS:  # absent where no group's options use it
        if column not in frame:
            frame[column] = np.nan
    frame = frame[_ordered_columns(frame)]
    labels = [c for c in frame.columns if c in LABEL_COLUMNS]
    return frame.sort_values(labels, kind="stable").reset_index(drop=True)


def _ordered_columns(frame: pd.DataFrame) -> list[str]:
    measures = [c for c in frame.columns if c.split(".")[0] not in Config.__annotations__]
    configs = [c for c in frame.columns if c not in measures]
    varying = [c for c in configs if c in LABEL_COLUMNS or frame[c].nunique(dropna=False) > 1]
    return [c for c in measures if c == "group_key"] + varying + [
        c for c in measures if c != "group_key"
    ]


def with_interval(value: float, low: float, high: float, unknown: str = "") -> str:
    """'value [low, high]' to 3 significant digits; the value and `unknown` where the interval
    is not known."""
    if pd.isna(low):
        return f"{value:.3g}{unknown}"
    return f"{value:.3g} [{low:.3g}, {high:.3g}]"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table, numbers to 4 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines) + "\n"
