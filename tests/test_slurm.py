"""A real SLURM cluster: a multirun through sbatch, a job cancelled with scancel, and resume.

Uses the cluster that `SLURM_CONF` points at (`.ci/run` starts one with
scripts/slurm-cluster.sh), else starts a throwaway one with that script for this module.
"""

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from irrepro.tracking import Tracker
from tests.cli import ROOT, client, runs, start_train, throwaway_service, train

CLUSTER_SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"


def slurm_args(name):
    """The shipped `hydra/launcher=slurm`, sized for this one-node cluster."""
    return ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            f"hydra.launcher.name={name}", "train.progress=false"]


def why_no_slurm():
    """Why no cluster can be had here, or None."""
    if os.environ.get("SLURM_CONF"):
        return None
    if not (shutil.which("slurmctld") and shutil.which("munged") and shutil.which("sbatch")):
        return "no SLURM here: slurmctld, sbatch or munged missing (scripts/slurm-cluster.sh)"
    if os.geteuid() != 0:
        return "no SLURM here: starting a throwaway cluster needs root"
    return None


@pytest.fixture(scope="module")
def slurm():
    """The SLURM_CONF of a running cluster, in this process's environment while in use."""
    reason = why_no_slurm()
    if reason:
        pytest.skip(reason)
    if os.environ.get("SLURM_CONF"):
        yield os.environ["SLURM_CONF"]
        return
    with throwaway_service(CLUSTER_SCRIPT, "IRREPRO_SLURM_DIR", "SLURM") as exports, \
            pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", exports["SLURM_CONF"])
        yield exports["SLURM_CONF"]


def slurm_jobs(name):
    """{array task id (e.g. '12_1'): (state, node)} of the jobs named `name`."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True,
                         check=True).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if fields.get("JobName") == name and "ArrayTaskId" in fields:
            task = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            jobs[task] = (fields["JobState"], fields["NodeList"])
    return jobs


def children(cwd, parent):
    return runs(cwd, filter_string=f"tags.mlflow.parentRunId = '{parent}'")


@pytest.fixture(scope="module")
def sweeps(slurm, tmp_path_factory):
    """A two-job sweep through sbatch whose long job is cancelled with scancel mid-run, then
    the same sweep again."""
    cwd = tmp_path_factory.mktemp("slurm")
    name = f"irrepro-test-{uuid.uuid4().hex[:8]}"
    args = ["-m", *slurm_args(name), "data.n_train=256,150000"]  # job 1 trains for seconds
    # The store exists before the sweep starts, so that polling it cannot race its creation.
    Tracker(f"sqlite:///{cwd}/mlflow.db", "irrepro")
    process = start_train(args, cwd)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        statuses = sorted(r.info.status for r in runs(cwd) if "seed" in r.data.tags)
        if statuses == ["FINISHED", "RUNNING"]:
            break
        time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"the long job never ran: {process.communicate()[1][-2000:]}")
    (array,) = {task.split("_")[0] for task in slurm_jobs(name)}
    cancelled = f"{array}_1"
    subprocess.run(["scancel", cancelled], check=True)
    _, first_err = process.communicate(timeout=180)
    first_runs = runs(cwd)
    second = train(args, cwd, timeout=300)
    return {"cwd": cwd, "name": name, "cancelled": cancelled, "first_code": process.returncode,
            "first_err": first_err, "first_runs": first_runs, "second": second}


def test_a_multirun_goes_through_sbatch_and_lands_under_one_parent(sweeps):
    jobs = slurm_jobs(sweeps["name"])
    assert len(jobs) == 4  # two array tasks in each sweep
    assert {node for _, node in jobs.values()} == {socket.gethostname().split(".")[0]}
    logs = list((sweeps["cwd"] / "multirun").rglob("*_log.out"))
    assert len(logs) == 4 and all("Starting with JobEnvironment" in p.read_text() for p in logs)
    trained = [r for r in sweeps["first_runs"] if "seed" in r.data.tags]
    assert len(trained) == 2
    assert len({r.data.tags["mlflow.parentRunId"] for r in trained}) == 1


def test_a_job_cancelled_with_scancel_ends_killed(sweeps):
    assert slurm_jobs(sweeps["name"])[sweeps["cancelled"]][0] == "CANCELLED"
    assert sweeps["first_code"] != 0 and "Terminated" in sweeps["first_err"]
    trained = {r.info.status: r for r in sweeps["first_runs"] if "seed" in r.data.tags}
    assert set(trained) == {"FINISHED", "KILLED"}
    assert trained["KILLED"].data.tags["failure_reason"] == "Terminated: signal SIGTERM"
    parent = client(sweeps["cwd"]).get_run(trained["KILLED"].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED"
    assert (parent.data.tags["jobs_finished"], parent.data.tags["jobs_failed"]) == ("1", "1")


def test_the_next_sweep_trains_only_what_is_missing(sweeps):
    before = {r.info.run_id for r in sweeps["first_runs"]}
    new = [r for r in runs(sweeps["cwd"]) if r.info.run_id not in before]
    parent = next(r for r in new if "seed" not in r.data.tags)
    (retrained,) = [r for r in new if "seed" in r.data.tags]
    killed = next(r for r in sweeps["first_runs"] if r.info.status == "KILLED")
    assert retrained.info.status == "FINISHED"
    assert retrained.data.tags["config_hash"] == killed.data.tags["config_hash"]
    job_logs = "".join(p.read_text() for p in (sweeps["cwd"] / "multirun").rglob("*_log.*"))
    assert job_logs.count("already FINISHED") == 1  # the short job, in the second sweep
    assert parent.info.status == "FINISHED"
    # the short job reused its run: counted, as the run is
    assert (parent.data.tags["jobs_finished"], parent.data.tags["jobs_failed"],
            parent.data.tags["runs_reused"]) == ("2", "0", "1")
    assert [r.info.run_id for r in children(sweeps["cwd"], parent.info.run_id)] == [
        retrained.info.run_id]


def test_the_cluster_keeps_its_state_private_with_a_munge_key_of_its_own(slurm):
    """Others may pass through the state dir to munge's socket, but not list it; the key is
    made for the cluster (never the host's) and only munge reads it."""
    state = os.path.dirname(slurm)
    assert os.stat(state).st_mode & 0o777 == 0o711
    key = os.path.join(state, "munge", "munge.key")
    assert os.stat(key).st_mode & 0o777 == 0o400
    if os.path.exists("/etc/munge/munge.key"):
        with open(key, "rb") as ours, open("/etc/munge/munge.key", "rb") as host:
            assert ours.read() != host.read()


def test_start_refuses_a_state_dir_that_exists_and_leaves_it_alone(tmp_path):
    (tmp_path / "keep").write_text("mine")
    env = {**os.environ, "IRREPRO_SLURM_DIR": str(tmp_path), "IRREPRO_NO_INSTALL": "1"}
    env.pop("SLURM_CONF", None)
    started = subprocess.run([str(CLUSTER_SCRIPT), "start"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode != 0 and "exists" in started.stderr
    stopped = subprocess.run([str(CLUSTER_SCRIPT), "stop"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert stopped.returncode == 0 and "no cluster" in stopped.stderr
    assert (tmp_path / "keep").read_text() == "mine"
