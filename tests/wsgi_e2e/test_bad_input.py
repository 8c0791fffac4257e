"""Odd, non-UTF-8 and oversized requests over raw sockets: offload never answers them with a 500.

Whatever the server lets through reaches the middleware: it is either
offloaded and computed (202, then the app's 200) or refused with a 4xx of
offload's own (414, 431). What the server refuses itself gets the server's 4xx.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

import pytest

from offload.keys import canonical_query, parse_query
from tests.wsgi_e2e.conftest import Server, running_stack, wait_for

MAX_URL = 2048


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_stack(tmp_path_factory.mktemp("bad-input")) as stack:
        yield stack.serve(workers=1, OFFLOAD_E2E_MAX_URL=str(MAX_URL))


def request(method: bytes, target: bytes, headers: bytes = b"", body: bytes = b"") -> bytes:
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    return b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%sConnection: close\r\n\r\n%s" % (
        method,
        target,
        headers,
        length,
        body,
    )


def assert_server_alive(server: Server) -> None:
    assert server.request("POST", "/echo", body=b"ping").status == 201


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (b"/echo/%FF%FE/%C3%A9?q=%FE%FF&r=caf%C3%A9", b""),
        (b"/echo/%ff%00x?a=%zz&&=&b=%", b""),
        (b"/echo/%2e%2e/%2e%2e/etc/passwd", b""),
        (b"/echo/a%20b;c=d/%2F%5C", b"X-Odd: \xff\xfe\x80\r\n"),
        (b"/echo/cookie", b"Cookie: s=\xff\xfe; t=\x80\r\nAuthorization: Basic \xe9\xff\r\n"),
        (b"/echo/" + b"p" * 900 + b"?q=" + b"%FF" * 300, b""),
        (b"http://127.0.0.1/echo/absolute?form=1", b""),
    ],
    ids=[
        "non-utf8-escapes",
        "broken-escapes",
        "dot-segments",
        "odd-header",
        "non-utf8-credentials",
        "long",
        "absolute",
    ],
)
def test_odd_requests_are_offloaded_and_answered_like_the_app(server: Server, target: bytes, headers: bytes) -> None:
    first = server.raw(request(b"GET", target, headers))
    assert first.status == 202, first.body

    def computed() -> bytes | None:
        answer = server.raw(request(b"GET", target, headers))
        assert answer.status in (200, 202), answer.body
        return answer.body if answer.status == 200 else None

    body = wait_for(computed, 60, f"GET {target[:60]!r} to be computed")
    # A POST reaches the app directly: what the app saw of the same request.
    direct = server.raw(request(b"POST", target, headers, b"x"))
    assert direct.status == 201
    method, path, query, _ = ast.literal_eval(direct.body.decode("utf-8"))
    assert method == "POST"
    # The worker hands the app the query in its canonical form: the one every request of the key shares.
    canonical = canonical_query(parse_query(query.encode("latin-1")))
    assert body == repr(("GET", path, canonical, b"")).encode("utf-8", "backslashreplace")


@pytest.mark.parametrize(
    "raw",
    [
        request(b"GET", b"/echo/\xff\xfe?q=\xfe"),
        request(b"GET", b"/echo/caf\xc3\xa9"),
        request(b"GET", b"/echo/a\x00b"),
        request(b"GET", b"*"),
        request(b"GET", b"/echo?q=" + b"z" * 100_000),
        request(b"GET", b"/echo", b"X-Huge: " + b"v" * 100_000 + b"\r\n"),
        b"GARBAGE\r\n\r\n",
    ],
    ids=["raw-non-utf8", "raw-utf8", "nul", "asterisk", "huge-query", "huge-header", "garbage"],
)
def test_what_the_server_refuses_gets_its_own_4xx(server: Server, raw: bytes) -> None:
    answer = server.raw(raw)
    assert 400 <= answer.status <= 499, answer.status
    assert_server_alive(server)


def test_a_query_over_max_url_gets_414_from_offload_and_queues_nothing(server: Server) -> None:
    target = b"/echo/too-long?q=" + b"z" * (MAX_URL + 100)
    answer = server.raw(request(b"GET", target))
    assert answer.status == 414
    assert answer.header("Cache-Control") == "no-store"
    assert server.stack.events(target=target.decode()) == []
    wait_for(server.stack.idle, what="an empty queue")
    assert server.raw(request(b"GET", target)).status == 414, "not computed later either"


def test_keyed_headers_over_max_headers_get_431_from_offload_and_queue_nothing(server: Server) -> None:
    cookie = b"Cookie: " + b"; ".join(b"c%d=%s" % (n, b"v" * 3000) for n in range(25)) + b"\r\n"  # 75 KB
    answer = server.raw(request(b"GET", b"/echo/big-headers", cookie))
    assert answer.status == 431
    wait_for(server.stack.idle, what="an empty queue")
    assert server.stack.events(target="/echo/big-headers?") == []
    assert_server_alive(server)


def test_no_request_above_raised_in_the_server_or_the_worker(server: Server) -> None:
    assert "Traceback" not in server.log(), server.log()[-3000:]
