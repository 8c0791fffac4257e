"""Flask, Django and a plain WSGI callable behind ``offload serve``: real HTTP, real worker process.

Each answer served from the cache is compared with what the bare app answers
when called directly (no HTTP server, no offload) for the same request: same
status, same headers in the same order (repeated ``Set-Cookie`` included),
same bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.wsgi_e2e.apps.common import BINARY, LOG_VARIABLE
from tests.wsgi_e2e.conftest import Server, Stack, running_stack

#: Framework -> (the app ``offload serve`` runs, where the bare app is inside it).
FRAMEWORKS = {
    "plain": ("tests.wsgi_e2e.apps.plain:application", "app"),
    "flask": ("tests.wsgi_e2e.apps.flask_app:app", "wsgi_app.app"),
    "django": ("tests.wsgi_e2e.apps.django_site.wsgi:application", "app"),
}


def as_sent(headers: list[tuple[str, str]], expected: list[Any]) -> list[tuple[str, str]]:
    """The app's headers of a cached answer: without the ETag offload adds when the app sent none."""
    app_sent_etag = any(name.lower() == "etag" for name, _ in expected)
    return [(name, value) for name, value in headers if name.lower() != "etag" or app_sent_etag]


@dataclass
class Site:
    name: str
    stack: Stack
    server: Server
    spec: str
    inside: str

    def expected(self, method: str, path: str, query: str = "", body: bytes = b"") -> tuple[int, list[Any], bytes]:
        """What the bare app answers when called directly, in a process of its own: status, headers, body."""
        command = [sys.executable, "-m", "tests.wsgi_e2e.bare_call", self.spec, self.inside, method, path, query]
        command += [body.hex(), str(self.server.port)]
        quiet = {name: value for name, value in self.stack.env.items() if name != LOG_VARIABLE}  # not counted
        done = subprocess.run(command, env=quiet, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        return answer["status"], [tuple(pair) for pair in answer["headers"]], bytes.fromhex(answer["body"])


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    spec, inside = FRAMEWORKS[request.param]
    with running_stack(tmp_path_factory.mktemp(request.param)) as stack:
        server = stack.serve(spec, workers=1)
        yield Site(request.param, stack, server, spec, inside)


def test_a_miss_answers_202_then_the_app_answer_byte_for_byte(site: Site) -> None:
    target = f"/hello?name={site.name}"
    first = site.server.get(target)
    assert first.status == 202
    assert first.body == b""
    assert first.header("Retry-After") == "1"
    assert first.header("Cache-Control") == "no-store"
    assert first.header("X-App") is None, "a 202 carries none of the app's headers"

    hit = site.server.poll(target)
    status, headers, body = site.expected("GET", "/hello", f"name={site.name}")
    assert (hit.status, as_sent(hit.app_headers(), headers), hit.body) == (status, headers, body)
    assert site.name.encode() in hit.body
    again = site.server.get(target)
    assert (again.status, again.app_headers(), again.body) == (hit.status, hit.app_headers(), hit.body)
    assert len(site.stack.events(target=target)) == 1, "the handler ran once, in the worker"


def test_binary_body_and_repeated_set_cookie_are_kept_and_delivered_once(site: Site) -> None:
    assert site.server.get("/binary").status == 202
    hit = site.server.poll("/binary")
    expected = site.expected("GET", "/binary")
    assert (hit.status, hit.app_headers(), hit.body) == expected
    assert hit.body == BINARY
    cookies = hit.all("Set-Cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("first=1") and cookies[1].startswith("second=2")
    assert site.server.get("/binary").status == 202, "an answer that sets cookies is for its client only"


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
    first = server.poll("/download", headers=headers)
    # The whole answer was computed, never a 206 or a 304 from the app; offload itself answers this client's
    # validators (a 304 when they match the answer's ETag or Last-Modified).
    assert (first.status, first.body) in ((200, BINARY), (304, b"")), (first.status, first.body[:20])
    plain = server.poll("/download")  # send_file says no-cache: each client's answer is its own
    assert (plain.status, plain.body) == (200, BINARY)
