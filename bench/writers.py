"""Concurrent writers: N processes, each logging R runs one by one as a one-seed job logs its
run (tags, the artifact files, params and metrics with the training curve, the status), into the
embedded SQLite store and into a PostgreSQL-backed tracking server.

    python bench/writers.py [--writers 2 4 8 16] [--runs 10] [--stores sqlite server]

The server is `make server DB_URI=postgresql://…` on a throwaway PostgreSQL that
scripts/postgres.sh starts and stops here. Prints, per store and N, the runs per second (from
the moment every writer is ready to the last run's end), the retries irrepro made while SQLite
reported a locked database, the runs lost (not FINISHED: must be 0) and stray runs (left
RUNNING or FAILED, or logged twice: must be 0).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from irrepro import tracking

ROOT = Path(__file__).resolve().parents[1]


def real_run():
    """What one default run logs: tags, its record (params, metrics, curve) and files."""
    from omegaconf import OmegaConf

    from irrepro.config import config_hash, group_key, to_config
    from irrepro.data import make_dataset
    from irrepro.job import finished_run
    from irrepro.training import train_replicas

    config = to_config(OmegaConf.create({"train": {"progress": False}}))
    dataset = make_dataset(config.data)
    started = time.perf_counter()
    (result,) = train_replicas(config, [0], dataset)
    record, files = finished_run(config, result, dataset, time.perf_counter() - started)
    tags = {"group_key": group_key(config), "config_hash": config_hash(config),
            "data_hash": dataset.digest}
    return tags, record, files


class CountingTime:
    """Stands in for irrepro.tracking's `time` module: it sleeps only between retries."""

    def __init__(self):
        self.sleeps = 0

    def sleep(self, seconds):
        self.sleeps += 1
        time.sleep(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


def writer(uri, experiment, index, runs, run, ready, results):
    """Log `runs` runs once every writer is ready; report (retries, runs that raised)."""
    counting = CountingTime()
    tracking.time = counting
    tracker = tracking.Tracker(uri, experiment)
    tags, record, files = run
    ready.wait()
    failed = 0
    for number in range(runs):
        try:
            run_id = tracker.start_run(f"w{index}-{number}", {**tags, "seed": str(number),
                                                                "writer": str(index)})
            tracker.finish_runs({run_id: record}, {run_id: files})
        except Exception as error:  # counted as lost, the benchmark goes on
            print(f"writer {index}: {type(error).__name__}: {str(error)[:200]}")
            failed += 1
    results.put((counting.sleeps, failed))


def bench(uri, n_writers, runs, run):
    """Runs per second, retries, runs lost and stray runs (not FINISHED, or twice) for
    n_writers concurrent writers. Writers are spawned (no connection pool inherited) and
    import MLflow before the clock starts."""
    experiment = f"writers-{n_writers}-{uuid.uuid4().hex[:6]}"
    tracker = tracking.Tracker(uri, experiment)  # store and experiment exist before the writers
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(n_writers + 1), context.Queue()
    processes = [context.Process(target=writer, args=(uri, experiment, i, runs, run, ready,
                                                      results)) for i in range(n_writers)]
    for process in processes:
        process.start()
    ready.wait()
    started = time.perf_counter()
    outcomes = [results.get() for _ in processes]
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    logged = tracker.search("")
    finished = {(r.data.tags["writer"], r.data.tags["seed"]) for r in logged
                if r.info.status == "FINISHED"}
    lost, stray = n_writers * runs - len(finished), len(logged) - len(finished)
    return n_writers * runs / elapsed, sum(s for s, _ in outcomes), lost, stray


class PostgresServer:
    """scripts/postgres.sh and `make server` on it, for the length of a `with` block."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.env = {**os.environ,
                    "IRREPRO_POSTGRES_DIR": f"{tempfile.gettempdir()}/irrepro-bench-postgres"}
        self.server = None

    def __enter__(self):
        out = subprocess.run([ROOT / "scripts/postgres.sh", "start"], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.server = subprocess.Popen(
            ["make", "-s", "-C", str(ROOT), "server", f"DB_URI={exports['IRREPRO_POSTGRES_URI']}",
             f"PORT={port}", f"ARTIFACTS={self.folder}/artifacts"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=5).close()
                return self
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def __exit__(self, *exc):
        if self.server is not None:
            os.killpg(self.server.pid, 15)
            self.server.wait(timeout=60)
        subprocess.run([ROOT / "scripts/postgres.sh", "stop"], env=self.env, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--runs", type=int, default=10, help="runs per writer")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "server"],
                        choices=["sqlite", "server"])
    args = parser.parse_args()
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # a line per run over HTTP
    run = real_run()
    folder = tempfile.mkdtemp()
    print(f"{args.runs} runs per writer, {os.cpu_count()} CPUs")
    print(f"{'store':<28} {'writers':>7} {'runs/s':>7} {'retries':>7} {'lost':>5} {'stray':>5}")
    try:
        for store in args.stores:
            if store == "sqlite":
                rows = [(n, *bench(f"sqlite:///{folder}/mlflow.db", n, args.runs, run))
                        for n in args.writers]
                name = "SQLite (embedded)"
            else:
                with PostgresServer(folder) as server:
                    rows = [(n, *bench(server.uri, n, args.runs, run)) for n in args.writers]
                name = "make server on PostgreSQL"
            for n, rate, retries, lost, stray in rows:
                print(f"{name:<28} {n:>7} {rate:>7.1f} {retries:>7} {lost:>5} {stray:>5}",
                      flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
