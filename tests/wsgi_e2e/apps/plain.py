"""A plain WSGI callable with the routes most end-to-end tests use, wrapped in offload's middleware.

``bare`` is the app itself; ``application`` is the app served and replayed.
Every GET or HEAD handled here was replayed by a worker (the middleware
answers the others from the cache); a POST reaches the app directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import offload
from tests.wsgi_e2e.apps.common import BINARY, middleware_options, record

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class Body:
    """A body iterable in several chunks, with a ``close()`` as WSGI allows."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.chunks = []


def bare(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    record("start", method, path, query)
    params = parse_qs(query)
    if path == "/slow":
        time.sleep(float(params.get("s", ["1"])[0]))
    if path == "/boom":
        record("raise", method, path, query)
        raise RuntimeError("this handler always fails")
    if path == "/binary":
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Set-Cookie", "first=1; Path=/"),
                ("X-Between", "yes"),
                ("Set-Cookie", "second=2; Path=/; HttpOnly"),
            ],
        )
        record("end", method, path, query)
        return Body([BINARY[:1000], b"", BINARY[1000:]])
    if path.startswith("/echo") or method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        sent = environ["wsgi.input"].read(length) if length else b""
        body = repr((method, path, query, sent)).encode("utf-8", "backslashreplace")
    else:
        body = f"{method} {path}?{query}".encode("utf-8", "backslashreplace")
    start_response(
        "201 Created" if method == "POST" else "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), ("X-App", "plain")],
    )
    record("end", method, path, query)
    return [body]


application = offload.WSGIMiddleware(bare, **middleware_options())
