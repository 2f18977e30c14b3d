"""A job's runs always end: FINISHED, FAILED with a reason, or KILLED."""

import math
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from irrepro import job, tracking
from irrepro.job import run_job
from irrepro.tracking import Tracker, TrackingError
from tests.cli import store_uri
from tests.conftest import make_config


def test_a_crash_while_logging_fails_every_open_run(tmp_path, monkeypatch):
    tracker = Tracker(store_uri(tmp_path), "crash")

    def full(records):
        raise OSError("disk full")

    monkeypatch.setattr(tracker.writer, "finish_runs", full)
    with pytest.raises(TrackingError, match="^disk full writing the tracking store sqlite:"):
        run_job(make_config(replicas=3), tracker)
    runs = tracker.search("")
    assert sorted(r.info.status for r in runs) == ["FAILED"] * 3
    [reason] = {r.data.tags.get("failure_reason") for r in runs}
    assert reason.startswith("TrackingError: disk full writing the tracking store")
    assert not list((tmp_path / "mlartifacts").glob("*/artifacts/*"))  # no half-logged run
    monkeypatch.undo()
    summary = run_job(make_config(replicas=3), tracker)  # the next run redoes them all
    assert sorted(summary.finished) == [0, 1, 2] and summary.skipped == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop
@pytest.mark.parametrize("signum, error, reason", [
    (signal.SIGTERM, job.Terminated, "Terminated: signal SIGTERM"),
    (signal.SIGINT, KeyboardInterrupt, "KeyboardInterrupt: SIGINT"),
])
def test_a_signal_whose_exception_a_finalizer_dropped_still_kills_the_runs(
        tmp_path, monkeypatch, request, signum, error, reason):
    tracker = Tracker(store_uri(tmp_path), "dropped")
    train = job.train_replicas
    # Ctrl-C raises, as in a terminal (the workers of pytest -n ignore it)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, before))

    class SignalsWhenCollected:
        def __del__(self):
            os.kill(os.getpid(), signum)
            time.sleep(0.5)  # the handler raises here, and Python drops the exception

    def training(*args):
        SignalsWhenCollected()  # collected at once, while training
        return train(*args)

    monkeypatch.setattr(job, "train_replicas", training)
    with pytest.raises(error):
        run_job(make_config(replicas=2), tracker)
    runs = tracker.search("")
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]
    assert {r.data.tags["failure_reason"] for r in runs} == {reason}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_an_ignored_ctrl_c_stays_ignored_while_training(tmp_path, request):
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, before))
    seen = []
    train = job.train_replicas

    def training(*args):
        seen.append(signal.getsignal(signal.SIGINT))
        os.kill(os.getpid(), signal.SIGINT)
        return train(*args)

    job.train_replicas, saved = training, job.train_replicas
    request.addfinalizer(lambda: setattr(job, "train_replicas", saved))
    summary = run_job(make_config(replicas=2), Tracker(store_uri(tmp_path), "ignored"))
    assert seen == [signal.SIG_IGN] and sorted(summary.finished) == [0, 1]


def test_a_sweep_records_the_finished_runs_it_reuses(tmp_path, monkeypatch):
    tracker = Tracker(store_uri(tmp_path), "reuse")
    first = run_job(make_config(replicas=2), tracker)  # outside a sweep: nothing to record
    assert run_job(make_config(replicas=2), tracker).skipped == [0, 1]
    assert not any(key.startswith(tracking.REUSED_BY_TAG)
                   for run in tracker.search("") for key in run.data.tags)
    monkeypatch.setenv(tracking.SWEEP_ID_ENV, "sweep2")
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, tracker.start_run("sweep-sweep2", {}))
    summary = run_job(make_config(replicas=3), tracker, job_id="sweep2-0")
    assert summary.skipped == [0, 1] and list(summary.finished) == [2]
    reused = tracker.reused_runs("sweep2")
    assert sorted(run.info.run_id for _, run in reused) == sorted(first.finished.values())
    assert {job_id for job_id, _ in reused} == {"sweep2-0"}
    assert tracker.reused_runs("another-sweep") == []


def test_a_test_file_of_one_class_finishes_its_runs_with_auc_missing(tmp_path):
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"x": rng.normal(size=60), "y": np.resize([0, 1], 60)})
    rows.to_csv(tmp_path / "train.csv", index=False)
    rows[rows.y == 1].to_csv(tmp_path / "test.csv", index=False)
    config = make_config(replicas=2, **{
        "data.name": "table", "data.path": str(tmp_path / "train.csv"), "data.label": "y",
        "data.test_path": str(tmp_path / "test.csv")})
    tracker = Tracker(store_uri(tmp_path), "one-class")
    assert sorted(run_job(config, tracker).finished) == [0, 1]
    for run in tracker.search(""):
        assert math.isnan(run.data.metrics["auc"]) and run.data.metrics["accuracy"] >= 0
