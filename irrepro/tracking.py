"""MLflow bookkeeping: the store, run lifecycle, batched logging, resume and stale-run queries.

`mlflow` is imported lazily: it is heavy, and `--help` or a config error should answer at once.
"""

from __future__ import annotations

import fcntl
import glob
import os
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from irrepro.run_writers import RunRecord, writer_for

PARENT_RUN_ENV = "IRREPRO_PARENT_RUN_ID"
SWEEP_ID_ENV = "IRREPRO_SWEEP_ID"
PREDICTIONS = "predictions.npy"
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


class Tracker:
    """One experiment in one tracking store."""

    def __init__(self, uri: str, experiment: str, create: bool = True):
        from mlflow.tracking import MlflowClient

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
        """The experiment's id; a new one is created (when `create`) tagged as model training,
        so that MLflow's UI opens it on its runs table, not its GenAI page."""
        kind_tag, kind = "mlflow.experimentKind", "custom_model_development"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if create and kind_tag not in found.tags:  # made before irrepro tagged them
                self.client.set_experiment_tag(found.experiment_id, kind_tag, kind)
            return found.experiment_id
        if not create:
            raise TrackingError(f"no experiment named {name!r} in {self.uri}")
        path = sqlite_path(self.uri)
        location = (path.parent / "mlartifacts").as_uri() if path else None
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={kind_tag: kind})
        except Exception:  # another process created it first (servers are not locked here)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def runs_url(self) -> str | None:
        """The experiment's runs table in the UI of a tracking server; None for a store with
        no UI of its own. `workflowType` makes MLflow open the table, not its GenAI page."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        return runs_url(self.uri, self.experiment_id)

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
        folder = _local_folder(run.info.artifact_uri)
        if folder is not None:
            return (folder / name).read_bytes()
        import mlflow

        with tempfile.TemporaryDirectory() as staging:
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path=name, tracking_uri=self.uri,
                dst_path=staging)
            return Path(path).read_bytes()

    def finished_seeds(self, group: str, data_hash: str) -> set[int]:
        """Seeds of the group that already have a FINISHED run on the same data."""
        runs = self.search(
            f"tags.group_key = '{group}' and tags.data_hash = '{data_hash}' "
            "and attributes.status = 'FINISHED'"
        )
        return {int(run.data.tags["seed"]) for run in runs}

    def start_runs(self, runs: list[tuple[str, dict[str, str]]]) -> list[str]:
        """New RUNNING runs from (name, tags), tagged with this process so a dead one can be
        found later; returns their ids."""
        mark = {"irrepro.host": socket.gethostname(), "irrepro.pid": str(os.getpid())}
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
        for run_id in records:
            self._write_artifacts(run_id, files[run_id])
        self.writer.finish_runs(records)

    def _write_artifacts(self, run_id: str, files: dict[str, bytes]) -> None:
        """The files straight into the run's artifact folder when it is local (a path or a
        file: URI), else through MLflow's artifact repository for the run."""
        folder = _local_folder(self._artifact_uris.pop(run_id, ""))
        if folder is None:
            with tempfile.TemporaryDirectory() as staging:
                for name, contents in files.items():
                    (Path(staging) / name).write_bytes(contents)
                self.client.log_artifacts(run_id, staging)
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name, contents in files.items():
            (folder / name).write_bytes(contents)

    def end_runs(self, reasons: dict[str, str | None], status: str) -> None:
        """Terminate runs (run id -> reason or None); a FAILED or KILLED one carries its
        reason as a tag."""
        for run_id in reasons:
            self._artifact_uris.pop(run_id, None)
        self.writer.end_runs(reasons, status)

    def end_run(self, run_id: str, status: str, reason: str | None = None) -> None:
        """Terminate one run (see `end_runs`)."""
        self.end_runs({run_id: reason}, status)

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


class SweepClaim:
    """A sweep's hold on its experiment (see `Tracker.claim_sweep`)."""

    def __init__(self, handle):
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def runs_url(base_url: str, experiment_id: str) -> str:
    """The URL of an experiment's runs table in the MLflow UI at `base_url`."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def _local_folder(artifact_uri: str) -> Path | None:
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

