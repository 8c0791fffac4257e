"""A plain ASGI callable, wrapped in one line.

``/gated`` is for tests that need a job to run for as long as they say: it
marks that it started, then waits until the test releases it (files in the
directory ``OFFLOAD_TEST_GATES`` names).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from offload import ASGIMiddleware

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def report_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # no lifespan, no websockets: a server may go on without them
    query = parse_qs(scope["query_string"].decode())
    name = query.get("name", ["world"])[0]
    if scope["path"] == "/gated":
        await _gate(query["token"][0])
    else:
        await asyncio.sleep(0.2)  # stands for the slow part
    body = f"hello {name}, computed by process {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def _gate(token: str) -> None:
    gates = Path(os.environ["OFFLOAD_TEST_GATES"])
    (gates / f"{token}.started").touch()
    while not (gates / f"{token}.release").exists():
        await asyncio.sleep(0.05)


app = ASGIMiddleware(report_app, ttl=600)
