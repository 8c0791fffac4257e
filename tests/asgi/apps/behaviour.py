"""The behaviour suite's app (``tests/behaviour/apps.py``) as a plain ASGI callable.

Same routes, same answers, same call counting, so the one behaviour suite
holds both middlewares to the same promises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from tests.behaviour.apps import BINARY, _count

Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _answer(send: Send, status: int, headers: list[tuple[str, str]], *chunks: bytes) -> None:
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    for chunk in chunks[:-1]:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": chunks[-1] if chunks else b""})


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"this app serves http only, not {scope['type']}")
    raw = scope.get("raw_path")
    path = (unquote_to_bytes(raw) if raw else scope["path"].encode()).decode("latin-1")  # as WSGI's PATH_INFO
    query = scope["query_string"].decode("latin-1")
    headers = {bytes(n).decode("latin-1"): bytes(v).decode("latin-1") for n, v in scope["headers"]}
    _count(path)
    if scope["method"] == "POST":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await _answer(send, 201, [("Content-Type", "text/plain")], b"posted:" + body)
    elif path == "/hello":
        await _answer(send, 200, [("Content-Type", "text/plain"), ("X-Served-By", "app")], b"hello " + query.encode())
    elif path == "/binary":
        headers_out = [("Content-Type", "application/octet-stream"), ("Link", "</a>; rel=a")]
        headers_out += [("X-Twice", "1"), ("Link", "</b>; rel=b")]
        await _answer(send, 200, headers_out, BINARY[:100], b"", BINARY[100:])
    elif path == "/missing":
        await _answer(send, 404, [("Content-Type", "text/plain")], b"no such thing")
    elif path == "/boom":
        raise RuntimeError("the handler failed")
    elif path == "/whoami":
        who = f"auth={headers.get('authorization', '')};cookie={headers.get('cookie', '')}"
        await _answer(send, 200, [("Content-Type", "text/plain")], who.encode("latin-1"))
    elif path == "/headers":
        seen = sorted(f"{name}={value}" for name, value in headers.items())
        client = scope.get("client")
        seen.append(f"remote-addr={client[0] if client else ''}")
        await _answer(send, 200, [("Content-Type", "text/plain")], "\n".join(seen).encode("latin-1"))
    elif path == "/big":
        size = int(query.partition("=")[2] or 0)
        await _answer(send, 200, [("Content-Type", "application/octet-stream")], *[b"x" * 1024] * (size // 1024))
    elif path == "/slow":
        await asyncio.sleep(float(query.partition("=")[2] or 1))
        await _answer(send, 200, [("Content-Type", "text/plain")], b"slow done")
    elif path == "/echo":
        await _answer(
            send, 200, [("Content-Type", "text/plain")], repr((path, query)).encode("utf-8", "surrogateescape")
        )
    else:
        await _answer(send, 200, [("Content-Type", "text/plain")], b"path " + path.encode("latin-1"))
