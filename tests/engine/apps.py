"""The apps the engine tests run in a real ``offload worker``: built on first access from the environment.

``OFFLOAD_URL`` names the backend; ``ENGINE_LOG`` a file where each run of
the handler appends ``EVENT TARGET UNIX_TIME PID THREAD`` lines (``start``
and ``end``), in one ``write`` each; ``ENGINE_JOB_TIMEOUT``, ``ENGINE_LEASE`` and
``ENGINE_RETRY_BACKOFF`` those settings.
``?s=SECONDS`` makes the handler wait that long (``asyncio.sleep`` in the
ASGI app, ``time.sleep`` in the WSGI one); ``?hang=1`` never answers;
``?stubborn=SECONDS`` (ASGI) waits that long, ignoring its cancellation.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from offload import ASGIMiddleware, WSGIMiddleware


def note(event: str, target: str) -> None:
    log = os.environ.get("ENGINE_LOG")
    if log:
        line = f"{event} {target} {time.time():.6f} {os.getpid()} {threading.get_ident()}\n"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def options() -> dict[str, Any]:
    return {
        "url": os.environ["OFFLOAD_URL"],
        "job_timeout": float(os.environ.get("ENGINE_JOB_TIMEOUT") or 300),
        "lease": float(os.environ.get("ENGINE_LEASE") or 30),
        "retry_backoff": float(os.environ.get("ENGINE_RETRY_BACKOFF") or 1),
        "worker_threads": 0,
        "namespace": "engine",
    }


async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
    query = scope["query_string"].decode()
    target = f"{scope['path']}?{query}"
    params = parse_qs(query)
    note("start", target)
    if "hang" in params:
        await asyncio.sleep(3600)
    if "stubborn" in params:  # ignores its cancellation, for ?stubborn=SECONDS at most
        until = time.monotonic() + float(params["stubborn"][0])
        while time.monotonic() < until:
            try:
                await asyncio.sleep(until - time.monotonic())
            except asyncio.CancelledError:
                note("ignored", target)
    await asyncio.sleep(float(params.get("s", ["0"])[0]))
    note("end", target)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": target.encode()})


def wsgi_handler(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    target = f"{environ['PATH_INFO']}?{environ.get('QUERY_STRING', '')}"
    note("start", target)
    time.sleep(float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0"])[0]))
    note("end", target)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [target.encode()]


def __getattr__(name: str) -> Any:
    if name == "asgi":
        return ASGIMiddleware(handler, **options())
    if name == "wsgi":
        return WSGIMiddleware(wsgi_handler, **options())
    raise AttributeError(name)
