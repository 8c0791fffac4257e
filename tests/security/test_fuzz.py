"""Fuzzing both middlewares with raw requests: any method, path, query and header bytes.

The requests are built as a server hands them over (a WSGI environ of latin-1
strings, an ASGI scope of raw bytes), not through an HTTP client that would
clean them up first. Whatever comes in, the middleware must not raise, must
answer either with the app's answer or with one of its own (202, 414, 431,
503: never a 500 of its own), and a request it queued must replay through the
worker and then be served from the cache.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.asgi import ASGIMiddleware
from offload.wsgi import WSGIMiddleware
from tests.asgi.harness import call_asgi
from tests.behaviour.harness import Result, WSGIHarness
from tests.security import apps
from tests.security.support import check_origin, drain, from_app, make

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

METHODS = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get", "head", "", "GET ", "G\x00T"]),
    st.text(max_size=12),
)


def latin1(data: bytes) -> str:
    return data.decode("latin-1")


#: Paths and queries: short random bytes, or long runs around the default max_url (8 KiB).
RAW = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, b: b * n, st.integers(4000, 9000), st.sampled_from([b"a", b"%", b"\xff", b"&=", b"\x00"])),
)
HEADER_NAMES = st.one_of(
    st.sampled_from([b"authorization", b"cookie", b"host", b"x-forwarded-for", b"content-length", b"connection"]),
    st.binary(min_size=1, max_size=30),
)
HEADER_VALUES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda n: b"v" * n, st.integers(60_000, 70_000)),  # around the default max_headers (64 KiB)
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8)
#: Text no server should hand over (PEP 3333 says latin-1; ASGI paths are decoded UTF-8), but a broken
#: one might: any code point, lone surrogates included.
BROKEN_TEXT = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(["\ud800", "\udbff", "\udc80", "\udcff", "\udfff"])),
    max_size=40,
)


def wsgi_call(middleware: Any, environ: dict[str, Any]) -> Result:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    body = middleware(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return Result(int(started[0].split()[0]), list(started[1]), data)


@st.composite
def environs(draw: st.DrawFn) -> dict[str, Any]:
    """A WSGI environ with arbitrary bytes (as latin-1 text) wherever a client controls them."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": draw(METHODS),
        "SCRIPT_NAME": draw(st.sampled_from(["", "/mount", latin1(b"/\xff\x00")])),
        "PATH_INFO": latin1(draw(RAW)),
        "QUERY_STRING": latin1(draw(RAW)),
        "SERVER_NAME": draw(st.sampled_from(["testserver", "", latin1(b"\xff\x00host")])),
        "SERVER_PORT": draw(st.sampled_from(["80", "", "abc", "99999999999999999999"])),
        "SERVER_PROTOCOL": draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "", "garbage"])),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
    }
    for name, value in draw(HEADERS):
        # Servers upper-case the name and turn "-" into "_"; some pass other bytes through.
        environ["HTTP_" + latin1(name).upper().replace("-", "_")] = latin1(value)
    for optional in draw(st.sets(st.sampled_from(["SCRIPT_NAME", "QUERY_STRING", "SERVER_PORT", "SERVER_PROTOCOL"]))):
        del environ[optional]
    return environ


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    """An ASGI ``http`` scope with arbitrary bytes wherever a client controls them."""
    raw_path = draw(RAW)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": draw(st.sampled_from(["1.1", "1.0", "2", ""])),
        "method": draw(METHODS),
        "scheme": draw(st.sampled_from(["http", "https", ""])),
        "path": draw(st.one_of(st.just(raw_path.decode("utf-8", "replace")), BROKEN_TEXT)),
        "raw_path": draw(st.sampled_from([raw_path, None, b""])),
        "query_string": draw(RAW),
        "root_path": draw(st.sampled_from(["", "/mount", "/caf\xe9", "/\udcff"])),
        "headers": draw(HEADERS),
        "client": draw(st.sampled_from([("127.0.0.1", 50000), None])),
        "server": draw(st.sampled_from([("testserver", 80), ("testserver", None), None])),
    }
    for optional in draw(st.sets(st.sampled_from(["raw_path", "query_string", "root_path", "headers", "client"]))):
        del scope[optional]
    return scope


def served_after_work(result: Result, again: Any, harness: Any, method: str) -> None:
    """A request that got 202 replays through the worker, then is answered from the cache by the app's answer."""
    if result.status != 202:
        return
    assert drain(harness) == 1, "the queued request did not replay"
    hit = again()
    assert from_app(hit), f"after the worker ran, the request still gets {hit}"
    assert hit.status == 200
    assert hit.body == (b"" if method == "HEAD" else b"ok")


@FUZZ
@given(environ=environs())
def test_wsgi_middleware_survives_any_environ(environ: dict[str, Any]) -> None:
    harness = make("wsgi")
    middleware: WSGIMiddleware = harness.middleware

    def call() -> Result:
        fresh = dict(environ, **{"wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO()})
        return wsgi_call(middleware, fresh)

    result = call()
    check_origin(result)
    served_after_work(result, call, harness, environ["REQUEST_METHOD"])


@FUZZ
@given(scope=scopes())
def test_asgi_middleware_survives_any_scope(scope: dict[str, Any]) -> None:
    harness = make("asgi")
    middleware: ASGIMiddleware = harness.middleware

    def call() -> Result:
        return asyncio.run(call_asgi(middleware, dict(scope)))

    result = call()
    check_origin(result)
    served_after_work(result, call, harness, scope["method"])


@FUZZ
@given(path=BROKEN_TEXT, query=BROKEN_TEXT, cookie=BROKEN_TEXT)
def test_wsgi_middleware_survives_a_server_that_breaks_the_latin_1_rule(path: str, query: str, cookie: str) -> None:
    harness = make("wsgi")
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/" + path,
        "QUERY_STRING": query,
        "HTTP_COOKIE": cookie,
        "HTTP_X_ANY": path,
        "wsgi.input": io.BytesIO(b""),
    }

    def call() -> Result:
        return wsgi_call(harness.middleware, dict(environ, **{"wsgi.input": io.BytesIO(b"")}))

    result = call()
    check_origin(result)
    served_after_work(result, call, harness, "GET")


@FUZZ
@given(path=BROKEN_TEXT, root=BROKEN_TEXT)
def test_asgi_middleware_survives_a_server_that_decodes_paths_badly(path: str, root: str) -> None:
    harness = make("asgi")
    scope = {"type": "http", "method": "GET", "path": "/" + path, "root_path": root, "headers": []}
    result = asyncio.run(call_asgi(harness.middleware, scope))
    check_origin(result)
    served_after_work(result, lambda: asyncio.run(call_asgi(harness.middleware, dict(scope))), harness, "GET")


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
def test_other_scope_types_reach_the_app_whatever_they_hold(kind: str) -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    middleware = ASGIMiddleware(app, url="memory://security-other-scopes", worker_threads=0)
    asyncio.run(middleware({"type": kind, "path": "\udcff", "raw_path": b"\xff"}, None, None))  # type: ignore[arg-type]
    assert reached == [kind]


def test_the_fuzzed_app_answers_any_request_itself() -> None:
    """The property above relies on the app answering 200 to anything: check it once, without offload."""
    environ = {"REQUEST_METHOD": "\x00", "PATH_INFO": "\xff", "QUERY_STRING": "%", "HTTP_\xff": "\x00"}
    result = wsgi_call(apps.wsgi_app, environ)
    assert (result.status, from_app(result)) == (200, True)
    assert isinstance(WSGIHarness, type)
