"""Which requests a middleware offloads (paths, exclude, marked views) and the client script it serves.

A request the routes leave to the app never reaches the backend: the
middlewares here have a backend that fails every call.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from offload import ASGIMiddleware, ConfigurationError, WSGIMiddleware
from offload.routes import CLIENT_SCRIPT, Routes, marked, no_offload, offload


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the app"]


def call(middleware: Any, path: str, method: str = "GET", **headers: str) -> tuple[str, dict[str, str], bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "HTTP_HOST": "test",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        **{"HTTP_" + name.upper(): value for name, value in headers.items()},
    }
    status: list[Any] = []
    body = b"".join(middleware(environ, lambda line, headers: status.extend([line, dict(headers)])))
    return status[0], status[1], body


def unreachable(**options: Any) -> WSGIMiddleware:
    """A middleware whose backend cannot be opened: a request that reaches it answers 503."""
    return WSGIMiddleware(app, url="sqlite:////nonexistent/dir/offload.sqlite3", worker_threads=0, **options)


def test_without_routing_options_every_get_is_offloaded_and_no_routes_are_built() -> None:
    middleware = unreachable()
    assert middleware.routes is None
    assert call(middleware, "/anything")[0].startswith(("202", "503"))


def test_paths_and_exclude_choose_before_any_backend_call() -> None:
    middleware = unreachable(paths=["/reports/*"], exclude=["/reports/live*"])
    assert call(middleware, "/") == ("200 OK", {"Content-Type": "text/plain"}, b"the app")
    assert call(middleware, "/reports/live/now")[2] == b"the app"
    assert not call(middleware, "/reports/q3")[0].startswith("200"), "offloaded: the backend is asked"


def test_a_marked_view_wins_over_the_patterns() -> None:
    marks = {"/in": False, "/out": True}
    middleware = unreachable(paths=(), predicate=lambda environ: marks.get(environ["PATH_INFO"]))
    assert call(middleware, "/in")[2] == b"the app"
    assert call(middleware, "/elsewhere")[2] == b"the app", "paths=(): nothing but marked views"
    assert not call(middleware, "/out")[0].startswith("200")


def test_the_decorators_mark_the_view_itself() -> None:
    def view() -> None: ...

    assert marked(view) is None
    assert offload(view) is view and marked(view) is True
    assert no_offload(view) is view and marked(view) is False


def test_the_client_script_is_served_with_an_etag_and_revalidated() -> None:
    middleware = unreachable(client_path="/_offload/offload.js")
    status, headers, body = call(middleware, "/_offload/offload.js")
    assert status == "200 OK" and body == CLIENT_SCRIPT.read_bytes()
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    status, _, body = call(middleware, "/_offload/offload.js", IF_NONE_MATCH=headers["ETag"])
    assert (status, body) == ("304 Not Modified", b"")
    assert call(middleware, "/_offload/offload.js", method="HEAD")[2] == b""


def test_the_asgi_middleware_routes_alike() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"the app"})

    middleware = ASGIMiddleware(
        inner, url="sqlite:////nonexistent/dir/offload.sqlite3", paths=["/reports/*"], client_path="/offload.js"
    )

    async def get(path: str) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"", "headers": []}
        await middleware(scope, lambda: None, send)
        return sent[0]["status"], sent[1]["body"]

    assert asyncio.run(get("/plain")) == (200, b"the app")
    assert asyncio.run(get("/offload.js")) == (200, CLIENT_SCRIPT.read_bytes())
    assert asyncio.run(get("/reports/q3"))[0] in (202, 503)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"paths": "/reports/*"}, "a list of path patterns"),
        ({"exclude": ["reports"]}, "not a path pattern"),
        ({"client_path": "offload.js"}, "client_path must be a path"),
        ({"predicate": "yes"}, "predicate must be a function"),
        ({"url": "redis:/localhost"}, "not a backend URL"),
    ],
)
def test_bad_options_fail_when_the_middleware_is_made(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        WSGIMiddleware(app, worker_threads=0, **options)


def test_routes_decide_from_the_path_alone_without_a_predicate() -> None:
    routes = Routes(paths=["/caf\u00e9/*"])
    assert routes.choose("/café/menu".encode(), None) is True
    assert routes.choose(b"/menu", None) is False
