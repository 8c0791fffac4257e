"""Apps the security tests put behind offload, as WSGI and as ASGI, with the same answers.

Every answer of an app carries ``X-From-App: 1``, so a test can tell the app's
answers from offload's own (202, 414, 431, 503). ``/whoami`` echoes the
credentials and custom headers it saw; ``/stream?n=BYTES`` streams a body of
``n`` bytes in 1 MiB chunks, counting the chunks it produced so a test can see
where the worker stopped pulling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

CHUNK = 1 << 20
FROM_APP = ("X-From-App", "1")
#: Request headers ``/whoami`` echoes, one line each.
ECHOED = ("authorization", "cookie", "x-tenant", "x-other")

#: Chunks produced by ``/stream`` answers, and whether their body was closed.
produced: list[int] = []
closed: list[bool] = []

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def whoami(headers: dict[str, bytes | None]) -> bytes:
    """The body ``/whoami`` answers for these request headers (None: absent)."""
    lines = []
    for name in ECHOED:
        value = headers.get(name)
        lines.append(name.encode() + (b"=" + value if value is not None else b" absent"))
    return b"\n".join(lines)


def _stream_size(query: bytes) -> int:
    name, _, value = query.partition(b"=")
    return int(value) if name == b"n" and value.isdigit() else 0


def _many_headers(query: bytes) -> list[tuple[str, str]]:
    return [(f"X-H{n}", "v" * 20) for n in range(_stream_size(query))]


class StreamBody:
    """A WSGI body of ``size`` bytes made one chunk at a time, as a huge report or export would be."""

    def __init__(self, size: int) -> None:
        self.size = size
        produced.append(0)
        closed.append(False)

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        while sent < self.size:
            produced[-1] += 1
            chunk = bytes(min(CHUNK, self.size - sent))  # a new object each time: nothing is shared
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        closed[-1] = True


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "").encode("latin-1", "replace")
    if path == "/whoami":
        seen = {}
        for name in ECHOED:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            seen[name] = None if value is None else value.encode("latin-1")
        start_response("200 OK", [("Content-Type", "text/plain"), FROM_APP])
        return [whoami(seen)]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream"), FROM_APP])
        return StreamBody(_stream_size(query))
    if path == "/many-headers":
        start_response("200 OK", [FROM_APP, *_many_headers(query)])
        return [b"many"]
    start_response("200 OK", [("Content-Type", "text/plain"), FROM_APP])
    return [b"ok"]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"this app serves http only, not {scope['type']}")  # no lifespan: that is allowed
    raw = scope.get("raw_path")
    path = (unquote_to_bytes(raw) if raw else scope["path"].encode("utf-8", "surrogatepass")).decode("latin-1")
    query = bytes(scope.get("query_string", b""))
    start = {"type": "http.response.start", "status": 200}
    from_app = (FROM_APP[0].encode(), FROM_APP[1].encode())
    if path == "/whoami":
        seen: dict[str, bytes | None] = dict.fromkeys(ECHOED)
        for name, value in scope["headers"]:
            key = bytes(name).decode("latin-1").lower()
            if key in seen:
                before = seen[key]
                seen[key] = bytes(value) if before is None else before + b"," + bytes(value)
        await send({**start, "headers": [from_app]})
        await send({"type": "http.response.body", "body": whoami(seen)})
    elif path == "/stream":
        size = _stream_size(query)
        produced.append(0)
        closed.append(False)
        await send({**start, "headers": [from_app]})
        sent = 0
        try:
            while sent < size:
                produced[-1] += 1
                chunk = bytes(min(CHUNK, size - sent))
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": sent < size})
        finally:
            closed[-1] = True
    elif path == "/many-headers":
        headers = [from_app] + [(n.encode(), v.encode()) for n, v in _many_headers(query)]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": b"many"})
    else:
        await send({**start, "headers": [from_app, (b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
