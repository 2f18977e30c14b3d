"""`make ui` on a sweep, seen in a real browser: the URL it prints opens the runs table, with
the sweep's runs and irrepro's columns; the links, the experiment tags and `make server`'s
interface."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from irrepro import ui_links
from irrepro.tracking import Tracker, runs_url, ui_tags
from tests.cli import ROOT, environment, free_port, store_uri, train

VIEW_TAG = "mlflow.sharedViewState.irrepro"


def chromium() -> str:
    """Headless Chromium's command, installed with apt-get where it is missing (as root)."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True,
                       timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("no chromium here, and it could not be installed "
                    "(apt-get install chromium, as root)")
    return found


def rendered_page(browser, url, profile) -> str:
    """The page at `url` as headless Chromium renders it, in a wide window (the runs table
    draws only the columns it shows)."""
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--window-size=2400,1000", "--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def text_of(html) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def value_columns(html) -> list[str]:
    """The metric and param columns of the runs table, left to right (the table places its
    header cells by offset, not in document order)."""
    cells = re.findall(r'role="columnheader"[^>]*col-id="(?:metrics|params)\.`([^`]+)`"'
                       r'[^>]*style="left: (\d+)px', html)
    return [name for name, left in sorted(cells, key=lambda cell: int(cell[1]))]


def printed_line(path, prefix, process, timeout):
    """The first whole line starting with `prefix` that `process` wrote to the file at `path`,
    within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for line in path.read_text(errors="replace").splitlines(keepends=True):
            if line.startswith(prefix) and line.endswith("\n"):
                return line.strip()
        time.sleep(0.5)
    raise AssertionError(f"no line starting {prefix!r}: {path.read_text()[-2000:]}")


def test_make_ui_prints_the_runs_table_that_the_browser_shows(tmp_path):
    browser = chromium()
    Tracker(store_uri(tmp_path), "irrepro")  # the experiment, as the sweep makes it
    port, printed = free_port(), tmp_path / "ui.out"
    with printed.open("w") as out:
        ui = subprocess.Popen(
            ["make", "-s", "-C", str(ROOT), "ui", f"STORE={store_uri(tmp_path)}", f"PORT={port}"],
            cwd=tmp_path, env=environment(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        train(["-m", "seed=0,1"], tmp_path)  # while the server starts
        line = printed_line(printed, "irrepro: ", ui, timeout=240)
        url = line.removeprefix("irrepro: ")
        base = f"http://127.0.0.1:{port}"
        assert re.fullmatch(re.escape(base) + r"/#/experiments/\d+/runs\?workflowType="
                            r"machine_learning&viewStateShareKey=irrepro", url)
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                                    "experiment_name=irrepro", timeout=10) as response:
            tags = {t["key"]: t["value"] for t in json.load(response)["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        assert VIEW_TAG in tags
        html = rendered_page(browser, url, tmp_path / "profile")
        text = text_of(html)
        # the runs flat (not collapsed under their parent), by name, seed first
        assert re.search(r"s0-two_units-relu-all .*s1-two_units-relu-all .*sweep-", text), text
        assert "Sort: Run Name" in text
        assert value_columns(html) == [
            "excess_log_loss", "log_loss", "accuracy", "converged", "seed"], text
        assert "Token Usage" not in text and "Latency" not in text  # the GenAI overview's
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_the_view_tag_holds_irrepros_columns_and_order():
    view = json.loads(ui_tags()[VIEW_TAG])
    assert view["name"] == "irrepro" and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    assert state["orderByKey"] == "tags.`mlflow.runName`" and state["orderByAsc"] is True
    assert state["selectedColumns"] == state["columnOrder"] == [
        "metrics.`excess_log_loss`", "metrics.`log_loss`", "metrics.`accuracy`",
        "metrics.`converged`", "params.`seed`"]


def test_an_experiment_made_before_the_tags_gets_them_when_written_to(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(tmp_path))
    experiment_id = client.create_experiment("old")
    Tracker(store_uri(tmp_path), "old", create=False)  # a reader leaves it as it is
    assert VIEW_TAG not in client.get_experiment(experiment_id).tags
    Tracker(store_uri(tmp_path), "old")
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert json.loads(tags[VIEW_TAG])["state"] == json.loads(ui_tags()[VIEW_TAG])["state"]


def test_the_view_is_in_the_url_only_where_the_experiment_holds_it():
    base = "http://h:5000/"
    assert runs_url(base, "7", ui_tags()) == (
        "http://h:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&viewStateShareKey=irrepro")
    assert runs_url(base, "7", {}) == (
        "http://h:5000/#/experiments/7/runs?workflowType=machine_learning")


@pytest.mark.parametrize("url, local", [
    ("http://0.0.0.0:5000", "http://127.0.0.1:5000"),
    ("http://[::]:5000", "http://127.0.0.1:5000"),
    ("http://10.1.2.3:5000", "http://10.1.2.3:5000"),
    ("http://box:80", "http://box:80"),
])
def test_links_to_a_server_on_every_interface_go_to_loopback(url, local):
    assert ui_links.local_url(url) == local


def test_the_links_stop_waiting_when_the_server_is_gone():
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    started = time.monotonic()
    assert not ui_links.wait_for_server(f"http://127.0.0.1:{free_port()}", 60, gone.pid)
    assert time.monotonic() - started < 5


def test_the_links_wait_a_bounded_time_and_say_so(capsys):
    started = time.monotonic()
    assert ui_links.main([f"http://127.0.0.1:{free_port()}", "--timeout", "1"]) == 1
    assert time.monotonic() - started < 5
    assert "did not answer within 1 s" in capsys.readouterr().err


def make_server_host(env_host, args):
    """The `--host` that `make -n server` gives mlflow, with HOST in the environment."""
    result = subprocess.run(["make", "-n", "-s", "-C", str(ROOT), "server", *args],
                            env={**os.environ, "HOST": env_host}, capture_output=True,
                            text=True, timeout=60, check=True)
    return re.findall(r"--host (\S+)", result.stdout)


def test_make_server_binds_loopback_unless_host_is_given_on_the_command_line():
    assert make_server_host("0.0.0.0", []) == ["127.0.0.1"]  # a shell's HOST is ignored
    assert make_server_host("elsewhere", ["HOST=0.0.0.0"]) == ["0.0.0.0"]
