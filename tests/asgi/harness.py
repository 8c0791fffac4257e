"""The ASGI side of the behaviour suite: the same app and the same requests, through ASGIMiddleware.

``ASGI_HARNESS`` is picked up by ``tests/conftest.py``, so every test in
``tests/behaviour`` runs once per protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from offload.asgi import ASGIMiddleware
from tests.asgi.apps.behaviour import app as behaviour_app
from tests.behaviour.harness import Harness, Result


class ASGIHarness(Harness):
    """Calls the wrapped app as an ASGI server would, one event loop per request.

    Paths are given as WSGI spells them (bytes as latin-1 text); they are sent
    percent-encoded in ``raw_path`` and decoded in ``path``, as uvicorn does.
    """

    def __init__(self, app: Any, **options: Any) -> None:
        options.setdefault("worker_threads", 0)
        self.middleware = ASGIMiddleware(app, **options)

    def request(
        self, method: str, path: str, query: str = "", headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Result:
        return asyncio.run(self.arequest(method, path, query, headers, body))

    async def arequest(
        self, method: str, path: str, query: str = "", headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Result:
        raw = path.encode("latin-1")
        scope = http_scope(method, raw, query.encode("latin-1"), headers or [])
        if body:
            scope["headers"].append((b"content-length", str(len(body)).encode()))
        return await call_asgi(self.middleware, scope, body)


def http_scope(method: str, path: bytes, query: bytes, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """An ``http`` scope as uvicorn builds it for this request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.decode("utf-8", "replace"),
        "raw_path": quote(path, "/:@!$&'()*+,;=-._~").encode("ascii"),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def call_asgi(app: Any, scope: dict[str, Any], body: bytes = b"") -> Result:
    """Call an ASGI app once and collect its answer, checking the messages it sends."""
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    assert all(message["type"] == "http.response.body" for message in bodies)
    assert bodies and not bodies[-1].get("more_body", False), "the answer must be complete"
    headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in start.get("headers", [])]
    return Result(start["status"], headers, b"".join(message.get("body", b"") for message in bodies))


def ASGI_HARNESS(**options: Any) -> Harness:  # the name tests/conftest.py looks for
    return ASGIHarness(behaviour_app, **options)
