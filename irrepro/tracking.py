"""MLflow bookkeeping: the store, run lifecycle, batched logging, resume and stale-run queries.

`mlflow` is imported lazily: it is heavy, and `--help` or a config error should answer at once.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from irrepro.run_writers import RunRecord, writer_for

PARENT_RUN_ENV = "IRREPRO_PARENT_RUN_ID"
SWEEP_ID_ENV = "IRREPRO_SWEEP_ID"
# A FINISHED run that a sweep's job reused instead of training it again carries this tag, the
# sweep's id appended, whose value is the job's id (a run keeps the parent it was trained
# under: MLflow gives a run one).
REUSED_BY_TAG = "irrepro.reused_by."
PREDICTIONS = "predictions.npy"
# Disk room a job needs beyond its runs' files: for the store to end its runs (a fixed part)
# and for the rows it logs (each param, metric, curve point and tag, with its indexes).
ROOM_FOR_STORE = 256 * 1024
ROOM_PER_ROW = 512
CHECKPOINTS = "checkpoints.npz"
CONFIG_FILE = "config.yaml"


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written; the message says which and why."""


def resolve_uri(uri: str, base_dir: str | os.PathLike) -> str:
    """Make a relative `sqlite:///file.db` absolute against `base_dir` (where the user ran)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path(base_dir) / uri[len(prefix):]).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite tracking URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


@contextmanager
def _store_lock(uri: str, purpose: str = "") -> Iterator[None]:
    """Serialize creation of a SQLite store (concurrent schema migrations collide), or, with
    a `purpose`, another piece of work on it; no lock for other stores."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = f".{purpose}.lock" if purpose else ".lock"
        handle = open(path.with_name(path.name + suffix), "w")  # noqa: SIM115
    except OSError as error:
        raise TrackingError(f"cannot write the tracking store at {path}: {error}") from error
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# A new SQLite store is made here, beside its place, then renamed into it.
CREATING = ".creating-"


def _is_new(path: Path) -> bool:
    """Whether a SQLite store's file is still to be made (absent, or empty: no tables)."""
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True


def _create_sqlite_store(path: Path) -> None:
    """Make and migrate a new SQLite store in a temporary file in its folder, then rename it
    into place: a process killed meanwhile leaves no store, only temporary files, which the
    next creation removes. Call under `_store_lock`.

    The temporary file is thrown away unless complete, so its migration runs without
    SQLite's syncs to disk (2-3 times faster here); the file is synced once, before the
    rename."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine
    from sqlalchemy import event

    for leftover in path.parent.glob(f"{glob.escape(path.name)}{CREATING}*"):
        leftover.unlink(missing_ok=True)
    temporary = path.with_name(f"{path.name}{CREATING}{os.getpid()}")
    engine = create_sqlalchemy_engine(f"sqlite:///{temporary}")

    @event.listens_for(engine, "connect")
    def unsynced(connection, _record):
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA journal_mode=MEMORY")

    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    _sync(temporary)
    os.replace(temporary, path)
    _sync(path.parent)  # the new name too outlives a crash of the machine


def _sync(path: Path) -> None:
    """Flush a file or folder to disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _retrying(call, *args, attempts: int = 8, **kwargs):
    """Call an MLflow function, retrying with backoff while SQLite reports a locked database."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as error:  # MLflow wraps the driver's error in its own types
            if "database is locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


class _CaughtAndRaised(logging.Filter):
    """Drops MLflow's traceback of a failed SQL transaction: MLflow raises the error right
    after, and the Tracker retries it or reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SQLAlchemy database error")


class Tracker:
    """One experiment in one tracking store."""

    def __init__(self, uri: str, experiment: str, create: bool = True):
        from mlflow.tracking import MlflowClient

        sql_log = logging.getLogger("mlflow.store.db.utils")
        if not any(isinstance(known, _CaughtAndRaised) for known in sql_log.filters):
            sql_log.addFilter(_CaughtAndRaised())
        self.uri = uri
        self.experiment = experiment
        # Artifact URI of each run started here, until its files are written or it ends.
        self._artifact_uris: dict[str, str] = {}
        if uri.startswith(("http://", "https://")):
            _check_reachable(uri)
        if uri.startswith("postgresql"):
            _check_database(uri)
        with _store_lock(uri):
            try:
                path = sqlite_path(uri)
                if path is not None and _is_new(path):
                    _create_sqlite_store(path)
                self.client = MlflowClient(tracking_uri=uri)
                self.writer = writer_for(self.client, _retrying)
                self.experiment_id = self._experiment_id(experiment, create)
            except TrackingError:
                raise
            except Exception as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise TrackingError(
                    f"cannot use tracking store {uri!r}: {type(error).__name__}: {first_line}"
                ) from error

    def _experiment_id(self, name: str, create: bool) -> str:
        """The experiment's id; a new one is created (when `create`) with the tags of
        `ui_tags`, which an older one gets then too."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if create:  # made before irrepro tagged them
                for key, value in ui_tags().items():
                    if key not in found.tags:
                        self.client.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        if not create:
            raise TrackingError(f"no experiment named {name!r} in {self.uri}")
        path = sqlite_path(self.uri)
        location = (path.parent / "mlartifacts").as_uri() if path else None
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags=ui_tags())
        except Exception:  # another process created it first (servers are not locked here)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def runs_url(self) -> str | None:
        """The experiment's runs table in the UI of a tracking server (see `runs_url`); None
        for a store with no UI of its own."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        tags = self.client.get_experiment(self.experiment_id).tags
        return runs_url(self.uri, self.experiment_id, tags)

    def run_url(self, run_id: str) -> str | None:
        """A run's page in the UI of a tracking server; None for a store with no UI of its own."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def search(self, filter_string: str) -> list[Any]:
        """All active runs of the experiment matching an MLflow filter string (every page)."""
        runs, token = [], None
        while True:
            page = _retrying(
                self.client.search_runs,
                [self.experiment_id], filter_string=filter_string,
                max_results=1000, page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def exclusively(self, purpose: str):
        """A context in which no other process does `purpose` on this store (SQLite stores,
        through a lock file beside it; other stores are not locked)."""
        return _store_lock(self.uri, purpose)

    def claim_sweep(self, sweep_id: str) -> SweepClaim:
        """Hold the experiment for sweep `sweep_id` until the claim is released or this process
        ends: on a SQLite store, through a lock file beside it, so that another sweep of the
        experiment stops at once (TrackingError naming this one) instead of training the same
        seeds again; other stores are not locked."""
        path = sqlite_path(self.uri)
        if path is None:
            return SweepClaim(None)
        handle = open(path.with_name(f"{path.name}.sweep-{self.experiment_id}.lock"), "a+")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another sweep"
            handle.close()
            raise TrackingError(f"experiment {self.experiment!r} is being swept by {holder}: "
                                "wait for it to end, or sweep into another "
                                "tracking.experiment") from None
        handle.truncate(0)
        handle.write(f"sweep {sweep_id} (pid {os.getpid()} on {socket.gethostname()})\n")
        handle.flush()
        return SweepClaim(handle)

    def read_artifact(self, run: Any, name: str) -> bytes:
        """One artifact file of a run: read in place from a local artifact folder, else
        downloaded."""
        folder = local_artifact_folder(run.info.artifact_uri)
        if folder is not None:
            return (folder / name).read_bytes()
        import mlflow

        with tempfile.TemporaryDirectory() as staging:
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path=name, tracking_uri=self.uri,
                dst_path=staging)
            return Path(path).read_bytes()

    def finished_group_runs(self, group: str, data_hash: str) -> list[Any]:
        """The FINISHED runs of a group on the same data."""
        return self.search(f"tags.group_key = '{group}' and tags.data_hash = '{data_hash}' "
                           "and attributes.status = 'FINISHED'")

    def finished_runs(self, group: str, data_hash: str) -> dict[int, str]:
        """Seeds of the group that already have a FINISHED run on the same data, each with the
        id of its latest such run."""
        latest = {}
        for run in sorted(self.finished_group_runs(group, data_hash),
                          key=lambda run: run.info.end_time or 0):
            latest[int(run.data.tags["seed"])] = run.info.run_id
        return latest

    def mark_reused(self, run_ids: list[str], sweep_id: str, job_id: str) -> None:
        """Tag runs that job `job_id` of sweep `sweep_id` reused instead of training them."""
        for run_id in run_ids:
            _retrying(self.client.set_tag, run_id, REUSED_BY_TAG + sweep_id, job_id)

    def reused_runs(self, sweep_id: str) -> list[tuple[str, Any]]:
        """(job id, run) for each run that a job of sweep `sweep_id` reused."""
        key = REUSED_BY_TAG + sweep_id
        return [(run.data.tags[key], run) for run in self.search(f"tags.`{key}` LIKE '%'")]

    def start_runs(self, runs: list[tuple[str, dict[str, str]]]) -> list[str]:
        """New RUNNING runs from (name, tags), tagged with this process so a dead one can be
        found later; returns their ids."""
        mark = {"irrepro.host": socket.gethostname(), "irrepro.pid": str(os.getpid())}
        with _store_writes(self.uri):
            started = self.writer.start_runs(self.experiment_id,
                                             [(name, {**tags, **mark}) for name, tags in runs])
        self._artifact_uris.update(started)
        return [run_id for run_id, _ in started]

    def start_run(self, name: str, tags: dict[str, str]) -> str:
        """One new RUNNING run (see `start_runs`)."""
        return self.start_runs([(name, tags)])[0]

    def finish_runs(self, records: dict[str, RunRecord], files: dict[str, dict[str, bytes]]
                    ) -> None:
        """Write each run's artifact files (run id -> name -> contents), then log the runs'
        params, metrics and curves and mark them FINISHED together."""
        if not records:
            return
        with _store_writes(self.uri):
            try:
                self._check_room(records, files)
                for run_id in records:
                    self._write_artifacts(run_id, files[run_id])
                self.writer.finish_runs(records)
            except Exception:
                # A run that did not finish leaves no files (their space may be what ends runs)
                for run_id in records:
                    self._remove_artifacts(run_id)
                raise
        for run_id in records:
            self._artifact_uris.pop(run_id, None)

    def _check_room(self, records: dict[str, RunRecord], files: dict[str, dict[str, bytes]]
                    ) -> None:
        """Refuse to log runs (an ENOSPC OSError) where their rows and files would leave a
        disk less room than the store needs to record how the runs ended: a full disk stops a
        job while its runs can still be ended FAILED."""
        rows = sum(len(r.params) + len(r.metrics) + len(r.curve) + len(r.tags)
                   for r in records.values())
        reserve = ROOM_FOR_STORE + ROOM_PER_ROW * rows
        demand: dict[int, list] = {}  # device: [a folder on it, its nearest existing one, bytes]

        def add(path: Path, size: int) -> None:
            existing = next(p for p in (path, *path.parents) if p.exists())
            demand.setdefault(existing.stat().st_dev, [path, existing, reserve])[2] += size

        store = sqlite_path(self.uri)
        if store is not None:
            add(store.parent, 0)
        for run_id, contents in files.items():
            folder = local_artifact_folder(self._artifact_uris.get(run_id, ""))
            if folder is not None:
                add(folder, sum(map(len, contents.values())))
        for path, existing, size in demand.values():
            if shutil.disk_usage(existing).free < size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def _write_artifacts(self, run_id: str, files: dict[str, bytes]) -> None:
        """The files straight into the run's artifact folder when it is local (a path or a
        file: URI), else through MLflow's artifact repository for the run."""
        folder = local_artifact_folder(self._artifact_uris.get(run_id, ""))
        if folder is None:
            with tempfile.TemporaryDirectory() as staging:
                for name, contents in files.items():
                    (Path(staging) / name).write_bytes(contents)
                self.client.log_artifacts(run_id, staging)
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name, contents in files.items():
            try:
                (folder / name).write_bytes(contents)
            except OSError as error:
                error.filename = error.filename or str(folder / name)  # a failed write has none
                raise

    def _remove_artifacts(self, run_id: str) -> None:
        """Delete the local artifact folder of a run started here (the run's own folder,
        which MLflow made for it alone)."""
        folder = local_artifact_folder(self._artifact_uris.get(run_id, ""))
        if folder is not None:
            own = folder.name == "artifacts" and folder.parent.name == run_id
            shutil.rmtree(folder.parent if own else folder, ignore_errors=True)

    def end_runs(self, reasons: dict[str, str | None], status: str) -> None:
        """Terminate runs (run id -> reason or None); a FAILED or KILLED one carries its
        reason as a tag."""
        for run_id in reasons:
            self._artifact_uris.pop(run_id, None)
        with _store_writes(self.uri):
            self.writer.end_runs(reasons, status)

    def end_run(self, run_id: str, status: str, reason: str | None = None) -> None:
        """Terminate one run (see `end_runs`)."""
        self.end_runs({run_id: reason}, status)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Tag a run (retrying while SQLite reports a locked database)."""
        from mlflow.entities import RunTag

        _retrying(self.client.log_batch, run_id,
                  tags=[RunTag(key, value) for key, value in tags.items()])

    def log_values(self, run_id: str, values: dict[str, float]) -> None:
        """Log metrics of a run, at step 0 (retrying as `set_tags` does)."""
        from mlflow.entities import Metric

        _retrying(self.client.log_batch, run_id,
                  metrics=[Metric(key, value, 0, 0) for key, value in values.items()])

    def log_folder(self, run_id: str, folder: Path, artifact_path: str) -> None:
        """Copy a folder's files into a run's artifacts under `artifact_path`."""
        _retrying(self.client.log_artifacts, run_id, str(folder), artifact_path)

    def get_run(self, run_id: str) -> Any:
        """One run, by id."""
        return _retrying(self.client.get_run, run_id)

    def delete_run(self, run_id: str) -> None:
        """Move a run to MLflow's deleted lifecycle stage (searches no longer find it)."""
        _retrying(self.client.delete_run, run_id)

    def end_stale_runs(self) -> int:
        """Mark KILLED the RUNNING runs whose process on this host is gone; return how many."""
        host = socket.gethostname()
        stale = [
            run.info.run_id for run in self.search("attributes.status = 'RUNNING'")
            if run.data.tags.get("irrepro.host") == host
            and not _alive(int(run.data.tags.get("irrepro.pid", "0")))
        ]
        if stale:
            reason = "the process running it ended without a word"
            self.end_runs(dict.fromkeys(stale, reason), "KILLED")
        return len(stale)


@contextmanager
def _store_writes(uri: str) -> Iterator[None]:
    """Writes to the store at `uri`: one that fails for want of the store (see
    `_store_failure`) raises a one-line TrackingError; other errors propagate as they are."""
    try:
        yield
    except Exception as error:
        failure = _store_failure(error, uri)
        if failure is None:
            raise
        raise failure from error


def _store_failure(error: Exception, uri: str) -> TrackingError | None:
    """A write that failed for want of the store (a disk, the database) as one line: `<why>
    writing <file>`, or `<why> writing the tracking store <uri>`; None for other errors (a
    bad value), which propagate as they are."""
    if isinstance(error, TrackingError):
        return error
    if isinstance(error, OSError) and error.filename:
        return TrackingError(f"{(error.strerror or str(error)).lower()} writing {error.filename}")
    from sqlalchemy.exc import OperationalError

    causes, cause = [], error
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__
    if not any(isinstance(cause, OSError | OperationalError) for cause in causes):
        return None
    lines = str(error).strip().splitlines()
    why = lines[0] if lines else type(error).__name__
    why = why.split(") ", 1)[-1] if why.startswith("(") else why  # "(sqlite3.…Error) …"
    return TrackingError(f"{why} writing the tracking store {uri}")


class SweepClaim:
    """A sweep's hold on its experiment (see `Tracker.claim_sweep`)."""

    def __init__(self, handle):
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# MLflow's UI opens an experiment of this kind on its runs table, not on its GenAI page.
_KIND_TAG, _KIND = "mlflow.experimentKind", "custom_model_development"
# irrepro's view of the runs table, kept where the UI keeps a saved view (the UI lists it
# under Views; `runs_url` opens it): the values compared across seeds as the first columns, and
# the runs in name order, which also lists a sweep's runs flat, not collapsed under the parent.
_VIEW_KEY = "irrepro"
_VIEW_TAG = f"mlflow.sharedViewState.{_VIEW_KEY}"
_VIEW_COLUMNS = ("metrics.`excess_log_loss`", "metrics.`log_loss`", "metrics.`accuracy`",
                 "metrics.`converged`", "params.`seed`")


def ui_tags() -> dict[str, str]:
    """The experiment tags that make MLflow's UI show irrepro's runs as a table."""
    state = {"orderByKey": "tags.`mlflow.runName`", "orderByAsc": True,
             "selectedColumns": list(_VIEW_COLUMNS), "columnOrder": list(_VIEW_COLUMNS)}
    now = int(time.time() * 1000)
    view = {"name": _VIEW_KEY, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    return {_KIND_TAG: _KIND, _VIEW_TAG: json.dumps(view)}


def runs_url(base_url: str, experiment_id: str, tags: Mapping[str, str]) -> str:
    """The URL of an experiment's runs table in the MLflow UI at `base_url`: `workflowType` makes
    the UI open the table, not its GenAI page; with its experiment `tags` holding irrepro's view,
    the table opens in that view."""
    query = "workflowType=machine_learning"
    if _VIEW_TAG in tags:
        query += f"&viewStateShareKey={_VIEW_KEY}"
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def local_artifact_folder(artifact_uri: str) -> Path | None:
    """The folder of a local artifact URI (as MLflow maps it); None for a remote or unknown one."""
    if not artifact_uri or urllib.parse.urlparse(artifact_uri).scheme not in ("", "file"):
        return None
    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(artifact_uri))


def _check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast on a tracking server that does not answer (MLflow would retry for minutes)."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except OSError as error:
        raise TrackingError(f"tracking server {uri} does not answer: {error}") from error


def _check_database(uri: str, timeout: int = 5) -> None:
    """Fail fast on a PostgreSQL server that does not answer or lets no one in: MLflow would
    retry its first connection for two minutes, a warning each time."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(uri, poolclass=NullPool,
                                      connect_args={"connect_timeout": timeout})
    try:
        engine.connect().close()
    except Exception as error:  # the driver's, wrapped by SQLAlchemy, or a missing driver
        server = engine.url.render_as_string(hide_password=True)
        lines = str(getattr(error, "orig", None) or error).strip().splitlines()
        raise TrackingError(f"database {server} does not answer: "
                            f"{lines[0] if lines else type(error).__name__}") from error
    finally:
        engine.dispose()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

