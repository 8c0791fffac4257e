"""WSGI-only promises: the worker drives the body iterable as a server would."""

from __future__ import annotations

from typing import Any

from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness


def test_the_worker_consumes_the_body_and_calls_close() -> None:
    harness = WSGIHarness(apps.wsgi_app, url="memory://close-test")
    assert harness.get_after_work("/binary").body == apps.BINARY
    assert apps.closed == ["/binary"]


def test_a_replayed_request_passes_through_the_middleware() -> None:
    harness = WSGIHarness(apps.wsgi_app, url="memory://replay-test")
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> object:
        seen.append(status)
        return None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/hello", "QUERY_STRING": "", "offload.replay": True}
    assert b"".join(harness.middleware(environ, start_response)) == b"hello "
    assert seen == ["200 OK"]


def test_the_app_reason_phrase_is_kept() -> None:
    def app(environ: dict[str, object], start_response: Any) -> list[bytes]:
        start_response("200 Fine Thanks", [("Content-Type", "text/plain")])
        return [b"fine"]

    harness = WSGIHarness(app, url="memory://reason-test")
    harness.get_after_work("/")
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "HTTP_HOST": "testserver"}
    body = harness.middleware(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert (statuses, b"".join(body)) == (["200 Fine Thanks"], b"fine")


def test_accept_encoding_is_replayed_only_when_it_varies_the_key() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ.get("HTTP_ACCEPT_ENCODING", "identity").encode()]

    shared = WSGIHarness(app, url="memory://encoding-shared")
    assert shared.get_after_work("/", headers=[("Accept-Encoding", "gzip")]).body == b"identity"
    varied = WSGIHarness(app, url="memory://encoding-varied", vary=("cookie", "accept-encoding"))
    assert varied.get_after_work("/", headers=[("Accept-Encoding", "gzip")]).body == b"gzip"
    assert varied.request("GET", "/").status == 202
