"""Print the runs table URL of every experiment once an MLflow server answers.

`make ui` and `make server` start it in the background beside the server:
`python -m irrepro.ui_links URL --pid PID` waits for `URL/health` (at most `--timeout`
seconds, and no longer than process PID, the server, lives), then prints one line per
experiment, `name: URL of its runs table`.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
import urllib.request

from irrepro.tracking import _alive, runs_url

# Hosts a server binds to answer on every interface; a browser here reaches them on loopback.
_WILDCARD_HOSTS = ("0.0.0.0", "::")


def local_url(url: str) -> str:
    """`url` with a wildcard host replaced by 127.0.0.1, so that a browser here can open it."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in _WILDCARD_HOSTS:
        return url
    netloc = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def wait_for_server(url: str, timeout: float, pid: int | None = None) -> bool:
    """Whether `url/health` answered within `timeout` seconds, while process `pid` (if given)
    still ran."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (pid is None or _alive(pid)):
        try:
            urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5).close()
            return True
        except OSError:
            time.sleep(0.5)
    return False


def experiment_links(url: str) -> list[str]:
    """One line per active experiment of the server at `url`, by name: `name: runs table URL`."""
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(tracking_uri=url).search_experiments()
    return [f"{e.name}: {runs_url(url, e.experiment_id, e.tags)}"
            for e in sorted(experiments, key=lambda e: e.name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m irrepro.ui_links", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds to wait for the server (default: 600)")
    parser.add_argument("--pid", type=int, help="stop waiting when this process (the server) ends")
    args = parser.parse_args(argv)
    url = local_url(args.url)
    if not wait_for_server(url, args.timeout, args.pid):
        if args.pid is None or _alive(args.pid):
            print(f"ui_links: {url} did not answer within {args.timeout:g} s", file=sys.stderr)
        return 1
    lines = experiment_links(url)
    print(f"MLflow UI at {url}; the runs table of each experiment:", *lines, sep="\n",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
