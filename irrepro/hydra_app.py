"""Hydra glue: the task function of train.py, and the callback that gives a multirun its
MLflow parent run (its jobs become the children)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import uuid

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from irrepro import gc_policy, tracking
from irrepro.config import Config, ConfigError, to_config
from irrepro.data import DataError
from irrepro.job import JobSummary, prepare_job, run_job
from irrepro.modules import ModuleError

log = logging.getLogger(__name__)


def tracker_for(config: Config | DictConfig, cwd: str) -> tracking.Tracker:
    """The tracker a config points at, relative paths taken from `cwd` (where the user ran)."""
    uri = tracking.resolve_uri(config.tracking.uri, cwd)
    return tracking.Tracker(uri, config.tracking.experiment)


def train_from_hydra(config: DictConfig) -> JobSummary | tuple[float, float]:
    """Validate the composed config, then run the job against its tracking store.

    An Optuna trial returns its two objectives (excess log loss, PD) instead of a summary.
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
    summary = run_job(typed, tracker, dataset, job_id)
    if typed.optuna.trial is not None:
        from irrepro.tuning import trial_objectives  # pandas and matplotlib: only for trials

        return trial_objectives(typed, tracker)
    return summary


def job_outcomes(children: list) -> tuple[int, int]:
    """(finished, failed) jobs among a parent's child runs, grouped by their `job_id` tag: a job
    finished when each of its seeds has a FINISHED run, whatever an earlier attempt of it (a
    SLURM requeue) left. Jobs that trained nothing have no runs."""
    seeds: dict[str, dict[str, bool]] = {}
    for run in children:
        job = seeds.setdefault(run.data.tags.get("job_id", run.info.run_id), {})
        seed = run.data.tags.get("seed", run.info.run_id)
        job[seed] = job.get(seed, False) or run.info.status == "FINISHED"
    failed = sum(1 for done in seeds.values() if not all(done.values()))
    return len(seeds) - failed, failed


def check_sweep(config: DictConfig) -> None:
    """Before any job starts, compose and check configurations of the sweep until each value
    of every swept key (but `seed`, whose values the sweeper checks) has been in one: a
    ConfigError names the swept values of the configuration. Composing costs about 0.1 s,
    so not every combination is checked: a value refused only beside another fails its job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [
        override
        for override in OverridesParser.create().parse_overrides(
            list(config.hydra.overrides.task))
        if not (override.get_key_element() == "seed" and override.is_sweep_override())
    ]
    if not any(override.is_sweep_override() for override in overrides):
        to_config(config)
        return
    swept = {override.get_key_element() for override in overrides
             if override.is_sweep_override()}
    loader = GlobalHydra.instance().config_loader()
    checked: set[str] = set()
    for job in BasicSweeper.split_arguments(overrides, None)[0]:
        values = {value for value in job if value.split("=", 1)[0] in swept}
        if values <= checked:
            continue
        checked |= values
        try:
            to_config(loader.load_sweep_config(config, job))
        except ConfigError as error:
            named = " ".join(value for value in job if value.split("=", 1)[0] in swept)
            raise ConfigError(f"{named}: {error}") from None


class MlflowSweepCallback(Callback):
    """Creates the store and the parent run before any job starts, and ends it afterwards.

    Jobs find the parent through an environment variable, which worker processes of the
    joblib and submitit launchers inherit.
    """

    def __init__(self) -> None:
        self.tracker: tracking.Tracker | None = None
        self.parent: str | None = None
        self.claim: tracking.SweepClaim | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_sweep(config)
            self.tracker = tracker_for(config, config.hydra.runtime.cwd)
            sweep_id = uuid.uuid4().hex[:12]
            self.claim = self.tracker.claim_sweep(sweep_id)  # one sweep of an experiment at once
        except (ConfigError, tracking.TrackingError) as error:
            # Hydra turns a callback's Exception into a warning: no job may run without a parent.
            print(f"train.py: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        stale = self.tracker.end_stale_runs()
        if stale:
            log.warning("marked %d runs KILLED whose process had died", stale)
        overrides = " ".join(config.hydra.overrides.task) or "(defaults)"
        self.parent = self.tracker.start_run(
            f"sweep-{sweep_id}", {"sweep_id": sweep_id, "overrides": overrides[:5000]}
        )
        os.environ[tracking.PARENT_RUN_ENV] = self.parent
        os.environ[tracking.SWEEP_ID_ENV] = sweep_id
        atexit.register(self._end, "the sweep stopped before it finished")
        log.info("MLflow parent run %s (sweep %s) in %s", self.parent, sweep_id, self.tracker.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._end()

    def _end(self, reason: str | None = None) -> None:
        """End the parent: FAILED when the sweep stopped early (`reason`) or any job failed,
        else FINISHED; tagged with the count of finished and failed jobs."""
        if self.parent is None:
            return
        from mlflow.entities import RunTag

        children = self.tracker.search(f"tags.mlflow.parentRunId = '{self.parent}'")
        finished, failed = job_outcomes(children)
        counts = {"jobs_finished": finished, "jobs_failed": failed}
        self.tracker.client.log_batch(
            self.parent, tags=[RunTag(key, str(count)) for key, count in counts.items()])
        if failed and reason is None:
            reason = f"{failed} of {finished + failed} jobs failed"
        self.tracker.end_run(self.parent, "FAILED" if reason else "FINISHED", reason)
        self.claim.release()
        self.parent = None
        os.environ.pop(tracking.PARENT_RUN_ENV, None)
        os.environ.pop(tracking.SWEEP_ID_ENV, None)
