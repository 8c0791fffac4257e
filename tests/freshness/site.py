"""The app the freshness tests serve with ``offload serve``, as WSGI and as ASGI, with the same answers.

``/counter?run=R&cc=...`` counts its executions per run in a file and answers
the count, with the ``Cache-Control`` given in ``cc``; ``fail`` (a file
``fail-R`` exists) makes it answer 500. ``/tagged?run=R&tag=T`` labels its
answer with ``Offload-Tags``. ``/validators`` answers with the app's own
``ETag`` and ``Last-Modified``. The options are the defaults but for short
timers: answers live ``ttl=300`` unless the app says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from offload import ASGIMiddleware, WSGIMiddleware

OPTIONS: dict[str, Any] = {"ttl": 300, "error_ttl": 1, "max_attempts": 1, "lease": 5}


def _directory() -> Path:
    return Path(os.environ.get("OFFLOAD_ISOLATION_DIR", "."))


def answer(path: str, query: str) -> tuple[int, list[tuple[str, str]], bytes]:
    params = parse_qs(query, keep_blank_values=True)
    run = params.get("run", [""])[0]
    plain = [("Content-Type", "text/plain")]
    if path == "/counter":
        counter = _directory() / f"counter-{run}"
        count = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(count))
        if (_directory() / f"fail-{run}").exists():
            return 500, plain, b"the refresh failed"
        extra = [("Cache-Control", params["cc"][0])] if "cc" in params else []
        return 200, [*plain, *extra], f"count {count}".encode()
    if path == "/tagged":
        tags = ", ".join([*params.get("tag", []), f"run-{run}"])
        return 200, [*plain, ("Offload-Tags", tags)], f"tagged {tags}".encode()
    if path == "/validators":
        validators = [("ETag", 'W/"app-v1"'), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")]
        return 200, [*plain, *validators], b"validated by the app"
    return 404, plain, b"no such route"


def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    status, headers, body = answer(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
    start_response(f"{status} X", headers)
    return [body]


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    status, headers, body = answer(scope["path"], scope["query_string"].decode("latin-1"))
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    await send({"type": "http.response.body", "body": body})


wsgi_app = WSGIMiddleware(wsgi, **OPTIONS)
asgi_app = ASGIMiddleware(asgi, **OPTIONS)
