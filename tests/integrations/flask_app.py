"""The Flask app the integration tests offload, configured from the environment.

The test process and the worker processes (``rq worker``, ``celery worker``)
import this same module, so both build the same cache and queue, as a real
deployment does. ``OFFLOAD_TEST_STACK`` says which (see :func:`build`);
each execution of a handler appends a line to a file in
``OFFLOAD_TEST_COUNT_DIR``, so tests count executions across processes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response

import offload

#: The exact body the slow handler answers: every byte value, twice.
BODY = bytes(range(256)) * 2


def count_file(name: str) -> Path:
    return Path(os.environ["OFFLOAD_TEST_COUNT_DIR"]) / name


def executions(name: str) -> int:
    path = count_file(name)
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def build(stack: dict[str, str]) -> tuple[Any, Any, Any]:
    """The cache object, the queue object and the Celery app (or None) a stack description names."""
    cache: Any = stack["cache"]
    if stack.get("cache_client") == "pymemcache":
        from pymemcache.client.base import PooledClient

        host, _, port = stack["cache"].partition(":")
        cache = PooledClient((host, int(port)), connect_timeout=2, timeout=2)
    elif stack.get("cache_client") == "redis":
        import redis

        cache = redis.Redis.from_url(stack["cache"])
    celery_app = None
    if stack["queue"] == "rq":
        import redis
        import rq
        from rq.serializers import JSONSerializer, PickleSerializer

        serializer = JSONSerializer if stack["serializer"] == "json" else PickleSerializer
        queue: Any = rq.Queue(stack["rq_queue"], connection=redis.Redis.from_url(stack["redis"]), serializer=serializer)
    elif stack["queue"] == "celery":
        from celery import Celery

        from offload.integrations.celery import CeleryQueue

        celery_app = Celery("offload_tests", broker=stack["broker"])
        celery_app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
        queue = CeleryQueue(celery_app, queue=stack["celery_queue"])
    else:
        queue = stack["queue"]
    return cache, queue, celery_app


def create_app(stack: dict[str, str]) -> tuple[Flask, Any]:
    app = Flask(__name__)

    @app.get("/report/<name>")
    def report(name: str) -> Response:
        with count_file(name).open("ab") as counter:
            counter.write(b"ran\n")
        response = Response(BODY + name.encode(), mimetype="application/octet-stream")
        response.headers.add("Link", "</a>; rel=a")
        response.headers.add("Link", "</b>; rel=b")
        return response

    cache, queue, celery_app = build(stack)
    app.wsgi_app = offload.WSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, cache=cache, queue=queue, worker_threads=0, retry_backoff=0.1
    )
    return app, celery_app


_stack = os.environ.get("OFFLOAD_TEST_STACK")
if _stack:  # a worker process: build what the test process built
    app, celery = create_app(json.loads(_stack))


def shutdown(app: Flask) -> None:
    """Close every connection the app's middleware opened, the clients handed to it included."""
    offloader = app.wsgi_app.offloader  # type: ignore[attr-defined]
    if offloader._backend is None:
        return
    cache, queue = offloader.cache, offloader.queue
    cache.close()
    client = getattr(cache, "client", None) or getattr(cache, "_client", None)
    if client is not None and hasattr(client, "close"):
        client.close()
    rq_queue = getattr(queue, "queue", None)
    if rq_queue is not None:
        rq_queue.connection.close()
    queue.close()
