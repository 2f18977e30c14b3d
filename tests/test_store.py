"""The tracking store: made whole or not at all, and failing fast where it cannot be reached."""

import multiprocessing
import time

import pytest

from irrepro.tracking import CREATING, Tracker, TrackingError
from tests.cli import free_port

KILLS = 16


def test_a_store_killed_while_it_is_made_is_absent_or_whole(tmp_path):
    # Processes forked from one that has imported MLflow make a store in a few seconds at most;
    # each is killed at another moment of the measured time it takes.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["irrepro.tracking", "mlflow.store.db.utils",
                                    "mlflow.store.tracking.sqlalchemy_store"])

    def make(path):
        process = context.Process(target=Tracker, args=(f"sqlite:///{path}", "irrepro"))
        process.start()
        return process

    started = time.perf_counter()
    make(tmp_path / "whole.db").join()
    duration = time.perf_counter() - started
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
