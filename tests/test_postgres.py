"""`make server` on a real PostgreSQL, fed over HTTP by a joblib sweep of 2 workers and a SLURM
sweep, and read back by analyze.py: every run FINISHED, none lost, none duplicated.

Uses the server that `IRREPRO_POSTGRES_URI` points at (`.ci/run` starts one with
scripts/postgres.sh), in a database of its own, else starts a throwaway one with that script.
"""

import csv
import glob
import os
import pwd
import shutil
import subprocess
import uuid
from collections import Counter
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

from irrepro.tracking import SWEEP_ID_ENV
from tests.cli import ROOT, free_port, run_script, throwaway_service, train, wait_for_http
from tests.test_run_writers import assert_a_job_logs_alike, writer_pair
from tests.test_services import start, stop
from tests.test_slurm import slurm, slurm_args  # noqa: F401  (slurm: a fixture)

POSTGRES_SCRIPT = ROOT / "scripts" / "postgres.sh"


def why_no_postgres():
    """Why no PostgreSQL server can be had here, or None."""
    if os.environ.get("IRREPRO_POSTGRES_URI"):
        return None
    if not (shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")):
        return "no PostgreSQL here: its server programs (pg_ctl, initdb) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no PostgreSQL here: as root it needs the `postgres` user to run the server"
    return None


@pytest.fixture(scope="module")
def postgres():
    """The URI of a running PostgreSQL server (its maintenance database)."""
    reason = why_no_postgres()
    if reason:
        pytest.skip(reason)
    if os.environ.get("IRREPRO_POSTGRES_URI"):
        yield os.environ["IRREPRO_POSTGRES_URI"]
        return
    with throwaway_service(POSTGRES_SCRIPT, "IRREPRO_POSTGRES_DIR", "PostgreSQL") as exports:
        yield exports["IRREPRO_POSTGRES_URI"]


@contextmanager
def fresh_database(postgres):
    """A new database on the server, for the length of a `with` block: its URI."""
    import psycopg

    database = f"irrepro_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database}")
    try:
        yield urlunsplit(urlsplit(postgres)._replace(path=f"/{database}"))
    finally:
        with psycopg.connect(postgres, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE {database} WITH (FORCE)")


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """`make server DB_URI=postgresql://…` on a fresh database: its URL and a work dir."""
    cwd = tmp_path_factory.mktemp("postgres")
    port = free_port()
    with fresh_database(postgres) as db_uri:
        process = start(["make", "-s", "-C", str(ROOT), "server", f"DB_URI={db_uri}",
                         f"PORT={port}", "WORKERS=2", f"ARTIFACTS={cwd}/artifacts"], cwd)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(url + "/health", timeout=180)
            yield url, cwd
        finally:
            stop(process)


def test_a_database_reached_directly_is_written_in_bulk_as_the_client_writes(
        postgres, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root, ./mlruns
    monkeypatch.setenv(SWEEP_ID_ENV, "sweep")
    with fresh_database(postgres) as db_uri:
        assert_a_job_logs_alike(*writer_pair(db_uri))


def sweep_over_http(server, launcher_args, seeds):
    """A sweep of two activations x `seeds` sent to the server; then all runs of the study."""
    from mlflow.tracking import MlflowClient

    url, cwd = server
    train(["-m", *launcher_args, "activation=relu,smelu", f"seed={seeds}",
           f"tracking.uri={url}", "tracking.experiment=postgres"], cwd, timeout=300)
    mlflow_client = MlflowClient(tracking_uri=url)
    experiment = mlflow_client.get_experiment_by_name("postgres").experiment_id
    return mlflow_client.search_runs([experiment], max_results=1000)


@pytest.fixture(scope="module")
def parallel_sweep(server):
    return sweep_over_http(
        server, ["hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"], "0,1")


@pytest.fixture(scope="module")
def slurm_sweep(server, slurm):  # noqa: F811
    return sweep_over_http(server, slurm_args(f"irrepro-test-{uuid.uuid4().hex[:8]}"), "2,3")


def assert_complete(everything, seeds):
    """Every run FINISHED, each (activation, seed) trained once (none duplicated), and the
    sweep's seeds all there (none lost), under one parent."""
    assert {r.info.status for r in everything} == {"FINISHED"}
    trained = [r for r in everything if "seed" in r.data.tags]
    keys = Counter((r.data.params["activation.name"], int(r.data.tags["seed"])) for r in trained)
    assert set(keys.values()) == {1}
    swept = [r for r in trained if int(r.data.tags["seed"]) in seeds]
    assert sorted((r.data.params["activation.name"], int(r.data.tags["seed"])) for r in swept) == [
        (activation, seed) for activation in ("relu", "smelu") for seed in seeds]
    assert len({r.data.tags["mlflow.parentRunId"] for r in swept}) == 1


def test_a_parallel_sweep_of_two_workers_over_http_loses_nothing(parallel_sweep):
    assert_complete(parallel_sweep, [0, 1])


def test_a_slurm_sweep_over_http_loses_nothing(slurm_sweep):
    assert_complete(slurm_sweep, [2, 3])


def test_the_analysis_reads_every_run_back_over_http(server, parallel_sweep, request):
    from mlflow.tracking import MlflowClient

    try:
        request.getfixturevalue("slurm_sweep")  # its runs too, where SLURM is here
    except pytest.skip.Exception:
        pass
    url, cwd = server
    run_script("analyze.py", ["--tracking-uri", url, "--experiment", "postgres", "--reports",
                              str(cwd / "rep"), "--figures", str(cwd / "fig")], cwd)
    with open(cwd / "rep" / "postgres" / "summary.csv") as handle:
        summary = {row["activation.name"]: int(row["n_runs"]) for row in csv.DictReader(handle)}
    experiment = MlflowClient(tracking_uri=url).get_experiment_by_name("postgres")
    trained = [r for r in MlflowClient(tracking_uri=url).search_runs([experiment.experiment_id])
               if "seed" in r.data.tags]
    assert summary == Counter(r.data.params["activation.name"] for r in trained)
    assert set(summary) == {"relu", "smelu"} and min(summary.values()) >= 2


def test_the_server_wants_the_password_its_uri_carries(postgres):
    """Over TCP the throwaway server asks for a password; without it, no connection."""
    import psycopg

    parts = urlsplit(postgres)
    assert parts.password
    without = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}"))
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(without, connect_timeout=10).close()


def test_start_refuses_a_state_dir_that_exists_and_leaves_it_alone(tmp_path):
    (tmp_path / "keep").write_text("mine")
    env = {**os.environ, "IRREPRO_POSTGRES_DIR": str(tmp_path), "IRREPRO_NO_INSTALL": "1"}
    for script_args, message in ((["start"], "exists"), (["stop"], "no server")):
        result = subprocess.run([str(POSTGRES_SCRIPT), *script_args], env=env,
                                capture_output=True, text=True, timeout=60)
        assert message in result.stderr
    assert (tmp_path / "keep").read_text() == "mine"
