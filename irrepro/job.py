"""One job: train the seeds of a config that have no FINISHED run yet and log each as a run."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import yaml

from irrepro import anchors, orphans, schedule, tracking
from irrepro.config import Config, config_hash, flatten, group_key, run_params
from irrepro.data import Dataset, make_dataset
from irrepro.metrics import frequency_log_loss, run_metrics
from irrepro.training import (
    ReplicaResult,
    check_memory,
    check_trainable,
    parameter_count,
    total_steps,
    train_replicas,
)

log = logging.getLogger(__name__)
# The label values in class-index order: index i of a prediction row is classes[i]; for two
# classes, the probability is that of classes[1].
CLASSES_FILE = "classes.json"


@dataclass
class JobSummary:
    """What a job did, by seed."""

    group_key: str
    finished: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def replica_config(config: Config, seed: int) -> Config:
    """The config of the single run that replica `seed` stands for."""
    return dataclasses.replace(config, seed=seed, replicas=1, seeds=[])


def job_seeds(config: Config) -> list[int]:
    """The seeds a job trains: `seeds` when given (each once), else seed .. seed+replicas-1."""
    if config.seeds:
        return list(dict.fromkeys(config.seeds))
    return list(range(config.seed, config.seed + config.replicas))


def run_name(config: Config) -> str:
    """A readable run name: seed (first, so that a narrow column shows it), model, activation,
    randomness."""
    return (
        f"s{config.seed}-{config.model.name}-{config.activation.name}-{config.randomness.name}"
    )


def prepare_job(config: Config) -> Dataset:
    """The job's data, once they and its model are known to work: bad data (DataError), a
    module that does not load, build or batch (ModuleError), checkpoints the steps cannot
    hold or more seeds than memory holds (ConfigError) fail here, before any run starts."""
    dataset = make_dataset(config.data)
    check_trainable(config, dataset)
    check_memory(config, dataset, len(job_seeds(config)))
    return dataset


def run_job(
    config: Config, tracker: tracking.Tracker, dataset: Dataset | None = None,
    job_id: str | None = None,
) -> JobSummary:
    """Train and log every seed of `config` (`job_seeds`) not yet FINISHED; `dataset` is what
    `prepare_job` returned for it, when the caller already prepared the job. Its runs are
    tagged `job_id` (a new one unless given: a sweep gives each job its place in it)."""
    group = group_key(config)
    summary = JobSummary(group)
    dataset = dataset or prepare_job(config)
    seeds = job_seeds(config)
    job_id = job_id or uuid.uuid4().hex[:12]
    done = {} if config.force else tracker.finished_runs(group, dataset.digest)
    summary.skipped = [seed for seed in seeds if seed in done]
    todo = [seed for seed in seeds if seed not in done]
    if summary.skipped:
        log.info(
            "skipping seeds %s of group %s: already FINISHED (force=true retrains)",
            _span(summary.skipped), group,
        )
        record_reuse(tracker, [done[seed] for seed in summary.skipped], job_id)
    if not todo:
        return summary
    anchor = anchor_for(config, dataset, tracker) if config.mitigation.name == "anchor" else None
    open_runs = start_runs(config, todo, group, dataset.digest, tracker, job_id)
    try:
        with _signals_raise() as check_terminated:
            _train_and_log(config, todo, dataset, tracker, open_runs, summary, check_terminated,
                           anchor)
    except BaseException as error:
        # Nothing stays RUNNING: interrupted runs (Ctrl-C, SIGTERM from scancel or preemption,
        # submitit's exit before a requeue) are KILLED, the rest FAILED with the reason.
        interrupted = isinstance(error, KeyboardInterrupt | Terminated | SystemExit)
        reason = f"{type(error).__name__}: {error}"
        try:
            tracker.end_runs(dict.fromkeys(open_runs.values(), reason),
                             "KILLED" if interrupted else "FAILED")
        except tracking.TrackingError as failure:  # the store takes no more writes: say why
            log.warning("%d runs stay RUNNING: %s", len(open_runs), failure)
        raise
    log.info(
        "group %s: %d finished, %d failed, %d skipped",
        group, len(summary.finished), len(summary.failed), len(summary.skipped),
    )
    return summary


def record_reuse(tracker: tracking.Tracker, run_ids: list[str], job_id: str) -> None:
    """In a sweep, tag the FINISHED runs that job `job_id` reuses with the sweep and the job
    (see `tracking.REUSED_BY_TAG`), so that the sweep's parent counts them."""
    sweep_id = os.environ.get(tracking.SWEEP_ID_ENV)
    if sweep_id and os.environ.get(tracking.PARENT_RUN_ENV):
        tracker.mark_reused(run_ids, sweep_id, job_id)


class Terminated(Exception):
    """SIGTERM arrived while training: scancel, preemption, or a plain kill."""


@contextmanager
def _signals_raise():
    """While training, SIGTERM raises Terminated (an Exception, so Hydra and submitit still
    report the job as failed) and SIGINT, where it is not ignored, KeyboardInterrupt, as by
    default; the previous handlers are back afterwards. Only the main thread takes signals:
    elsewhere nothing changes.

    Yields a check that raises again once a signal has come: Python drops an exception
    raised while a finalizer runs (a garbage-collected object's), so the job checks again
    after training, before it logs anything."""
    received: list[int] = []

    def interrupted(signum: int) -> BaseException:
        name = signal.Signals(signum).name
        return KeyboardInterrupt(name) if signum == signal.SIGINT else Terminated(f"signal {name}")

    def handle(signum, frame):
        received.append(signum)
        raise interrupted(signum)

    def check() -> None:
        if received:
            raise interrupted(received[0])

    # SIGINT only where it raises KeyboardInterrupt anyway (a process may ignore it)
    signals = [signal.SIGTERM] + [signal.SIGINT] * (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    try:
        previous = {signum: signal.signal(signum, handle) for signum in signals}
    except ValueError:  # not the main thread
        yield check
        return
    try:
        yield check
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def start_runs(config, seeds, group, data_digest, tracker, job_id=None) -> dict[int, str]:
    """One RUNNING run per seed, tagged with what identifies it, under the sweep's parent."""
    sweep_id = os.environ.get(tracking.SWEEP_ID_ENV) or uuid.uuid4().hex[:12]
    parent = os.environ.get(tracking.PARENT_RUN_ENV)
    job_id = job_id or uuid.uuid4().hex[:12]
    runs = []
    for seed in seeds:
        single = replica_config(config, seed)
        tags = {
            "group_key": group, "config_hash": config_hash(single), "data_hash": data_digest,
            "seed": str(seed), "sweep_id": sweep_id, "job_id": job_id,
        }
        if parent:
            tags["mlflow.parentRunId"] = parent
        if config.optuna.trial is not None:
            tags.update({"optuna.trial": str(config.optuna.trial),
                         "optuna.study": str(config.optuna.study)})
        runs.append((run_name(single), tags))
    return dict(zip(seeds, tracker.start_runs(runs), strict=True))


def anchor_for(config: Config, dataset: Dataset, tracker: tracking.Tracker) -> np.ndarray:
    """The training-set predictions of `config`'s anchor: the stored ones, else the anchor is
    trained here and logged as a run of the experiment (on a SQLite store, one process at a
    time, so that parallel jobs of a configuration train it once)."""
    base = anchors.anchor_config(config)
    with tracker.exclusively("anchors"):
        found = anchors.stored_anchor(tracker, base, dataset.digest)
        if found is not None:
            return found
        log.info("training the anchor of group %s", group_key(config))
        started = time.perf_counter()
        [result] = train_replicas(base, [base.seed], dataset)
        if result.failure:
            raise anchors.AnchorError(f"the anchor of group {group_key(config)} failed: "
                                      f"{result.failure}")
        record, files = finished_run(base, result, dataset, time.perf_counter() - started)
        files[anchors.TRAIN_PREDICTIONS] = _npy(result.train_predictions)
        run_id = tracker.start_run(f"anchor-{run_name(base)}",
                                   anchors.anchor_tags(base, dataset.digest))
        tracker.finish_runs({run_id: record}, {run_id: files})
        return result.train_predictions


def _train_and_log(config, seeds, dataset, tracker, open_runs, summary, check_terminated,
                   anchor=None) -> None:
    """Train the seeds together (toward `anchor`'s predictions under mitigation=anchor), then
    end the runs: the failed replicas FAILED with their reasons, the rest FINISHED with their
    results, all at once."""
    started = time.perf_counter()
    results = train_replicas(config, seeds, dataset, anchor)
    train_seconds = time.perf_counter() - started
    check_terminated()
    failed = {result.seed: result.failure for result in results if result.failure}
    for seed, failure in failed.items():
        log.error("seed %d failed: %s", seed, failure)
    if failed:
        tracker.end_runs({open_runs[seed]: failure for seed, failure in failed.items()},
                         "FAILED")
        summary.failed.update(failed)
        for seed in failed:
            del open_runs[seed]
    trained = [result for result in results if not result.failure]
    n_params = parameter_count(config, dataset)
    records, files = {}, {}
    for result in trained:
        run_id = open_runs[result.seed]
        records[run_id], files[run_id] = finished_run(config, result, dataset, train_seconds,
                                                      n_params)
    orphans.check_sweep_alive()  # a worker whose sweep has died logs nothing more
    tracker.finish_runs(records, files)
    for result in trained:
        summary.finished[result.seed] = open_runs.pop(result.seed)


def finished_run(config: Config, result: ReplicaResult, dataset: Dataset, train_seconds: float,
                 n_params: int | None = None) -> tuple[tracking.RunRecord, dict[str, bytes]]:
    """What a replica that trained logs: its record (params, metrics, curve) and its files.
    `n_params` (its model's parameter count, logged so that analysis never builds a user's
    module) is counted here unless given."""
    params = run_params(replica_config(config, result.seed))
    metrics = run_metrics(result.predictions, dataset.y_test, dataset.p_test)
    metrics["job_train_seconds"] = train_seconds  # the job's, shared by its replicas
    metrics["train_log_loss"] = result.train_loss
    metrics["loss_change_last_tenth"] = result.loss_change
    converged, reason = convergence(config, result, dataset)
    metrics["converged"] = float(converged)
    metrics["n_params"] = float(parameter_count(config, dataset) if n_params is None
                                else n_params)
    record = tracking.RunRecord(flatten(params), metrics, result.curve,
                                {"convergence_reason": reason})
    return record, artifact_files(result, params, dataset.classes)


def convergence(config: Config, result: ReplicaResult, dataset: Dataset) -> tuple[bool, str]:
    """Whether a replica that trained converged, and why (see `schedule.convergence`)."""
    updates = schedule.last_tenth_updates(total_steps(config, len(dataset.y_train)),
                                          config.optimizer.schedule)
    return schedule.convergence(result.loss_change, updates, result.train_loss,
                                frequency_log_loss(dataset.y_train))


def artifact_files(result: ReplicaResult, params: dict, classes: tuple) -> dict[str, bytes]:
    """A finished run's artifacts: test predictions (float32 [N] or [N, C]), resolved config,
    the class mapping, and checkpoints."""
    files = {
        tracking.PREDICTIONS: _npy(result.predictions),
        tracking.CONFIG_FILE: yaml.safe_dump(params, sort_keys=False).encode(),
        CLASSES_FILE: json.dumps({"classes": list(classes)}).encode(),
    }
    if result.checkpoints is not None:
        buffer = io.BytesIO()
        np.savez(buffer, steps=result.checkpoint_steps.astype(np.int64),
                 predictions=result.checkpoints.astype(np.float32))
        files[tracking.CHECKPOINTS] = buffer.getvalue()
    return files


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32))
    return buffer.getvalue()


def _span(seeds: list[int]) -> str:
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}..{seeds[-1]}"
    return ",".join(map(str, seeds))
