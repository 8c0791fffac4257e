"""Starlette: offload in the app's middleware list.

Serve it with ``offload serve tests.asgi.apps.starlette_app:app``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from offload import ASGIMiddleware


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
    yield {"greeting": "hello"}  # stands for a database pool or a client, opened once per process


async def report(request: Request) -> PlainTextResponse:
    await asyncio.sleep(0.2)  # stands for the slow part
    name = request.query_params.get("name", "world")
    return PlainTextResponse(f"{request.state.greeting} {name}, computed by process {os.getpid()}")


app = Starlette(
    routes=[Route("/report", report)],
    middleware=[Middleware(ASGIMiddleware, ttl=600)],
    lifespan=lifespan,
)
