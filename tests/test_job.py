"""A job's runs always end: FINISHED, FAILED with a reason, or KILLED."""

import pytest

from irrepro.job import run_job
from irrepro.tracking import Tracker
from tests.conftest import make_config


def test_a_crash_while_logging_fails_every_open_run(tmp_path, monkeypatch):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "crash")

    def full(records):
        raise OSError("disk full")

    monkeypatch.setattr(tracker.writer, "finish_runs", full)
    with pytest.raises(OSError, match="disk full"):
        run_job(make_config(replicas=3), tracker)
    runs = tracker.search("")
    assert sorted(r.info.status for r in runs) == ["FAILED"] * 3
    assert {r.data.tags.get("failure_reason") for r in runs} == {"OSError: disk full"}
    monkeypatch.undo()
    summary = run_job(make_config(replicas=3), tracker)  # the next run redoes them all
    assert sorted(summary.finished) == [0, 1, 2] and summary.skipped == []
