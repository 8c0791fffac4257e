"""FastAPI: one ``add_middleware`` line; the worker runs the app's lifespan, as the server does.

Serve it with ``offload serve tests.asgi.apps.fastapi_app:app``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from offload import ASGIMiddleware


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
    yield {"greeting": "hello"}  # stands for a database pool or a client, opened once per process


app = FastAPI(lifespan=lifespan)
app.add_middleware(ASGIMiddleware, ttl=600)


@app.get("/report", response_class=PlainTextResponse)
async def report(request: Request, name: str = "world") -> str:
    await asyncio.sleep(0.2)  # stands for the slow part
    return f"{request.state.greeting} {name}, computed by process {os.getpid()}"
