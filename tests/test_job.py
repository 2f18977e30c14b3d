"""A job's runs always end: FINISHED, FAILED with a reason, or KILLED."""

import pytest

from irrepro.job import run_job
from irrepro.tracking import Tracker
from tests.conftest import make_config


def test_a_crash_while_logging_fails_the_open_runs_and_keeps_the_finished(tmp_path, monkeypatch):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "crash")
    log_finished = tracker.log_finished
    calls = []

    def flaky(run_id, *args):
        calls.append(run_id)
        if len(calls) == 2:
            raise OSError("disk full")
        return log_finished(run_id, *args)

    monkeypatch.setattr(tracker, "log_finished", flaky)
    with pytest.raises(OSError, match="disk full"):
        run_job(make_config(replicas=3), tracker)
    statuses = sorted(r.info.status for r in tracker.search(""))
    assert statuses == ["FAILED", "FAILED", "FINISHED"]
    reasons = {r.data.tags.get("failure_reason") for r in tracker.search("")}
    assert "OSError: disk full" in reasons
    monkeypatch.undo()
    summary = run_job(make_config(replicas=3), tracker)  # the next run redoes the failed seeds
    assert sorted(summary.finished) == [1, 2] and summary.skipped == [0]
