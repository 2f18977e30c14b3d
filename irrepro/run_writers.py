"""Writing a job's runs to MLflow: one client call per run for any store, or one transaction
per step for a SQL database reached directly.

Both writers leave the same runs behind (same columns, tags, params, metrics, metric history
and latest metrics, as MLflow's own `create_run`, `log_batch` and `set_terminated` write
them); tests/test_run_writers.py compares them row by row.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """What a finished run logs besides its artifacts."""

    params: dict[str, Any]
    metrics: dict[str, float]
    curve: list[tuple[int, float]]  # (step, training loss)
    tags: dict[str, str] = field(default_factory=dict)


def _now() -> int:
    return int(time.time() * 1000)


def _once(call, *args, **kwargs):
    return call(*args, **kwargs)


class ClientWriter:
    """Through MLflow's client, run by run: a tracking server, or any other store. `retry`
    makes each call (`retry(call, *args)`), so that a retry never repeats an earlier one."""

    def __init__(self, client, retry=_once):
        self.client, self.retry = client, retry

    def start_runs(self, experiment_id: str, runs: list[tuple[str, dict[str, str]]]
                   ) -> list[tuple[str, str]]:
        """New RUNNING runs from (name, tags); returns (run id, artifact URI) of each."""
        started = []
        for name, tags in runs:
            run = self.retry(self.client.create_run, experiment_id, tags=tags, run_name=name)
            started.append((run.info.run_id, run.info.artifact_uri))
        return started

    def finish_runs(self, records: dict[str, RunRecord]) -> None:
        """Log each run's params, metrics, curve and tags, then mark it FINISHED."""
        from mlflow.entities import Metric, Param, RunTag

        for run_id, record in records.items():
            now = _now()
            self.retry(
                self.client.log_batch, run_id,
                metrics=[Metric(key, value, now, step) for key, value, step in _entries(record)],
                params=[Param(key, str(value)) for key, value in record.params.items()],
                tags=[RunTag(key, value) for key, value in record.tags.items()],
            )
            self.retry(self.client.set_terminated, run_id, status="FINISHED")

    def end_runs(self, reasons: dict[str, str | None], status: str) -> None:
        """Terminate runs with `status`; a reason, where given, is the run's failure_reason."""
        for run_id, reason in reasons.items():
            if reason:
                self.retry(self.client.set_tag, run_id, "failure_reason", reason[:5000])
            self.retry(self.client.set_terminated, run_id, status=status)


class SqlWriter:
    """Straight into MLflow's SQL store through its own models, one transaction per call:
    a job's K runs start in one transaction and end in another, instead of six per run.
    `retry` makes each transaction (`retry(call)`), whole: a failed one leaves nothing."""

    def __init__(self, client, retry=_once):
        self.client = client  # pickles, unlike its store: launchers ship trackers to workers
        self.retry = retry

    @property
    def store(self):
        """The client's store (MLflow keeps one per URI)."""
        return self.client._tracking_client.store

    def start_runs(self, experiment_id: str, runs: list[tuple[str, dict[str, str]]]
                   ) -> list[tuple[str, str]]:
        from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag
        from mlflow.utils.uri import append_to_uri_path

        experiment = self.store.get_experiment(experiment_id)
        if experiment.lifecycle_stage != "active":
            raise ValueError(f"experiment {experiment_id} is deleted")
        now, started, rows = _now(), [], []
        for name, tags in runs:
            run_id = uuid.uuid4().hex
            artifact_uri = append_to_uri_path(experiment.artifact_location, run_id, "artifacts")
            _, tags = _validated({}, {**tags, "mlflow.runName": name})
            rows.append(SqlRun(
                run_uuid=run_id, name=name, artifact_uri=artifact_uri,
                experiment_id=experiment_id, source_type="UNKNOWN", source_name="",
                entry_point_name="", user_id=tags.get("mlflow.user", "unknown"),
                status="RUNNING", start_time=now, end_time=None, deleted_time=None,
                source_version="", lifecycle_stage="active",
                tags=[SqlTag(key=key, value=value) for key, value in tags.items()],
            ))
            started.append((run_id, artifact_uri))
        self.retry(self._transaction, lambda session: session.add_all(rows))
        return started

    def finish_runs(self, records: dict[str, RunRecord]) -> None:
        from mlflow.store.tracking.dbmodels.models import (
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlTag,
        )

        rows, tags = [], []
        for run_id, record in records.items():
            now = _now()
            entries = list(dict.fromkeys(_entries(record)))  # MLflow drops repeated entries
            params, checked = _validated(record.params, record.tags,
                                         [(key, value, now, step) for key, value, step in entries])
            tags += [SqlTag(run_uuid=run_id, key=key, value=value)
                     for key, value in checked.items()]
            latest: dict[str, SqlMetric] = {}
            for key, value, step in entries:
                is_nan, stored = self.store.sanitize_metric_value(value)
                metric = SqlMetric(run_uuid=run_id, key=key, value=stored, timestamp=now,
                                   step=step, is_nan=is_nan)
                rows.append(metric)
                held = latest.get(key)
                if held is None or (step, now, stored) > (held.step, held.timestamp, held.value):
                    latest[key] = metric
            rows += [SqlLatestMetric(run_uuid=run_id, key=m.key, value=m.value,
                                     timestamp=m.timestamp, step=m.step, is_nan=m.is_nan)
                     for m in latest.values()]
            rows += [SqlParam(run_uuid=run_id, key=key, value=value)
                     for key, value in params.items()]
        def finish(session):
            self._terminate(session, list(records), "FINISHED")
            # A tag set again replaces its value, as MLflow's set_tag does: the old rows go
            # in one statement, then every row is added at once.
            keys = {tag.key for tag in tags}
            if keys:
                session.query(SqlTag).filter(SqlTag.run_uuid.in_(list(records)),
                                             SqlTag.key.in_(keys)
                                             ).delete(synchronize_session=False)
            session.add_all(rows + tags)

        self.retry(self._transaction, finish)

    def end_runs(self, reasons: dict[str, str | None], status: str) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlTag

        def end(session):
            self._terminate(session, list(reasons), status)
            for run_id, reason in reasons.items():
                if reason:
                    session.merge(SqlTag(run_uuid=run_id, key="failure_reason",
                                         value=reason[:5000]))

        self.retry(self._transaction, end)

    def _transaction(self, write) -> None:
        """`write(session)` in one transaction of the store: committed, or rolled back."""
        with self.store.ManagedSessionMaker(read_only=False) as session:
            write(session)

    @staticmethod
    def _terminate(session, run_ids: list[str], status: str) -> None:
        """Set status and end time of active runs; fail (rolling back) if any is not active."""
        from mlflow.store.tracking.dbmodels.models import SqlRun

        updated = (
            session.query(SqlRun)
            .filter(SqlRun.run_uuid.in_(run_ids), SqlRun.lifecycle_stage == "active")
            .update({SqlRun.status: status, SqlRun.end_time: _now()},
                    synchronize_session=False)
        )
        if updated != len(set(run_ids)):
            raise ValueError(f"{len(set(run_ids)) - updated} of the runs are gone or deleted")


def _entries(record: RunRecord) -> list[tuple[str, float, int]]:
    """A run's metric entries (key, value, step): its metrics at step 0, then its curve."""
    entries = [(key, float(value), 0) for key, value in record.metrics.items()]
    return entries + [("train_loss", float(loss), int(step)) for step, loss in record.curve]


def _validated(params: dict[str, Any], tags: dict[str, str],
               metrics: list[tuple[str, float, int, int]] = ()
               ) -> tuple[dict[str, str], dict[str, str]]:
    """Params and tags as MLflow's client would store them (long values truncated), after its
    own checks of every key and value."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.validation import _validate_batch_log_data

    _, checked_params, checked_tags = _validate_batch_log_data(
        [Metric(*entry) for entry in metrics],
        [Param(key, str(value)) for key, value in params.items()],
        [RunTag(key, value) for key, value in tags.items()],
    )
    return ({p.key: p.value for p in checked_params}, {t.key: t.value for t in checked_tags})


# MLflow's schema revisions (alembic_version in the database) whose tables the SQL writer
# has been checked against, on SQLite and PostgreSQL (tests/test_run_writers.py compares
# the rows it writes with those MLflow's client writes): "dc11669786a5", MLflow 3.17.
CHECKED_REVISIONS = frozenset({"dc11669786a5"})


def writer_for(client, retry=_once):
    """The SQL writer where it is known to be right: a database reached directly, at a schema
    revision it was checked against, through an MLflow that still has the internals it uses;
    else the client writer (with a log line saying why, but for a tracking server)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        writer = SqlWriter(client, retry)
        store = writer.store
        if not isinstance(store, SqlAlchemyStore):
            return ClientWriter(client, retry)
        from mlflow.store.tracking.dbmodels import models
        from mlflow.utils.validation import _validate_batch_log_data  # noqa: F401

        for name in ("SqlRun", "SqlTag", "SqlParam", "SqlMetric", "SqlLatestMetric"):
            getattr(models, name)
        store.ManagedSessionMaker  # noqa: B018
        revision = schema_revision(store.engine)
    except (ImportError, AttributeError) as error:
        log.info("runs are written through MLflow's client: this MLflow lacks what the bulk "
                 "writer uses (%s)", error)
        return ClientWriter(client, retry)
    if revision not in CHECKED_REVISIONS:
        log.info("runs are written through MLflow's client: the store's schema revision %s is "
                 "not one the bulk writer was checked against", revision)
        return ClientWriter(client, retry)
    return writer


def schema_revision(engine) -> str | None:
    """The alembic revision of MLflow's schema in a database (None where it has none)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None
