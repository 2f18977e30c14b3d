"""The real `train.py` against a real SQLite MLflow store."""

import signal
import time
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from irrepro.hydra_app import job_outcomes
from tests.cli import client, runs, start_train, train, train_in_process


def children(cwd):
    return [r for r in runs(cwd) if "mlflow.parentRunId" in r.data.tags]


def predictions_of(cwd, run):
    path = client(cwd).download_artifacts(run.info.run_id, "predictions.npy", str(cwd))
    return np.load(path)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One multirun of 2 activations x 2 seeds, then the same again (resume)."""
    cwd = tmp_path_factory.mktemp("sweep")
    first = train(["-m", "activation=relu,smelu", "seed=0,1"], cwd)
    second = train(["-m", "activation=relu,smelu", "seed=0,1"], cwd)
    return cwd, first, second


def test_a_multirun_logs_one_finished_child_per_job_under_one_parent(sweep):
    cwd, _, _ = sweep
    all_runs = runs(cwd)
    jobs = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId")]
    parents = {r.data.tags["mlflow.parentRunId"] for r in jobs}
    assert len(jobs) == 4 and len(parents) == 1
    parent = client(cwd).get_run(parents.pop())
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in jobs)


def test_each_run_has_params_tags_metrics_and_artifacts(sweep):
    cwd, _, _ = sweep
    run = children(cwd)[0]
    assert run.data.params["data.n_test"] == "64"
    assert run.data.params["activation.name"] in ("relu", "smelu")
    assert "replicas" not in run.data.params and "tracking.uri" not in run.data.params
    for tag in ("group_key", "config_hash", "data_hash", "seed", "sweep_id"):
        assert run.data.tags[tag]
    for metric in ("log_loss", "excess_log_loss", "accuracy", "auc", "train_loss"):
        assert np.isfinite(run.data.metrics[metric])
    curve = client(cwd).get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in curve] == [4, 8]
    p = predictions_of(cwd, run)
    assert p.dtype == np.float32 and p.shape == (64,)
    config_path = client(cwd).download_artifacts(run.info.run_id, "config.yaml", str(cwd))
    with open(config_path) as handle:
        assert yaml.safe_load(handle)["seed"] == int(run.data.tags["seed"])


def test_seeds_share_a_group_and_the_data_hash(sweep):
    cwd, _, _ = sweep
    by_group = {}
    for run in children(cwd):
        by_group.setdefault(run.data.tags["group_key"], set()).add(run.data.tags["seed"])
    assert sorted(by_group.values(), key=sorted) == [{"0", "1"}, {"0", "1"}]
    assert len({r.data.tags["data_hash"] for r in children(cwd)}) == 1


def test_a_second_sweep_skips_finished_runs(sweep):
    cwd, _, second = sweep
    assert len(children(cwd)) == 4
    # The seed axis is batched: one job per activation trains (here: skips) seeds 0 and 1.
    log = second.stdout + second.stderr
    assert log.count("skipping seeds 0..1") == 2 and "finished, 0 failed" not in log


def test_the_second_sweep_records_and_counts_the_runs_it_reused(sweep):
    cwd, _, _ = sweep
    first, parent = sorted((r for r in runs(cwd) if "overrides" in r.data.tags),
                           key=lambda r: r.info.start_time)
    assert (first.data.tags["jobs_finished"], first.data.tags["runs_reused"]) == ("2", "0")
    sweep_id = parent.data.tags["sweep_id"]
    assert parent.info.status == "FINISHED"
    assert (parent.data.tags["jobs_finished"], parent.data.tags["jobs_failed"],
            parent.data.tags["runs_reused"]) == ("2", "0", "4")
    jobs = [run.data.tags[f"irrepro.reused_by.{sweep_id}"] for run in children(cwd)]
    assert len(set(jobs)) == 2 and all(job.startswith(f"{sweep_id}-") for job in jobs)


def test_a_sweep_ends_with_a_line_per_group_and_where_its_runs_are(sweep):
    cwd, first, second = sweep
    by_group = {}
    for run in children(cwd):
        by_group.setdefault(run.data.params["activation.name"], []).append(run)
    parents = {run.data.tags["sweep_id"]: run for run in runs(cwd)
               if "mlflow.parentRunId" not in run.data.tags}
    for result, reused in ((first, ""), (second, " (already FINISHED)")):
        *groups, where = result.stdout.splitlines()[-3:]
        for line, name in zip(groups, ("relu", "smelu"), strict=True):
            runs_of = by_group[name]
            accuracy = np.mean([r.data.metrics["accuracy"] for r in runs_of])
            assert line.startswith(f"activation={name}, group "
                                   f"{runs_of[0].data.tags['group_key']}, seeds 0,1{reused}: "
                                   f"accuracy {accuracy:.4g} ± "), line
            converged = sum(r.data.metrics["converged"] == 1 for r in runs_of)
            assert line.endswith(f"converged {converged}/2")
        parent = parents[where.split()[1].rstrip(",")]
        assert where == (f"sweep {parent.data.tags['sweep_id']}, parent run {parent.info.run_id}, "
                         f"experiment irrepro at sqlite:///{cwd}/mlflow.db")
        assert result.stderr.count("train.py: error") == 0


def test_progress_bar_is_quiet_without_a_tty(sweep):
    _, first, _ = sweep
    assert "step/s" not in first.stderr and "step/s" not in first.stdout


def test_force_retrains_and_replicas_log_one_run_per_seed(tmp_path):
    train_in_process(tmp_path, "seed=3", "replicas=3")
    train_in_process(tmp_path, "seed=3", "replicas=2", "force=true")
    seeds = sorted(int(r.data.tags["seed"]) for r in runs(tmp_path))
    assert seeds == [3, 3, 4, 4, 5]
    assert len({r.data.tags["group_key"] for r in runs(tmp_path)}) == 1


def test_fixed_runs_are_bit_identical_across_processes(tmp_path):
    # one in a fresh train.py, one in this process after whatever its earlier tests ran
    train(["randomness=none", "randomness.window=16", "seed=0"], tmp_path)
    train_in_process(tmp_path, "randomness=none", "randomness.window=16", "seed=1")
    first, second = (predictions_of(tmp_path, run) for run in runs(tmp_path))
    assert np.array_equal(first, second)


@pytest.mark.parametrize("override, key", [("data.dim=abc", "data.dim"),
                                           ("activation=relu6", "activation")])
def test_input_hydra_cannot_compose_fails_before_training_naming_the_key(tmp_path, override,
                                                                         key):
    result = train([override], tmp_path, check=False)
    assert result.returncode != 0
    assert key in result.stderr
    assert runs(tmp_path) == []


@pytest.mark.parametrize(
    "override, key",
    [("randomness.window=0", "randomness.window"), ("optimizer.lr=0", "optimizer.lr"),
     ("activation.beta=-1", "activation.beta"), ("data.dim=0", "data.dim"),
     ("replicas=10000000", "replicas")],
)
def test_bad_input_fails_before_training_naming_the_key(tmp_path, capsys, override, key):
    with pytest.raises(SystemExit) as stopped:
        train_in_process(tmp_path, override)
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("train.py: error: ") and key in line
    assert runs(tmp_path) == []


def test_a_bad_value_anywhere_in_a_sweep_fails_before_any_job(tmp_path):
    result = train(["-m", "optimizer.lr=0.1,0", "activation=relu,smelu", "seed=0,1"],
                   tmp_path, check=False)
    assert result.returncode == 2
    error = "error: optimizer.lr=0 activation=relu: optimizer.lr=0.0 must be > 0.0\n"
    assert error in result.stderr
    assert "Launching" not in result.stdout + result.stderr
    assert runs(tmp_path) == []


def test_a_diverging_job_fails_alone_the_sweep_goes_on_and_exits_1(tmp_path):
    result = train(["-m", "optimizer.lr=1e12,0.1"], tmp_path, check=False)
    assert result.returncode == 1
    *_, trained, where = result.stdout.splitlines()
    assert trained.startswith("optimizer.lr=0.1, group ") and where.startswith("sweep ")
    [error] = result.stderr.splitlines()[-1:]
    assert error.startswith("train.py: error: optimizer.lr=1000000000000.0, group ")
    assert ", seed 0 FAILED: training loss diverged (" in error
    status = {r.data.params.get("optimizer.lr", r.data.tags.get("seed")): r for r in runs(tmp_path)
              if "mlflow.parentRunId" in r.data.tags}
    assert status["0.1"].info.status == "FINISHED"
    failed = [r for r in runs(tmp_path) if r.info.status == "FAILED"
              and "mlflow.parentRunId" in r.data.tags]
    assert len(failed) == 1 and "diverged" in failed[0].data.tags["failure_reason"]
    parent = client(tmp_path).get_run(failed[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED"
    assert parent.data.tags["failure_reason"] == "1 of 2 jobs failed"
    assert (parent.data.tags["jobs_finished"], parent.data.tags["jobs_failed"]) == ("1", "1")


def test_a_job_whose_requeued_attempt_finished_every_seed_counts_as_finished():
    def run(job, seed, status):
        return SimpleNamespace(data=SimpleNamespace(tags={"job_id": job, "seed": str(seed)}),
                               info=SimpleNamespace(status=status, run_id=f"{job}{seed}"))

    children = [
        run("s-0", 0, "KILLED"), run("s-0", 1, "KILLED"),  # the attempt SLURM requeued
        run("s-0", 0, "FINISHED"), run("s-0", 1, "FINISHED"),  # the next attempt
        run("s-1", 2, "FINISHED"), run("s-1", 3, "FAILED"),
        run("s-2", 4, "KILLED"),
    ]
    assert job_outcomes(children) == (1, 2)
    # Runs an earlier sweep trained, reused by jobs of this one: s-2 reused seed 5, s-3 all.
    reused = [("s-2", run("old", 5, "FINISHED")), ("s-3", run("old", 6, "FINISHED"))]
    assert job_outcomes(children, reused) == (2, 2)
    assert job_outcomes(children[:4], reused) == (3, 0)


def test_an_interrupted_run_ends_killed_and_is_redone(tmp_path):
    big = ["data.n_train=100000"]  # seconds of training after its run is started
    process = start_train(big, tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and not runs(tmp_path):
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    (killed,) = runs(tmp_path)
    assert killed.info.status == "KILLED"
    train_in_process(tmp_path, *big)
    redone = [r for r in runs(tmp_path) if r.info.run_id != killed.info.run_id]
    assert [r.info.status for r in redone] == ["FINISHED"]
    assert redone[0].data.tags["config_hash"] == killed.data.tags["config_hash"]
