"""The app the waiting tests serve with ``offload serve``, as WSGI and as ASGI.

``/slow?s=N&run=R`` takes N seconds and answers ``done R``, with the
``Cache-Control`` given in ``cc``. Admission control is on, keyed by the
client's address: 3 new keys a minute, except for 127.0.0.1, which stands
for a trusted internal client (the other tests' requests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from offload import ASGIMiddleware, WSGIMiddleware


def client_id(header: Callable[[str], bytes | None], address: str) -> str | None:
    """Clients are limited by address; 127.0.0.1 is not limited."""
    return None if address == "127.0.0.1" else address


OPTIONS: dict[str, Any] = {"max_new_keys_per_minute": 3, "client_id": client_id, "max_wait": 20, "lease": 5}


def _parts(query: str) -> tuple[float, str, list[tuple[str, str]]]:
    params = parse_qs(query, keep_blank_values=True)
    extra = [("Cache-Control", params["cc"][0])] if "cc" in params else []
    return float(params.get("s", ["0"])[0]), params.get("run", [""])[0], extra


def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    seconds, run, extra = _parts(environ.get("QUERY_STRING", ""))
    time.sleep(seconds)
    start_response("200 OK", [("Content-Type", "text/plain"), *extra])
    return [f"done {run}".encode()]


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    seconds, run, extra = _parts(scope["query_string"].decode("latin-1"))
    await asyncio.sleep(seconds)
    headers = [(b"content-type", b"text/plain"), *[(n.encode(), v.encode()) for n, v in extra]]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": f"done {run}".encode()})


wsgi_app = WSGIMiddleware(wsgi, **OPTIONS)
asgi_app = ASGIMiddleware(asgi, **OPTIONS)
