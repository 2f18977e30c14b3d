"""The SQL writer leaves exactly the runs MLflow's client would, in fewer transactions."""

import math

import pytest
from mlflow.exceptions import MlflowException

from irrepro import tracking
from irrepro.job import run_job
from irrepro.run_writers import ClientWriter, RunRecord, SqlWriter
from tests.cli import store_uri
from tests.conftest import make_config

# Identify the writing process or job, not the run.
UNIQUE_TAGS = {"job_id", "irrepro.pid"}
TIMED = "job_train_seconds"


def writer_pair(uri):
    """Two experiments of one SQL store: one written in bulk, one through MLflow's client."""
    sql = tracking.Tracker(uri, "sql")
    assert isinstance(sql.writer, SqlWriter)  # a database reached directly is written in bulk
    client = tracking.Tracker(uri, "client")
    client.writer = ClientWriter(client.client)
    return sql, client


@pytest.fixture
def trackers(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.SWEEP_ID_ENV, "sweep")
    return writer_pair(store_uri(tmp_path))


def comparable(value):
    """NaN as a string, so that equal runs compare equal."""
    return "nan" if math.isnan(value) else value


def described(tracker, run):
    """Everything MLflow shows of a run but its ids and times."""
    info, data = run.info, run.data
    metrics = {key: comparable(value) for key, value in data.metrics.items() if key != TIMED}
    history = {key: sorted((m.step, comparable(m.value))
                           for m in tracker.client.get_metric_history(info.run_id, key))
               for key in metrics}
    return {
        "name": info.run_name, "status": info.status, "stage": info.lifecycle_stage,
        "user": info.user_id, "ended": info.end_time >= info.start_time,
        "artifacts": info.artifact_uri.endswith(f"/{info.run_id}/artifacts"),
        "files": sorted(f.path for f in tracker.client.list_artifacts(info.run_id)),
        "params": data.params, "metrics": metrics, "timed": data.metrics.get(TIMED, 0) >= 0,
        "tags": {k: v for k, v in data.tags.items() if k not in UNIQUE_TAGS},
        "history": history,
    }


# The tables a run's rows live in, and the columns that differ between two equal runs.
RUN_TABLES = ("runs", "tags", "params", "metrics", "latest_metrics")
TIME_COLUMNS = {"start_time", "end_time", "timestamp", "experiment_id"}


def table_rows(tracker):
    """Every row that MLflow's tables hold for the experiment's runs, every column, as
    comparable values: ids become seeds, times are left out, and so is what identifies the
    writing process or the job's time."""
    from sqlalchemy import text

    runs = tracker.search("")
    seeds = {run.info.run_id: run.data.tags["seed"] for run in runs}
    ids = ", ".join(f"'{run_id}'" for run_id in seeds)
    found = {}
    with SqlWriter(tracker.client).store.engine.connect() as connection:
        for table in RUN_TABLES:
            result = connection.execute(text(f"SELECT * FROM {table} WHERE run_uuid IN ({ids})"))
            rows = []
            for row in result.mappings():
                row = {key: value for key, value in row.items() if key not in TIME_COLUMNS}
                run_id = row.pop("run_uuid")
                if row.get("key") in UNIQUE_TAGS | {TIMED}:
                    row["value"] = "(differs)"
                if "artifact_uri" in row:
                    row["artifact_uri"] = row["artifact_uri"].endswith(f"/{run_id}/artifacts")
                rows.append((seeds[run_id], sorted(row.items(), key=str)))
            found[table] = sorted(rows, key=str)
    return found


def by_seed(tracker, filter_string=""):
    return {run.data.tags["seed"]: described(tracker, run)
            for run in tracker.search(filter_string)}


def test_a_job_logs_the_same_runs_through_either_writer(trackers):
    assert_a_job_logs_alike(*trackers)


def assert_a_job_logs_alike(sql, client):
    """A 3-seed job with checkpoints, run against each tracker, leaves the same runs."""
    for tracker in (sql, client):
        run_job(make_config(replicas=3, **{"train.checkpoints": 3}), tracker)
    logged = by_seed(sql)
    assert sorted(logged) == ["0", "1", "2"]
    assert logged == by_seed(client)
    rows = table_rows(sql)
    assert rows == table_rows(client)
    assert len(rows["runs"]) == 3 and len(rows["latest_metrics"]) > 3 * 10
    run = logged["1"]
    assert run["status"] == "FINISHED" and run["user"] == "unknown" and run["ended"]
    assert run["artifacts"] and run["files"] == sorted(
        ["checkpoints.npz", "classes.json", "config.yaml", "predictions.npy"])
    assert run["tags"]["mlflow.runName"] == run["name"] and run["params"]["seed"] == "1"
    assert len(run["history"]["train_loss"]) > 2
    assert run["tags"]["convergence_reason"] == "too few updates in the last tenth: 4 < 20"
    assert run["metrics"]["converged"] == 0.0
    # MLflow's own queries see the same runs.
    query = "metrics.accuracy > 0.5 and params.`model.name` = 'two_units'"
    assert sorted(by_seed(sql, query)) == sorted(by_seed(client, query)) == ["0", "1", "2"]


def test_awkward_metrics_are_stored_as_mlflow_stores_them(trackers):
    record = RunRecord(
        params={"depth": 2, "note": "a b"},
        metrics={"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "zero": 0.0},
        curve=[(0, 1.0), (5, 0.5), (5, 0.5), (5, 0.25), (9, math.nan)],
    )
    seen = []
    for tracker in trackers:
        run_id = tracker.start_run("odd", {"seed": "0"})
        tracker.finish_runs({run_id: record}, {run_id: {}})
        seen.append(described(tracker, tracker.client.get_run(run_id)))
    assert seen[0] == seen[1]
    assert seen[0]["metrics"]["inf"] == 1.7976931348623157e308
    assert seen[0]["metrics"]["train_loss"] == "nan"  # the latest step wins, NaN or not
    assert seen[0]["history"]["train_loss"] == [(0, 1.0), (5, 0.25), (5, 0.5), (9, "nan")]


def test_a_record_s_tags_are_set_as_mlflow_sets_them(trackers):
    seen = []
    for tracker in trackers:
        run_id = tracker.start_run("tagged", {"seed": "0", "note": "started"})
        record = RunRecord({}, {}, [], tags={"note": "finished", "reason": "r" * 9000})
        tracker.finish_runs({run_id: record}, {run_id: {}})
        seen.append(described(tracker, tracker.client.get_run(run_id)))
    assert seen[0] == seen[1]
    assert seen[0]["tags"]["note"] == "finished" and seen[0]["tags"]["seed"] == "0"
    assert seen[0]["tags"]["reason"] == "r" * 8000


def test_failures_end_the_same_way_through_either_writer(trackers):
    seen = []
    for tracker in trackers:
        ids = tracker.start_runs([("a", {"seed": "0"}), ("b", {"seed": "1"})])
        tracker.end_runs({ids[0]: "ValueError: diverged", ids[1]: None}, "FAILED")
        seen.append(by_seed(tracker))
    assert seen[0] == seen[1]
    assert seen[0]["0"]["tags"]["failure_reason"] == "ValueError: diverged"
    assert "failure_reason" not in seen[0]["1"]["tags"]
    assert {run["status"] for run in seen[0].values()} == {"FAILED"}


def test_values_are_checked_and_truncated_as_mlflow_does(trackers):
    seen = []
    for tracker in trackers:
        run_id = tracker.start_run("long", {"seed": "0"})
        with pytest.raises(MlflowException, match="Invalid value"):
            tracker.finish_runs({run_id: RunRecord({"bad key!": 1}, {}, [])}, {run_id: {}})
        assert tracker.client.get_run(run_id).info.status == "RUNNING"
        tracker.finish_runs({run_id: RunRecord({"kwargs": "x" * 6001}, {}, [])}, {run_id: {}})
        seen.append(described(tracker, tracker.client.get_run(run_id)))
    assert seen[0] == seen[1] and seen[0]["params"]["kwargs"] == "x" * 6000


def test_finishing_is_all_or_nothing(trackers):
    sql, _ = trackers
    kept, deleted = sql.start_runs([("kept", {"seed": "0"}), ("deleted", {"seed": "1"})])
    sql.client.delete_run(deleted)
    record = RunRecord({"depth": 1}, {"accuracy": 0.9}, [(0, 0.7)])
    with pytest.raises(MlflowException, match="1 of the runs are gone or deleted"):
        sql.finish_runs({kept: record, deleted: record}, {kept: {}, deleted: {}})
    run = sql.client.get_run(kept)
    assert run.info.status == "RUNNING" and not run.data.params and not run.data.metrics


def test_a_schema_revision_not_checked_is_written_through_the_client(tmp_path, monkeypatch,
                                                                      caplog):
    from irrepro import run_writers

    uri = store_uri(tmp_path)
    assert run_writers.schema_revision(tracking.Tracker(uri, "x").writer.store.engine) in (
        run_writers.CHECKED_REVISIONS)
    monkeypatch.setattr(run_writers, "CHECKED_REVISIONS", frozenset({"another"}))
    with caplog.at_level("INFO", logger="irrepro.run_writers"):
        tracker = tracking.Tracker(uri, "x")
    assert isinstance(tracker.writer, ClientWriter)
    assert "schema revision dc11669786a5 is not one the bulk writer was checked against" in (
        caplog.text)
