"""The tracking store: made whole or not at all, and failing fast where it cannot be reached."""

import multiprocessing
import os
import socket
import time

import pytest

from irrepro.tracking import CREATING, Tracker, TrackingError
from tests.cli import free_port, runs, start_train, store_uri

KILLS = 16


def test_a_store_killed_while_it_is_made_is_absent_or_whole(tmp_path):
    # Processes forked from one that has imported MLflow each make a new store, and each is
    # killed at another moment of the time one takes to make it and exit (measured first).
    # Every store left is opened and used; of the absent ones, the two killed last (furthest
    # migrated) are made again beside their leftovers.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["irrepro.tracking", "mlflow.store.db.utils",
                                    "mlflow.store.tracking.sqlalchemy_store"])

    def make(path):
        process = context.Process(target=Tracker, args=(f"sqlite:///{path}", "irrepro"))
        process.start()
        return process

    ready = context.Process(target=time.sleep, args=(0,))  # the server's imports: not timed
    ready.start()
    ready.join()
    started = time.perf_counter()
    whole = make(tmp_path / "whole.db")
    whole.join()
    duration = time.perf_counter() - started
    assert whole.exitcode == 0
    paths = [tmp_path / f"killed{index}.db" for index in range(KILLS)]
    for index, path in enumerate(paths):
        process = make(path)
        time.sleep(duration * index / (KILLS - 1))
        process.kill()
        process.join()
    absent = [path for path in paths if not path.exists()]
    midway = [path for path in absent if list(tmp_path.glob(f"{path.name}{CREATING}*"))]
    for path in [path for path in paths if path.exists()] + absent[-2:]:
        tracker = Tracker(f"sqlite:///{path}", "irrepro")
        run_id = tracker.start_run("run", {})
        tracker.end_run(run_id, "FINISHED")
        assert [run.info.run_id for run in tracker.search("")] == [run_id]
        assert not list(tmp_path.glob(f"{path.name}{CREATING}*"))
    assert len(midway) >= KILLS // 4  # killed while the store was being made


def test_a_postgresql_store_that_does_not_answer_fails_at_once_in_one_line(caplog):
    port = free_port()  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(TrackingError) as error:
        Tracker(f"postgresql://irrepro:secret@127.0.0.1:{port}/irrepro", "irrepro")
    assert time.perf_counter() - started < 15
    assert str(error.value).startswith(
        f"database postgresql://irrepro:***@127.0.0.1:{port}/irrepro does not answer: ")
    assert "\n" not in str(error.value) and "secret" not in str(error.value)
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


def test_a_claimed_experiment_refuses_a_second_sweep_until_released(tmp_path):
    tracker = Tracker(store_uri(tmp_path), "claimed")
    first = tracker.claim_sweep("first")
    with pytest.raises(TrackingError, match=r"^experiment 'claimed' is being swept by sweep first "
                                            rf"\(pid {os.getpid()} on .*\): wait for it to end"):
        Tracker(tracker.uri, "claimed").claim_sweep("second")
    Tracker(tracker.uri, "other").claim_sweep("elsewhere").release()  # another experiment
    first.release()
    tracker.claim_sweep("third").release()


def test_of_two_sweeps_of_one_experiment_started_at_once_one_stops_naming_the_other(tmp_path):
    store_uri(tmp_path)
    args = ["-m", "seed=range(4)", "data.n_train=20000", "hydra.sweeper.max_replicas=1"]
    sweeps = [start_train([*args, f"hydra.sweep.dir={tmp_path}/multirun{index}"], tmp_path)
              for index in range(2)]
    errors = [sweep.communicate(timeout=300)[1] for sweep in sweeps]
    assert sorted(sweep.returncode for sweep in sweeps) == [0, 2], errors
    parents = [run for run in runs(tmp_path) if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    (refused,) = [index for index, sweep in enumerate(sweeps) if sweep.returncode == 2]
    holder = sweeps[1 - refused]
    assert errors[refused].strip() == (
        f"train.py: error: experiment 'irrepro' is being swept by sweep "
        f"{parents[0].data.tags['sweep_id']} (pid {holder.pid} on {socket.gethostname()}): "
        "wait for it to end, or sweep into another tracking.experiment")
    seeds = [run.data.tags["seed"] for run in runs(tmp_path) if run.info.status == "FINISHED"
             and "mlflow.parentRunId" in run.data.tags]
    assert sorted(seeds) == ["0", "1", "2", "3"]  # each trained once
