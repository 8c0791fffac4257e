"""What one cached hit costs through ``WSGIMiddleware``, in microseconds, with and without the extras.

``python -m offload_bench.hit_cost [plain|metrics|server-timing]``: 7 runs of
100,000 hits of one URL on ``memory://`` (the answer kept decoded in the
process, as in production), the median and the fastest run. It measures the
hit path alone, without a server: what metrics and ``Server-Timing`` add to it.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any

import offload
import offload.metrics
from offload.replay import replayer_for
from offload.worker import Worker

RUNS = 7
HITS = 100_000


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def measure(mode: str) -> tuple[float, float]:
    """Median and fastest microseconds per hit."""
    options = {"server_timing": True} if mode == "server-timing" else {}
    middleware = offload.WSGIMiddleware(app, url=f"memory://{uuid.uuid4().hex}", worker_threads=0, **options)
    if mode == "metrics":
        offload.metrics.install(middleware, patterns={"/r*": "r"})
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/r",
        "QUERY_STRING": "a=1",
        "HTTP_HOST": "bench",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        pass

    middleware(dict(environ), start_response)
    Worker(middleware.offloader, replayer_for(middleware), burst=True, claim_wait=0.05).run(install_signals=False)
    for _ in range(1000):
        middleware(environ, start_response)
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(HITS):
            middleware(environ, start_response)
        runs.append((time.perf_counter() - started) / HITS * 1e6)
    return statistics.median(runs), min(runs)


def main() -> None:
    for mode in sys.argv[1:] or ["plain", "metrics", "server-timing"]:
        median, fastest = measure(mode)
        print(f"{mode:14} median {median:.2f} us/hit, fastest {fastest:.2f}")


if __name__ == "__main__":
    main()
