"""WSGI-only promises: the worker drives the body iterable as a server would."""

from __future__ import annotations

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
