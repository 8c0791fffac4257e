"""The app the behaviour suite offloads, as WSGI (and, beside it, the same app as ASGI).

Each route exercises one promise: exact bytes, repeated headers, failures,
credentials. ``calls`` counts executions per path, so tests can assert that a
handler ran exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

calls: Counter[str] = Counter()
closed: list[str] = []
_lock = threading.Lock()

BINARY = bytes(range(256)) * 4


def _count(path: str) -> None:
    with _lock:
        calls[path] += 1


class ClosingBody:
    """A body iterable that records its close(), as WSGI servers must call it."""

    def __init__(self, chunks: list[bytes], name: str) -> None:
        self.chunks = chunks
        self.name = name

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        closed.append(self.name)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    _count(path)
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"posted:" + data]
    if path == "/hello":
        body = b"hello " + environ.get("QUERY_STRING", "").encode("latin-1")
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Served-By", "app")])
        return [body]
    if path == "/binary":
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Link", "</a>; rel=a"),
                ("X-Twice", "1"),
                ("Link", "</b>; rel=b"),
            ],
        )
        return ClosingBody([BINARY[:100], b"", BINARY[100:]], "/binary")
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such thing"]
    if path == "/boom":
        raise RuntimeError("the handler failed")
    if path == "/whoami":
        who = f"auth={environ.get('HTTP_AUTHORIZATION', '')};cookie={environ.get('HTTP_COOKIE', '')}"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [who.encode("latin-1")]
    if path == "/headers":  # every request header the app sees, and the client address
        seen = sorted(
            f"{key[5:].lower().replace('_', '-')}={value}" for key, value in environ.items() if key.startswith("HTTP_")
        )
        seen.append(f"remote-addr={environ.get('REMOTE_ADDR', '')}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["\n".join(seen).encode("latin-1")]
    if path == "/big":
        size = int(environ.get("QUERY_STRING", "n=0").partition("=")[2] or 0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * 1024 for _ in range(size // 1024))
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING", "s=1").partition("=")[2] or 1))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow done"]
    if path == "/echo":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr((environ.get("PATH_INFO"), environ.get("QUERY_STRING"))).encode("utf-8", "surrogateescape")]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"path " + path.encode("latin-1")]
