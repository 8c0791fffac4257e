"""Flask, Django and a plain WSGI callable behind ``offload serve``: real HTTP, real worker process.

Each answer served from the cache is compared with what the bare app answers
in this process for the same request: same status, same headers in the same
order (repeated ``Set-Cookie`` included), same bytes.
"""

from __future__ import annotations

import importlib
import io
import wsgiref.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.wsgi_e2e.apps.common import BINARY
from tests.wsgi_e2e.conftest import Server, Stack, running_stack

#: Framework -> (the app ``offload serve`` runs, where the bare app is inside it).
FRAMEWORKS = {
    "plain": ("tests.wsgi_e2e.apps.plain:application", "app"),
    "flask": ("tests.wsgi_e2e.apps.flask_app:app", "wsgi_app.app"),
    "django": ("tests.wsgi_e2e.apps.django_site.wsgi:application", "app"),
}


@dataclass
class Site:
    name: str
    stack: Stack
    server: Server
    bare: Any

    def expected(self, method: str, path: str, query: str = "", body: bytes = b"") -> tuple[int, list[Any], bytes]:
        """What the bare app answers in this process: status, headers, body."""
        return call_wsgi(self.bare, method, path, query, body, self.server.port)


def _bare_app(spec: str, inside: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    target: Any = getattr(importlib.import_module(module_name), attribute)
    for part in inside.split("."):
        target = getattr(target, part)
    return target


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    spec, inside = FRAMEWORKS[request.param]
    with running_stack(tmp_path_factory.mktemp(request.param)) as stack:
        server = stack.serve(spec, workers=1)
        yield Site(request.param, stack, server, _bare_app(spec, inside))


def call_wsgi(app: Any, method: str, path: str, query: str, body: bytes, port: int) -> tuple[int, list[Any], bytes]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(port),
        "HTTP_HOST": f"127.0.0.1:{port}",
        "wsgi.input": io.BytesIO(body),
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    wsgiref.util.setup_testing_defaults(environ)
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    # On the wire, whitespace around a header value is not part of it (Django starts Set-Cookie values with one).
    headers = [(name, value.strip(" \t")) for name, value in started[1]]
    return int(started[0].split()[0]), headers, data


def test_a_miss_answers_202_then_the_app_answer_byte_for_byte(site: Site) -> None:
    target = f"/hello?name={site.name}"
    first = site.server.get(target)
    assert first.status == 202
    assert first.body == b""
    assert first.header("Retry-After") == "1"
    assert first.header("Cache-Control") == "no-store"
    assert first.header("X-App") is None, "a 202 carries none of the app's headers"

    hit = site.server.poll(target)
    assert (hit.status, hit.app_headers(), hit.body) == site.expected("GET", "/hello", f"name={site.name}")
    assert site.name.encode() in hit.body
    again = site.server.get(target)
    assert (again.status, again.app_headers(), again.body) == (hit.status, hit.app_headers(), hit.body)
    assert len(site.stack.events(target=target)) == 1, "the handler ran once, in the worker"


def test_binary_body_and_repeated_set_cookie_are_kept(site: Site) -> None:
    assert site.server.get("/binary").status == 202
    hit = site.server.poll("/binary")
    expected = site.expected("GET", "/binary")
    assert (hit.status, hit.app_headers(), hit.body) == expected
    assert hit.body == BINARY
    cookies = hit.all("Set-Cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("first=1") and cookies[1].startswith("second=2")


def test_head_is_served_from_the_cached_get_without_a_body(site: Site) -> None:
    target = f"/hello?name=head-{site.name}"
    assert site.server.request("HEAD", target).status == 202, "a HEAD miss enqueues the GET"
    get = site.server.poll(target)
    assert get.status == 200
    head = site.server.request("HEAD", target)
    assert (head.status, head.body) == (200, b"")
    assert head.app_headers() == get.app_headers()
    assert len(site.stack.events(target=target)) == 1
    assert site.stack.events(method="HEAD") == [], "the worker replays a GET, never a HEAD"


def test_post_passes_straight_through_to_the_app(site: Site) -> None:
    sent = b"sent by the client"
    answer = site.server.request("POST", "/echo", body=sent)
    assert (answer.status, answer.app_headers(), answer.body) == site.expected("POST", "/echo", "", sent)
    assert answer.status == 201
    assert len(site.stack.events(method="POST", target="/echo?")) == 1
    assert site.stack.status()["queued"] == 0


@pytest.mark.parametrize(
    "headers",
    [{"Range": "bytes=0-9"}, {"If-None-Match": '"v1"'}, {"If-Modified-Since": "Tue, 02 Jan 2024 00:00:00 GMT"}],
    ids=["range", "if-none-match", "if-modified-since"],
)
def test_a_partial_or_conditional_first_request_caches_the_whole_answer(stack: Stack, headers: dict[str, str]) -> None:
    """Flask's send_file answers 206 or 304 to such requests; cached, every later client would get that."""
    server = stack.serve("tests.wsgi_e2e.apps.flask_app:app", workers=1)
    assert server.get("/download", headers).status == 202
    server.poll("/download", headers=headers)
    plain = server.get("/download")
    assert (plain.status, plain.body) == (200, BINARY)
