"""A real tracking server on loopback (the MLflow UI: test_ui.py); bad inputs give one-line
errors."""

import json
import os
import signal
import subprocess
import urllib.request

import numpy as np
import pytest

from tests.cli import (
    ROOT,
    analyze_in_process,
    client,
    free_port,
    run_script,
    runs,
    train,
    train_in_process,
    wait_for_http,
)


def start(command, cwd):
    """A server in a process group of its own, without MLflow's job runner (as make server)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)


def stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def search_runs(base_url):
    request = urllib.request.Request(
        f"{base_url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=irrepro")
    with urllib.request.urlopen(request, timeout=10) as response:
        experiment_id = json.load(response)["experiment"]["experiment_id"]
    body = json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode()
    request = urllib.request.Request(f"{base_url}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response).get("runs", [])


def test_a_sweep_and_the_analysis_against_a_tracking_server(tmp_path):
    port = free_port()
    server = start([str(ROOT / ".venv/bin/mlflow"), "server", "--backend-store-uri",
                    f"sqlite:///{tmp_path}/server.db", "--artifacts-destination",
                    str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1"], tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(uri + "/health")
        trained = train(["-m", "randomness=none,init", "seed=0", "replicas=2",
                         f"tracking.uri={uri}"], tmp_path)
        assert len(search_runs(uri)) == 5
        analyzed = run_script("analyze.py", ["--tracking-uri", uri, "--reports",
                                             str(tmp_path / "rep"), "--figures",
                                             str(tmp_path / "fig")], tmp_path)
        [analysis] = [run["info"] for run in search_runs(uri)
                      if {"key": "irrepro.analysis", "value": "irrepro"} in run["data"]["tags"]]
        page = f"{uri}/#/experiments/{analysis['experiment_id']}"
        assert trained.stdout.splitlines()[-1].endswith(
            f", experiment irrepro at {uri}: {page}/runs?workflowType=machine_learning"
            "&viewStateShareKey=irrepro")
        assert analyzed.stdout.splitlines()[-1] == (
            f"analysis run: {page}/runs/{analysis['run_id']}")
        summary = (tmp_path / "rep" / "irrepro" / "summary.csv").read_text().splitlines()
        assert len(summary) == 3
        assert any(path.suffix == ".png" for path in (tmp_path / "fig" / "irrepro").iterdir())
    finally:
        stop(server)


def one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    return lines[-1]


def one_line(capsys):
    """The one line this process wrote on stderr, with no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.strip()]
    return line


def test_an_unreachable_tracking_server_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        train_in_process(tmp_path, f"tracking.uri=http://127.0.0.1:{free_port()}")
    assert stopped.value.code == 2
    assert "does not answer" in one_line(capsys)


def test_a_multirun_against_an_unreachable_server_stops_before_any_job(tmp_path):
    result = train(["-m", "activation=relu,smelu", f"tracking.uri=http://127.0.0.1:{free_port()}"],
                   tmp_path, check=False)
    assert "does not answer" in one_line_error(result)
    assert result.returncode == 2 and "Launching 2 jobs" not in result.stdout + result.stderr


def test_a_store_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stopped:
        train_in_process(tmp_path, f"tracking.uri=sqlite:///{tmp_path}/file/mlflow.db")
    assert stopped.value.code == 2
    assert "cannot write the tracking store" in one_line(capsys)


def test_analysis_of_a_missing_or_empty_experiment_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as failed:
        train_in_process(tmp_path, "seed=0", "force=true", "optimizer.lr=1e12")
    assert failed.value.code == 1  # only a FAILED run
    capsys.readouterr()
    store = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert analyze_in_process(tmp_path, *store, "--experiment", "nope") == 1
    assert "no experiment named 'nope'" in one_line(capsys)
    assert analyze_in_process(tmp_path, *store) == 1
    empty = one_line(capsys)
    assert "no FINISHED training runs" in empty and "1 failed" in empty


def test_a_corrupted_predictions_artifact_is_one_line_and_loses_nothing(tmp_path, capsys):
    train_in_process(tmp_path, "seed=0", "replicas=2")
    (run, other) = runs(tmp_path)
    path = client(tmp_path).download_artifacts(run.info.run_id, "predictions.npy", str(tmp_path))
    stored = run.info.artifact_uri.removeprefix("file://") + "/predictions.npy"
    with open(stored, "wb") as handle:
        handle.write(b"not a numpy file")
    capsys.readouterr()
    assert analyze_in_process(tmp_path, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db") == 1
    error = one_line(capsys)
    assert run.info.run_id in error and "unreadable" in error
    assert len(runs(tmp_path)) == 2
    assert np.load(path).shape == (64,)
