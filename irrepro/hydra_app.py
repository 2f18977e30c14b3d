"""Hydra glue: the task function of train.py, and the callback that gives a multirun its
MLflow parent run (its jobs become the children). Both end by printing what was trained; a
command whose runs failed exits with status 1."""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from irrepro import console, gc_policy, orphans, tracking
from irrepro.config import Config, ConfigError, to_config
from irrepro.data import DataError
from irrepro.job import JobSummary, job_seeds, prepare_job, run_job
from irrepro.modules import ModuleError

log = logging.getLogger(__name__)
FAILED_STATUS = 1  # the exit status of a command whose runs failed
# Each job of a sweep tags the parent run JOB_TAG + its number with what it was (see record_job)
JOB_TAG = "irrepro.job."
TAG_LIMIT = 8000  # the longest tag value MLflow stores


def tracker_for(config: Config | DictConfig, cwd: str) -> tracking.Tracker:
    """The tracker a config points at, relative paths taken from `cwd` (where the user ran)."""
    uri = tracking.resolve_uri(config.tracking.uri, cwd)
    return tracking.Tracker(uri, config.tracking.experiment)


def train_from_hydra(config: DictConfig) -> JobSummary | tuple[float, float]:
    """Validate the composed config, then run the job against its tracking store.

    An Optuna trial returns its two objectives (the loss its data report, see
    `summary_schema.reported_loss`, and PD) instead of a summary.
    """
    try:
        typed = to_config(config)
        dataset = prepare_job(typed)  # bad data or a bad module: answered before MLflow
        hydra_config = HydraConfig.get()
        tracker = tracker_for(typed, hydra_config.runtime.cwd)
        job_id = None
        if hydra_config.mode != RunMode.MULTIRUN:
            tracker.end_stale_runs()
        elif os.environ.get(tracking.SWEEP_ID_ENV):
            # The job's place in the sweep: the same for every attempt of it.
            job_id = f"{os.environ[tracking.SWEEP_ID_ENV]}-{hydra_config.job.num}"
    except (ConfigError, DataError, ModuleError, tracking.TrackingError) as error:
        # A one-line answer, not a traceback: nothing has been trained or logged yet.
        print(f"train.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    gc_policy.settle_once()  # a worker's imports live on: later collections skip them
    orphans.watch_sweep()
    try:
        summary = run_job(typed, tracker, dataset, job_id)
    except tracking.TrackingError as error:
        # The store takes no more writes (a full disk, a server gone): the sweep stops here.
        print(f"train.py: error: {error}", file=sys.stderr)
        raise SystemExit(FAILED_STATUS) from None
    if hydra_config.mode != RunMode.MULTIRUN:
        if report_job(typed, tracker, summary, dataset.digest):
            raise SystemExit(FAILED_STATUS)
    elif os.environ.get(tracking.PARENT_RUN_ENV):
        record_job(tracker, os.environ[tracking.PARENT_RUN_ENV], hydra_config, summary)
    if typed.optuna.trial is not None:
        from irrepro.tuning import trial_objectives  # pandas and matplotlib: only for trials

        return trial_objectives(typed, tracker)
    return summary


def report_job(config: Config, tracker: tracking.Tracker, summary: JobSummary, data_hash: str
               ) -> bool:
    """Print the job's group line (the results of its seeds, those skipped as already FINISHED
    read from their runs) and where its runs are; on stderr, what failed. True when a seed
    failed."""
    stored = tracker.finished_group_runs(summary.group_key, data_hash)
    trained = set(summary.finished.values())
    [group] = console.outcomes(
        [run for run in stored if run.info.run_id in trained],
        [run for run in stored if int(run.data.tags["seed"]) in summary.skipped],
    ) or [console.GroupOutcome(summary.group_key)]
    group.failed.update(summary.failed)
    run_id = url = None
    if len(job_seeds(config)) == 1 and group.finished:
        [run] = group.finished.values()
        run_id, url = run.info.run_id, tracker.run_url(run.info.run_id)
    line = console.group_line(group)
    if line:
        print(line)
    print(console.where_line(config.tracking.experiment, tracker.uri,
                             url or tracker.runs_url(), run_id))
    if group.failed:
        print(f"train.py: error: {console.failure_line(group)}", file=sys.stderr)
    return bool(group.failed)


def record_job(tracker: tracking.Tracker, parent: str, hydra_config: DictConfig,
               summary: JobSummary) -> None:
    """Tag the sweep's parent run with what this job was: its group and its overrides but the
    seeds; the sweep's closing lines label the groups with them."""
    overrides = [override for override in hydra_config.overrides.task
                 if not _seed_override(override)]
    record = json.dumps({"group": summary.group_key, "overrides": overrides})
    if len(record) > TAG_LIMIT:
        log.warning("job %s: too long to record on the parent run; the sweep's closing lines "
                    "leave out its label", hydra_config.job.num)
        return
    tracker.set_tags(parent, {f"{JOB_TAG}{hydra_config.job.num}": record})


def _seed_override(override: str) -> bool:
    """Whether an override sets the seeds of a job, or an Optuna trial's number or study."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key in ("seed", "seeds") or key.startswith("optuna.")


def job_outcomes(children: list, reused: Sequence[tuple[str, object]] = ()
                 ) -> tuple[int, int]:
    """(finished, failed) jobs among a parent's child runs, grouped by their `job_id` tag, and
    the runs its jobs reused, as (job id, run): a job finished when each of its seeds has a
    FINISHED run, whatever an earlier attempt of it (a SLURM requeue) left."""
    seeds: dict[str, dict[str, bool]] = {}
    runs = [(run.data.tags.get("job_id", run.info.run_id), run) for run in children]
    for job_id, run in [*runs, *reused]:
        job = seeds.setdefault(job_id, {})
        seed = run.data.tags.get("seed", run.info.run_id)
        job[seed] = job.get(seed, False) or run.info.status == "FINISHED"
    failed = sum(1 for done in seeds.values() if not all(done.values()))
    return len(seeds) - failed, failed


def check_sweep(config: DictConfig) -> None:
    """Before any job starts (and any parent run is made), check the seed sweep's values,
    then compose and check configurations of the sweep (their values, data and model, as a
    job would: `prepare_job`) until each value of every other swept key has been in one: a
    ConfigError names the swept values of the configuration, and says on one line why it
    does not compose or is refused. Composing costs about 0.1 s,
    so not every combination is checked: a value refused only beside another fails its
    job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.irrepro_batch_sweeper.plan import (
        SeedSweepError,
        covering_jobs,
        seed_sweep,
        seed_values,
    )

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    try:
        seed = seed_sweep(parsed)
        if seed is not None:
            seed_values(seed)
    except SeedSweepError as error:
        raise ConfigError(str(error)) from None
    overrides = [override for override in parsed
                 if not (override.get_key_element() == "seed" and override.is_sweep_override())]
    if not any(override.is_sweep_override() for override in overrides):
        _check_job(config)
        return
    swept = {override.get_key_element() for override in overrides
             if override.is_sweep_override()}
    loader = GlobalHydra.instance().config_loader()
    for job in covering_jobs(BasicSweeper.split_arguments(overrides, None)[0], swept):
        try:
            _check_job(loader.load_sweep_config(config, job))
        except (ConfigError, HydraException) as error:
            named = " ".join(value for value in job if value.split("=", 1)[0] in swept)
            raise ConfigError(f"{named}: {_one_line(error)}") from None


def _one_line(error: Exception) -> str:
    """An error's message on one line: Hydra's for a missing option lists the options, one per
    line, then its search path."""
    head, _, rest = str(error).partition("\n\nAvailable options in ")
    if not rest:
        return " ".join(head.split())
    options = rest.split("Config search path:")[0].split(":", 1)[-1].split()
    return f"{' '.join(head.split())} (options: {', '.join(options)})"


def _check_job(config: DictConfig) -> None:
    """What a job checks before it logs anything (`prepare_job`), its errors as ConfigError."""
    try:
        prepare_job(to_config(config))
    except (DataError, ModuleError) as error:
        raise ConfigError(str(error)) from None


class MlflowSweepCallback(Callback):
    """Creates the store and the parent run before any job starts, and ends it afterwards.

    Jobs find the parent through an environment variable, which worker processes of the
    joblib and submitit launchers inherit.
    """

    def __init__(self) -> None:
        self.tracker: tracking.Tracker | None = None
        self.parent: str | None = None
        self.sweep_id: str | None = None
        self.experiment: str | None = None
        self.claim: tracking.SweepClaim | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_sweep(config)
            self.tracker = tracker_for(config, config.hydra.runtime.cwd)
            sweep_id = self.sweep_id = uuid.uuid4().hex[:12]
            self.claim = self.tracker.claim_sweep(sweep_id)  # one sweep of an experiment at once
        except (ConfigError, tracking.TrackingError) as error:
            # Hydra turns a callback's Exception into a warning: no job may run without a parent.
            print(f"train.py: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        stale = self.tracker.end_stale_runs()
        if stale:
            log.warning("marked %d runs KILLED whose process had died", stale)
        self.experiment = config.tracking.experiment
        overrides = " ".join(config.hydra.overrides.task) or "(defaults)"
        self.parent = self.tracker.start_run(
            f"sweep-{sweep_id}", {"sweep_id": sweep_id, "overrides": overrides[:5000]}
        )
        os.environ[tracking.PARENT_RUN_ENV] = self.parent
        os.environ[tracking.SWEEP_ID_ENV] = sweep_id
        os.environ[orphans.SWEEP_PID_ENV] = str(os.getpid())  # workers die with this process
        atexit.register(self._end, "the sweep stopped before it finished")
        # SIGTERM exits through atexit, which ends the parent FAILED (by default it would not)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        log.info("MLflow parent run %s (sweep %s) in %s", self.parent, sweep_id, self.tracker.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        # After every job; a callback's SystemExit, unlike its Exception, ends the command.
        if self._end():
            raise SystemExit(FAILED_STATUS)

    def _end(self, reason: str | None = None) -> bool:
        """End the parent: FAILED when the sweep stopped early (`reason`) or any job failed,
        else FINISHED; tagged with the count of finished and failed jobs (those that reused
        FINISHED runs among them) and of the runs reused. Then print a line per group of the
        sweep and where its runs are, and on stderr what failed. True when seeds failed, but
        in a tuning study (its sweeper's max_failure_rate judges its failures)."""
        if self.parent is None:
            return False
        children = self.tracker.search(f"tags.mlflow.parentRunId = '{self.parent}'")
        reused = self.tracker.reused_runs(os.environ[tracking.SWEEP_ID_ENV])
        finished, failed = job_outcomes(children, reused)
        counts = {"jobs_finished": finished, "jobs_failed": failed, "runs_reused": len(reused)}
        self.tracker.set_tags(self.parent, {key: str(count) for key, count in counts.items()})
        if failed and reason is None:
            reason = f"{failed} of {finished + failed} jobs failed"
        self.tracker.end_run(self.parent, "FAILED" if reason else "FINISHED", reason)
        groups = self._groups(children, [run for _, run in reused])
        self.claim.release()
        parent, self.parent = self.parent, None
        os.environ.pop(tracking.PARENT_RUN_ENV, None)
        os.environ.pop(tracking.SWEEP_ID_ENV, None)
        os.environ.pop(orphans.SWEEP_PID_ENV, None)
        for line in filter(None, map(console.group_line, groups)):
            print(line)
        print(console.where_line(self.experiment, self.tracker.uri, self.tracker.runs_url(),
                                 sweep=(self.sweep_id, parent)))
        for line in filter(None, map(console.failure_line, groups)):
            print(f"train.py: error: {line}", file=sys.stderr)
        tuning = any("optuna.trial" in run.data.tags for run in children)
        return any(group.failed for group in groups) and not tuning

    def _groups(self, children: list, reused: list) -> list[console.GroupOutcome]:
        """The sweep's groups: its children and the FINISHED runs its jobs `reused`, labeled by
        the overrides that differ between them (from the jobs' records on the parent)."""
        tags = self.tracker.get_run(self.parent).data.tags
        records = [json.loads(value) for key, value in tags.items() if key.startswith(JOB_TAG)]
        labels = console.varying_overrides(
            {record["group"]: record["overrides"] for record in records})
        return console.outcomes(children, reused, labels)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)
