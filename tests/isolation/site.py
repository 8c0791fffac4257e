"""The app the isolation tests serve with ``offload serve``, as WSGI and as ASGI, with the same answers.

Every route exercises one promise of the isolation model. Files in
``OFFLOAD_ISOLATION_DIR`` let a test see what the app did (attempts of a job,
executions that killed their worker) and change what it computes (``version``).
The options are those of a deployment with short timers, so that failures,
timeouts and dead letters happen within seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from offload import ASGIMiddleware, WSGIMiddleware

OPTIONS: dict[str, Any] = {
    "ttl": 60,
    "error_ttl": 2,
    "max_attempts": 2,
    "retry_backoff": 0.2,
    "lease": 2,
    "job_timeout": 3,
    "max_deliveries": 2,
    "private_ttl": 5,
}


def _directory() -> Path:
    return Path(os.environ.get("OFFLOAD_ISOLATION_DIR", "."))


def _note(name: str, line: str) -> None:
    with (_directory() / name).open("a") as notes:
        notes.write(line + "\n")


def answer(
    method: str, scheme: str, host: str, path: str, query: str, headers: dict[str, str], client: str, app: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body for a request: the logic both protocols share."""
    params = parse_qs(query, keep_blank_values=True)
    run = params.get("run", [""])[0]
    plain = [("Content-Type", "text/plain")]
    if path == "/echo":  # everything the app was given, and an absolute URL built from it
        seen = {"app": app, "scheme": scheme, "host": host, "query": query, "headers": headers, "client": client}
        body = json.dumps(seen, sort_keys=True).encode()
        return 200, [("Content-Type", "application/json"), ("Location", f"{scheme}://{host}/next")], body
    if path == "/cookie":
        token = uuid.uuid4().hex
        return 200, [*plain, ("Set-Cookie", f"token={token}; Path=/")], token.encode()
    if path in ("/private", "/no-store", "/no-cache", "/vary-star"):
        header = {
            "/private": ("Cache-Control", "private, max-age=60"),
            "/no-store": ("Cache-Control", "no-store"),
            "/no-cache": ("Cache-Control", "no-cache"),
            "/vary-star": ("Vary", "*"),
        }[path]
        return 200, [*plain, header], uuid.uuid4().hex.encode()
    if path == "/lang":
        return 200, [*plain, ("Vary", "Accept-Language")], f"lang={headers.get('accept-language', 'none')}".encode()
    if path == "/fail":
        _note(f"fail-{run}", "attempt")
        return 500, plain, b"the view failed"
    if path == "/bad-header":
        return 200, [*plain, ("X-Bad", "a\r\nb")], b"never sent on"
    if path == "/die":
        _note(f"die-{run}", "started")
        os._exit(3)
    if path == "/versioned":
        version = (_directory() / "version").read_text().strip()
        _note(f"versioned-{run}", f"computing {version}")
        time.sleep(float(params.get("s", ["1"])[0]))
        return 200, plain, f"version {version}".encode()
    return 404, plain, b"no such route"


def _wsgi(app_name: str) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/hang":
            time.sleep(float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["30"])[0]))
        headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
        status, out, body = answer(
            environ["REQUEST_METHOD"],
            environ["wsgi.url_scheme"],
            environ.get("HTTP_HOST", ""),
            path,
            environ.get("QUERY_STRING", ""),
            headers,
            environ.get("REMOTE_ADDR", ""),
            app_name,
        )
        start_response(f"{status} X", out)
        return [body]

    return app


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _asgi(app_name: str) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        query = scope["query_string"].decode("latin-1")
        if path == "/hang":
            await asyncio.sleep(float(parse_qs(query).get("s", ["30"])[0]))
        headers = {bytes(n).decode("latin-1"): bytes(v).decode("latin-1") for n, v in scope["headers"]}
        client = scope.get("client")
        status, out, body = answer(
            scope["method"],
            scope["scheme"],
            headers.get("host", ""),
            path,
            query,
            headers,
            client[0] if client else "",
            app_name,
        )
        encoded = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in out]
        await send({"type": "http.response.start", "status": status, "headers": encoded})
        await send({"type": "http.response.body", "body": body})

    return app


def shop_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    return _shop_wsgi(environ, start_response)


def blog_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    return _blog_wsgi(environ, start_response)


async def shop_asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await _shop_asgi(scope, receive, send)


async def blog_asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await _blog_asgi(scope, receive, send)


_shop_wsgi, _blog_wsgi = _wsgi("shop"), _wsgi("blog")
_shop_asgi, _blog_asgi = _asgi("shop"), _asgi("blog")

# Two apps that name no namespace: each gets one derived from its own function.
wsgi_app = WSGIMiddleware(shop_wsgi, **OPTIONS)
other_wsgi_app = WSGIMiddleware(blog_wsgi, **OPTIONS)
asgi_app = ASGIMiddleware(shop_asgi, **OPTIONS)
other_asgi_app = ASGIMiddleware(blog_asgi, **OPTIONS)
