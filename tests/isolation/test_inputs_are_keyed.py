"""The isolation rule as a property: two requests share a key only if the app would see the same inputs.

For generated pairs of requests that differ in any part a client controls
(scheme, ``Host``, path as sent, query, any header, the client's address),
either offload gives them different keys, or the app, replayed by the worker,
provably sees exactly the same inputs for both. The app here records every
input it is given; the two recordings are compared whole.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import ASGIMiddleware, WSGIMiddleware
from offload.core import Offloader
from offload.records import StoredRequest
from offload.replay import replay_asgi, replay_wsgi

#: Inputs of the WSGI environ that do not come from the request: the server's own, the same for every request.
SERVER_OWN = frozenset({"wsgi.input", "wsgi.errors", "wsgi.version", "wsgi.multithread", "wsgi.multiprocess"})


def wsgi_recorder(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    seen = sorted((key, repr(value)) for key, value in environ.items() if key not in SERVER_OWN)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr(seen).encode()]


async def asgi_recorder(scope: dict[str, Any], receive: Any, send: Any) -> None:
    seen = sorted((key, repr(value)) for key, value in scope.items() if key not in ("state", "extensions"))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": repr(seen).encode()})


#: Headers a client may send; a few are keyed by default (Authorization, Cookie), the rest are not.
HEADER_NAMES = ["Authorization", "Cookie", "X-Api-Key", "Accept-Language", "X-Forwarded-For", "Origin", "Accept"]
VALUE = st.text(alphabet="abc= ;,é", max_size=6)
PATH = st.lists(st.sampled_from(["a", "b", "%2F", "caf%C3%A9", "x y", "~"]), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)
QUERY = st.lists(
    st.tuples(st.sampled_from(["a", "b", "sort", "q"]), st.sampled_from(["1", "2", "x+y", "%31", "", "%26"])),
    max_size=4,
).map(lambda pairs: "&".join(f"{name}={value}" for name, value in pairs))


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    headers = {name: draw(VALUE) for name in HEADER_NAMES if draw(st.booleans())}
    return {
        "scheme": draw(st.sampled_from(["http", "https"])),
        "host": draw(st.sampled_from(["example.com", "example.com:8080", "EXAMPLE.com", "evil.test"])),
        "path": draw(PATH),
        "query": draw(QUERY),
        "headers": headers,
        "client": draw(st.sampled_from(["10.0.0.1", "10.0.0.2"])),
    }


def environ_of(request: dict[str, Any]) -> dict[str, Any]:
    from urllib.parse import unquote_to_bytes

    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(request["path"]).decode("latin-1"),
        "QUERY_STRING": request["query"],
        "SERVER_NAME": "server-of-this-machine",
        "SERVER_PORT": "9999",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "REMOTE_ADDR": request["client"],
        "HTTP_HOST": request["host"],
        "wsgi.url_scheme": request["scheme"],
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
    }
    for name, value in request["headers"].items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value.encode().decode("latin-1")
    return environ


def scope_of(request: dict[str, Any]) -> dict[str, Any]:
    from urllib.parse import unquote

    headers = [(b"host", request["host"].encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in request["headers"].items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "GET",
        "scheme": request["scheme"],
        "path": unquote(request["path"]),
        "raw_path": request["path"].encode(),
        "query_string": request["query"].encode(),
        "root_path": "",
        "headers": headers,
        "client": (request["client"], 4321),
        "server": ("server-of-this-machine", 9999),
    }


def stored_wsgi(middleware: WSGIMiddleware, request: dict[str, Any]) -> StoredRequest:
    """The job a miss of ``request`` queues (through the middleware, as a server would call it)."""
    offloader: Offloader = middleware.offloader
    environ = environ_of(request)
    answer: list[str] = []
    middleware(environ, lambda status, headers, exc_info=None: answer.append(status))
    assert answer == ["202 Accepted"], answer
    claim = offloader.queue.claim(30, 0)
    assert claim is not None
    offloader.queue.ack(claim)
    offloader.cache.delete(offloader.pending_key(claim.key))
    return StoredRequest.decode(claim.payload)


def stored_asgi(middleware: ASGIMiddleware, request: dict[str, Any]) -> StoredRequest:
    offloader: Offloader = middleware.offloader
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope_of(request), receive, send))
    assert sent[0]["status"] == 202
    claim = offloader.queue.claim(30, 0)
    assert claim is not None
    offloader.queue.ack(claim)
    offloader.cache.delete(offloader.pending_key(claim.key))
    return StoredRequest.decode(claim.payload)


PAIRS = settings(max_examples=300, deadline=None)


@PAIRS
@given(first=requests(), second=requests())
def test_wsgi_requests_share_a_key_only_when_the_app_sees_the_same_inputs(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    middleware = WSGIMiddleware(wsgi_recorder, url="memory://inputs-wsgi", worker_threads=0)
    one, two = stored_wsgi(middleware, first), stored_wsgi(middleware, second)
    if one.key != two.key:
        return
    assert replay_wsgi(wsgi_recorder, one, 1 << 20).body == replay_wsgi(wsgi_recorder, two, 1 << 20).body


@PAIRS
@given(first=requests(), second=requests())
def test_asgi_requests_share_a_key_only_when_the_app_sees_the_same_inputs(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    middleware = ASGIMiddleware(asgi_recorder, url="memory://inputs-asgi", worker_threads=0)
    one, two = stored_asgi(middleware, first), stored_asgi(middleware, second)
    if one.key != two.key:
        return
    seen_one = asyncio.run(replay_asgi(asgi_recorder, one, 1 << 20)).body
    seen_two = asyncio.run(replay_asgi(asgi_recorder, two, 1 << 20)).body
    assert seen_one == seen_two


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"host": "example.com"}, {"host": "evil.test"}),
        ({"scheme": "http"}, {"scheme": "https"}),
        ({"path": "/a%2Fb"}, {"path": "/a/b"}),
        ({"query": "sort=name&sort=date"}, {"query": "sort=date&sort=name"}),
        ({"headers": {"Cookie": "s=1"}}, {"headers": {"Cookie": "s=2"}}),
    ],
)
def test_inputs_the_app_sees_separate_keys(first: dict[str, Any], second: dict[str, Any]) -> None:
    """The named cases of the property, so that a regression names its cause (ASGI: raw paths count)."""
    base = {"scheme": "http", "host": "example.com", "path": "/a", "query": "", "headers": {}, "client": "10.0.0.1"}
    middleware = ASGIMiddleware(asgi_recorder, url="memory://inputs-named", worker_threads=0)
    assert stored_asgi(middleware, {**base, **first}).key != stored_asgi(middleware, {**base, **second}).key


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"query": "a=1&b=2"}, {"query": "b=2&a=1"}),
        ({"query": "b=%32"}, {"query": "b=2"}),
        ({"headers": {"X-Api-Key": "alice"}}, {"headers": {"X-Api-Key": "bob"}}),
        ({"client": "10.0.0.1"}, {"client": "10.0.0.2"}),
    ],
)
def test_inputs_the_app_never_sees_share_a_key(first: dict[str, Any], second: dict[str, Any]) -> None:
    """What is not keyed is not replayed: unkeyed headers and the client address never reach the app."""
    base = {"scheme": "http", "host": "example.com", "path": "/a", "query": "", "headers": {}, "client": "10.0.0.1"}
    middleware = WSGIMiddleware(wsgi_recorder, url="memory://inputs-unseen", worker_threads=0)
    one, two = stored_wsgi(middleware, {**base, **first}), stored_wsgi(middleware, {**base, **second})
    assert one.key == two.key
    seen = replay_wsgi(wsgi_recorder, one, 1 << 20).body
    assert b"alice" not in seen and b"10.0.0" not in seen and b"REMOTE_ADDR" not in seen
