"""The app the chaos harness serves: every execution of its handler is written down.

Each run of the handler appends one line, ``TARGET PID START_TIME``, to the
file named by ``OFFLOAD_BENCH_LOG`` (one ``write`` on an ``O_APPEND``
descriptor, so lines from many processes never mix). The harness counts
executions per URL from that file. The handler sleeps ``ms`` milliseconds
(query parameter) and answers ``done TARGET``, so a client can check that
it got the answer of its own URL.

The middleware's options come from the environment, so the web processes
and ``offload worker offload_bench.app:app`` share them:
``OFFLOAD_BENCH_LEASE``, ``OFFLOAD_BENCH_MAX_QUEUED``, ``OFFLOAD_BENCH_TTL``,
``OFFLOAD_BENCH_PENDING_TTL``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from offload import WSGIMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def target_of(environ: WSGIEnvironment) -> str:
    query = str(environ.get("QUERY_STRING", ""))
    return str(environ.get("PATH_INFO", "/")) + (f"?{query}" if query else "")


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    target = target_of(environ)
    log = os.environ.get("OFFLOAD_BENCH_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{target} {os.getpid()} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)
    params = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    milliseconds = int(params.get("ms", "0") or 0)
    if milliseconds > 0:
        time.sleep(milliseconds / 1000)
    body = f"done {target}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _number(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


app = WSGIMiddleware(
    application,
    ttl=_number("OFFLOAD_BENCH_TTL", 3600),
    lease=_number("OFFLOAD_BENCH_LEASE", 30),
    max_queued=int(_number("OFFLOAD_BENCH_MAX_QUEUED", 10_000)),
    pending_ttl=_number("OFFLOAD_BENCH_PENDING_TTL", 600),
    retry_after=1,
)
