"""The cost of one hit, in process: fresh, stale (stale-while-revalidate), and a 304, against the bare app.

``python -m offload_bench.hits [--rounds 5] [--requests 50000]`` calls a WSGI
middleware directly, as a server would, with no HTTP in between, so the
figures are offload's own cost per request: microseconds per call, the best
of several rounds (the least disturbed by the rest of the machine), and the
ratio of each kind of hit to a fresh one measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from offload import WSGIMiddleware
from offload.replay import replayer_for
from offload.worker import Worker

BODY = b"x" * 1023 + b"\n"


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    cache_control = "max-age=1, stale-while-revalidate=3600" if environ["PATH_INFO"] == "/stale" else "max-age=3600"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", cache_control)])
    return [BODY]


def environ_for(path: str, **headers: str) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
    }
    environ.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    return environ


def per_call(call: Callable[[], int], requests: int, rounds: int) -> float:
    """Microseconds per call: the best of ``rounds`` runs of ``requests`` calls."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests):
            call()
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


def caller(target: Any, environ: dict[str, Any]) -> Callable[[], int]:
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def call() -> int:
        for _ in target(dict(environ), start_response):
            pass
        return len(statuses)

    return call


def measure(url: str, requests: int, rounds: int) -> dict[str, float]:
    middleware = WSGIMiddleware(app, url=url, worker_threads=0)
    for path in ("/fresh", "/stale"):
        caller(middleware, environ_for(path))()
    Worker(middleware.offloader, replayer_for(middleware), burst=True, claim_wait=0.05).run(install_signals=False)
    time.sleep(1.1)  # /stale is past its max-age=1, within its stale-while-revalidate window
    fresh = caller(middleware, environ_for("/fresh"))
    seen: list[tuple[str, str]] = []
    for _ in range(2):  # the second read is served from the process's memory, as every later one
        seen.clear()
        middleware(environ_for("/fresh"), lambda status, headers, exc_info=None: seen.extend(headers))
    etag = dict(seen)["ETag"]
    figures = {
        "bare app": per_call(caller(app, environ_for("/fresh")), requests, rounds),
        "fresh hit": per_call(fresh, requests, rounds),
        "stale hit (SWR)": per_call(caller(middleware, environ_for("/stale")), requests, rounds),
        "304 hit": per_call(caller(middleware, environ_for("/fresh", IF_NONE_MATCH=etag)), requests, rounds),
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        backends = {"memory": "memory://hits", "sqlite": f"sqlite:///{directory}/hits.sqlite3"}
        print(f"{'backend':8} {'kind':18} {'us/call':>8} {'vs fresh hit':>13}")
        for name, url in backends.items():
            figures = measure(url, args.requests, args.rounds)
            for kind, micros in figures.items():
                ratio = micros / figures["fresh hit"]
                print(f"{name:8} {kind:18} {micros:8.2f} {ratio:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
