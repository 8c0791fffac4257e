"""The app the operations tests serve: one route per thing an operator must see move.

``app`` dispatches ``/metrics`` to the Prometheus exposition, ``/down/...`` and
``/pass/...`` to middlewares whose backend cannot be reached (503 ``outage``,
and the app answering by itself), and everything else to ``main``, the
middleware on the test's SQLite file (``OFFLOAD_URL``) whose jobs the workers
run. Its ``app`` attribute is ``main``, so ``offload worker`` finds it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import offload
import offload.logs
import offload.metrics

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

PATTERNS = {"/report*": "reports", "/fresh": "fresh", "/boom": "boom", "/crash": "crash"}
DOWN = "redis://127.0.0.1:1/0"  # nothing listens there: every backend call is an outage


def bare(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    headers = [("Content-Type", "text/plain")]
    if path == "/boom":
        raise RuntimeError("this handler always fails")
    if path == "/crash" and Path(os.environ["OPS_CRASH_FLAG"]).exists():
        os._exit(3)  # the job kills its worker, as a segfault or the OOM killer would
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING", "").partition("=")[2] or 1))
    if path == "/fresh":
        headers.append(("Cache-Control", "max-age=1, stale-while-revalidate=60"))
    start_response("200 OK", headers)
    return [f"{path} at {time.time()}\n".encode()]


options: dict[str, Any] = {
    "lease": 1.0,
    "job_timeout": float(os.environ.get("OPS_JOB_TIMEOUT", "2.5")),
    "max_attempts": 2,
    "retry_backoff": 0.05,
    "max_deliveries": 1,
    "max_queued": int(os.environ.get("OPS_MAX_QUEUED", "100")),
    "error_ttl": 30,
    "namespace": "ops",
    "max_url": 2048,
}
main = offload.WSGIMiddleware(bare, **options)
down = offload.WSGIMiddleware(bare, url=DOWN, namespace="ops-down")
passing = offload.WSGIMiddleware(bare, url=DOWN, namespace="ops-pass", passthrough_on_error=True)
if os.environ.get("OPS_METRICS"):
    for middleware in (main, down, passing):
        offload.metrics.install(middleware, patterns=PATTERNS)
        offload.logs.install(middleware)  # offload serve --log-format logs the middleware it finds, not these


class Dispatcher:
    def __init__(self) -> None:
        self.app = main
        self.metrics = offload.metrics.wsgi_app() if os.environ.get("OPS_METRICS") else None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics" and self.metrics is not None:
            return self.metrics(environ, start_response)
        for prefix, middleware in (("/down", down), ("/pass", passing)):
            if path.startswith(prefix + "/"):
                environ["PATH_INFO"] = path[len(prefix) :]
                return middleware(environ, start_response)
        return main(environ, start_response)


app = Dispatcher()
