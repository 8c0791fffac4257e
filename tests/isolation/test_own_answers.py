"""offload's own answers are valid HTTP and valid WSGI: ``wsgiref.validate`` passes on every path it answers."""

from __future__ import annotations

import io
import wsgiref.validate
from collections.abc import Iterable
from typing import Any

import pytest

from offload import WSGIMiddleware
from offload.replay import replayer_for
from offload.worker import Worker


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def call(middleware: Any, method: str = "GET", query: str = "", **headers: str) -> tuple[str, list[tuple[str, str]]]:
    """Call the middleware through wsgiref's validator, as a strict server would; return status and headers."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": "/report",
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    environ.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    seen: list[Any] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen[:] = [status, response_headers]
        return lambda data: None

    body = wsgiref.validate.validator(middleware)(environ, start_response)
    try:
        b"".join(body)
    finally:
        body.close()  # type: ignore[attr-defined]
    return seen[0], seen[1]


@pytest.fixture
def middleware() -> WSGIMiddleware:
    return WSGIMiddleware(app, url="memory://own-answers", worker_threads=0, max_url=100, max_queued=1)


def content_type(headers: list[tuple[str, str]]) -> str | None:
    return next((value for name, value in headers if name.lower() == "content-type"), None)


def test_a_202_is_valid_and_typed(middleware: WSGIMiddleware) -> None:
    status, headers = call(middleware, query="n=1")
    assert status.startswith("202") and content_type(headers) == "text/plain; charset=utf-8"


def test_a_503_for_a_full_queue_is_valid_and_typed(middleware: WSGIMiddleware) -> None:
    call(middleware, query="n=1")
    status, headers = call(middleware, query="n=2")
    assert status.startswith("503") and content_type(headers) == "text/plain; charset=utf-8"


def test_a_414_is_valid_and_typed(middleware: WSGIMiddleware) -> None:
    status, headers = call(middleware, query="q=" + "x" * 200)
    assert status.startswith("414") and content_type(headers)


def test_a_431_is_valid_and_typed(middleware: WSGIMiddleware) -> None:
    status, headers = call(middleware, query="big=1", COOKIE="c" * 70_000)
    assert status.startswith("431") and content_type(headers)


def test_a_503_for_an_outage_is_valid_and_typed(tmp_path: Any) -> None:
    middleware = WSGIMiddleware(app, url=f"sqlite:///{tmp_path}/missing/offload.sqlite3")
    status, headers = call(middleware)
    assert status.startswith("503") and content_type(headers)


def test_hits_and_heads_are_valid(middleware: WSGIMiddleware) -> None:
    call(middleware, query="n=1")
    Worker(middleware.offloader, replayer_for(app), burst=True, claim_wait=0.05).run(install_signals=False)
    assert call(middleware, query="n=1")[0].startswith("200")
    assert call(middleware, "HEAD", query="n=1")[0].startswith("200")
