"""Quart: wrap ``app.asgi_app``, so that ``app`` stays a Quart app; ``before_serving`` runs in the worker too.

Serve it with ``offload serve tests.asgi.apps.quart_app:app``.
"""

from __future__ import annotations

import asyncio
import os

from quart import Quart, request

from offload import ASGIMiddleware

app = Quart(__name__)
app.asgi_app = ASGIMiddleware(app.asgi_app, ttl=600)  # type: ignore[method-assign]

resources: dict[str, str] = {}


@app.before_serving
async def open_resources() -> None:
    resources["greeting"] = "hello"  # stands for a database pool or a client, opened once per process


@app.get("/report")
async def report() -> tuple[str, int, dict[str, str]]:
    await asyncio.sleep(0.2)  # stands for the slow part
    name = request.args.get("name", "world")
    return f"{resources['greeting']} {name}, computed by process {os.getpid()}", 200, {"Content-Type": "text/plain"}
