"""Parallel and cluster launchers, parallel writers, and crash safety on one SQLite store."""

import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest

from tests.cli import client, migrated_store, runs, start_train, store_uri, train


def finished_children(cwd):
    return [r for r in runs(cwd) if r.info.status == "FINISHED"
            and "mlflow.parentRunId" in r.data.tags]


def assert_complete(cwd, seeds):
    done = finished_children(cwd)
    assert sorted(int(r.data.tags["seed"]) for r in done) == sorted(seeds)
    assert len({r.data.tags["mlflow.parentRunId"] for r in done}) == 1
    for run in done:
        path = client(cwd).download_artifacts(run.info.run_id, "predictions.npy", str(cwd))
        assert np.load(path).shape == (64,)


@pytest.mark.parametrize("launcher", ["local_parallel", "local_cluster"])
def test_an_eight_job_sweep_through_a_launcher_loses_nothing(tmp_path, launcher):
    # local_parallel: eight one-seed jobs on its two processes
    extra = ["hydra.sweeper.max_replicas=1"] if launcher == "local_parallel" else []
    train(["-m", f"hydra/launcher={launcher}", "seed=range(8)", *extra], tmp_path)
    assert_complete(tmp_path, range(8))
    assert not [r for r in runs(tmp_path) if r.info.status == "RUNNING"]


def test_parallel_writers_on_a_new_store_lose_no_run(tmp_path):
    processes = [start_train([f"seed={5 * i}", "replicas=5", f"hydra.run.dir={tmp_path}/out{i}"],
                             tmp_path) for i in range(4)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    finished = [r for r in runs(tmp_path) if r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["seed"]) for r in finished) == list(range(20))


def test_a_sweep_killed_mid_way_resumes_without_retraining(tmp_path):
    # One seed per job, so that the kill lands between jobs.
    args = ["-m", "seed=range(8)", "data.n_train=20000", "hydra.sweeper.max_replicas=1"]
    process = start_train(args, tmp_path)
    deadline = time.time() + 180
    while time.time() < deadline and len(finished_children(tmp_path)) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = {r.data.tags["seed"]: r.info.run_id for r in finished_children(tmp_path)}
    assert 2 <= len(before) < 8
    assert any(r.info.status == "RUNNING" for r in runs(tmp_path))

    train(args, tmp_path)
    everything = runs(tmp_path)
    assert not [r for r in everything if r.info.status == "RUNNING"]
    finished = [r for r in everything if r.info.status == "FINISHED"
                and "seed" in r.data.tags and "mlflow.parentRunId" in r.data.tags]
    seeds = sorted(int(r.data.tags["seed"]) for r in finished)
    assert seeds == list(range(8))  # every config FINISHED exactly once
    after = {r.data.tags["seed"]: r.info.run_id for r in finished}
    assert all(after[seed] == run_id for seed, run_id in before.items())  # not retrained
    assert any(r.info.status == "KILLED" for r in everything)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_parallel_sweeps_workers_die_with_its_main_process(tmp_path, signum):
    """Killed alone, the main process takes its joblib workers along: none lives on, none
    logs a run after it; SIGTERM ends the parent FAILED."""
    args = ["-m", "hydra/launcher=local_parallel", "seed=range(6)", "data.n_train=40000",
            "hydra.sweeper.max_replicas=1"]
    process = start_train(args, tmp_path)
    deadline = time.time() + 180
    while time.time() < deadline and len(
            [r for r in runs(tmp_path) if r.info.status == "RUNNING"]) < 3:  # parent + 2
        time.sleep(0.2)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert len(workers) >= 2
    killed_at = time.time()
    process.send_signal(signum)
    process.wait(timeout=60)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive
    time.sleep(1)
    later = [r for r in finished_children(tmp_path) if r.info.end_time / 1000 > killed_at]
    assert not later
    [parent] = [r for r in runs(tmp_path) if "mlflow.parentRunId" not in r.data.tags]
    if signum == signal.SIGTERM:
        assert process.returncode != 0
        assert parent.info.status == "FAILED"


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of its own with a fresh store, room for about 20 small runs."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is made with a tmpfs mount, which needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    size = migrated_store().stat().st_size // 1024 + 1024
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", str(disk)],
                   check=True)
    try:
        store_uri(disk)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_stops_the_sweep_with_one_line_and_leaves_nothing_half_done(small_disk):
    args = ["-m", "seed=range(200)", "hydra.sweeper.max_replicas=20", "data.n_test=2000",
            f"hydra.sweep.dir={small_disk.parent}/multirun"]
    result = train(args, small_disk, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # the line that stops the sweep, then the sweep's line for the group that failed
    error, failed = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert " FAILED " in failed
    assert error.startswith(("train.py: error: no space left on device writing ",
                             "train.py: error: database or disk is full writing the tracking "))
    everything = runs(small_disk)
    assert not [r for r in everything if r.info.status == "RUNNING"]
    finished = {r.info.run_id for r in everything if r.info.status == "FINISHED"}
    assert 0 < len(finished) < 200
    assert {path.name for path in (small_disk / "mlartifacts").iterdir()} == finished
