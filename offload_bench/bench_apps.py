"""The apps the benchmark serves, each a ``MODULE:ATTR`` for gunicorn, uvicorn, granian and ``offload worker``.

Every handler answers the same constant body (``BENCH_BODY_SIZE`` bytes,
1 KiB by default), so the bare app and the cached answer are byte for byte
the same response. ``?cpu=MS`` makes the handler burn that much CPU first
(the frontend-isolation scenario). When ``BENCH_LOG`` names a file, each
execution appends one line, ``TARGET START_TIME``, in one ``write`` on an
``O_APPEND`` descriptor: the benchmark counts executions and reads job start
times from it.

The attributes are built on first access, so a server that imports one app
does not import the frameworks of the others:

``wsgi_bare``, ``asgi_bare``
    the handler alone.
``wsgi_offload``, ``asgi_offload``
    the handler behind offload's middleware (backend from ``OFFLOAD_URL``).
``flask_cached``
    a Flask view under Flask-Caching's ``@cache.cached`` (``RedisCache`` at ``BENCH_REDIS``).
``fastapi_cached``
    a FastAPI route under fastapi-cache2's ``@cache`` (``RedisBackend`` at ``BENCH_REDIS``).
``job``, ``celery_app``, ``procrastinate_app``
    the trivial job that rq, Celery and procrastinate run (the handler's work
    for one URL), the Celery app (broker at ``BENCH_REDIS``) and the
    procrastinate app (PostgreSQL at ``BENCH_POSTGRES``) that have it as ``bench.job``.
``asgi_sleep``
    an ASGI app behind offload's middleware (namespace ``bench-sleep``) whose
    handler logs its start, then awaits ``asyncio.sleep`` for ``?sleep_ms=``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

BODY = b"x" * (int(os.environ.get("BENCH_BODY_SIZE") or 1024) - 1) + b"\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
TTL = 3600.0


def record(target: str) -> None:
    """Write down one execution of the handler, when ``BENCH_LOG`` asks for it."""
    log = os.environ.get("BENCH_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{target} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)


def burn(query: str) -> None:
    """Spend ``cpu`` milliseconds of CPU if the query asks for it."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "cpu" and value.isdigit():
            until = time.process_time() + int(value) / 1000
            while time.process_time() < until:
                sum(range(200))


def job(target: str = "/") -> bytes:
    """The trivial job of the queue comparison: what the handler does for ``target``."""
    record(target)
    burn(target.partition("?")[2])
    return BODY


def wsgi_handler(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    query = str(environ.get("QUERY_STRING", ""))
    if query or os.environ.get("BENCH_LOG"):
        job(str(environ.get("PATH_INFO", "/")) + (f"?{query}" if query else ""))
    start_response("200 OK", HEADERS)
    return [BODY]


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_ASGI_HEADERS = [(name.lower().encode(), value.encode()) for name, value in HEADERS]


async def asgi_handler(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    if query or os.environ.get("BENCH_LOG"):
        job(str(scope.get("path", "/")) + (f"?{query}" if query else ""))
    await send({"type": "http.response.start", "status": 200, "headers": _ASGI_HEADERS})
    await send({"type": "http.response.body", "body": BODY})


#: The namespace of ``asgi_sleep``, so that a benchmark can queue its jobs from another process.
SLEEP_NAMESPACE = "bench-sleep"


async def asgi_sleep_handler(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # no lifespan: the worker runs it without one
        return
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    record(f"{scope.get('path', '/')}?{query}")
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "sleep_ms" and value.isdigit():
            await asyncio.sleep(int(value) / 1000)
    await send({"type": "http.response.start", "status": 200, "headers": _ASGI_HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def _asgi_sleep() -> Any:
    from offload import ASGIMiddleware

    return ASGIMiddleware(asgi_sleep_handler, ttl=TTL, namespace=SLEEP_NAMESPACE)


def _procrastinate_app() -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_POSTGRES"]))
    app.task(name="bench.job")(job)
    return app


def _wsgi_offload() -> Any:
    from offload import WSGIMiddleware

    return WSGIMiddleware(wsgi_handler, ttl=TTL)


def _asgi_offload() -> Any:
    from offload import ASGIMiddleware

    return ASGIMiddleware(asgi_handler, ttl=TTL)


def _flask_cached() -> Any:
    from flask import Flask, Response
    from flask_caching import Cache

    app = Flask("bench")
    cache = Cache(app, config={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": os.environ["BENCH_REDIS"]})

    @app.route("/<path:path>")
    @app.route("/")
    @cache.cached(timeout=int(TTL), query_string=True)
    def view(path: str = "") -> Response:
        return Response(BODY, content_type="text/plain")

    return app


def _fastapi_cached() -> Any:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse
    from fastapi_cache import FastAPICache
    from fastapi_cache.backends.redis import RedisBackend
    from fastapi_cache.decorator import cache
    from redis import asyncio as aioredis

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        FastAPICache.init(RedisBackend(aioredis.from_url(os.environ["BENCH_REDIS"])), prefix="bench")
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/{path:path}", response_class=PlainTextResponse)
    @cache(expire=int(TTL))
    async def view(path: str) -> str:
        return BODY.decode()

    return app


def _celery_app() -> Any:
    from celery import Celery

    app = Celery("bench", broker=os.environ["BENCH_REDIS"])
    app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    app.task(name="bench.job")(job)
    return app


_FACTORIES: dict[str, Callable[[], Any]] = {
    "wsgi_bare": lambda: wsgi_handler,
    "asgi_bare": lambda: asgi_handler,
    "wsgi_offload": _wsgi_offload,
    "asgi_offload": _asgi_offload,
    "flask_cached": _flask_cached,
    "fastapi_cached": _fastapi_cached,
    "celery_app": _celery_app,
    "procrastinate_app": _procrastinate_app,
    "asgi_sleep": _asgi_sleep,
}
_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _built:
        _built[name] = factory()
    return _built[name]
