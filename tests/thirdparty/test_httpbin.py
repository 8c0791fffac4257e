"""httpbin behind offload: gunicorn serving the bare app and the wrapped one, an ``offload worker`` replaying.

Each URL is fetched from the bare app and through offload (polling while it
answers 202), with the same request: the same ``Host`` and no other header
unless the comparison needs one. The answers must be the same: status,
headers in order and body, byte for byte, then again as a cache hit.

Left out of the comparison: the headers gunicorn adds itself (``Date``,
``Server``, ``Connection``, ``Keep-Alive``, ``Transfer-Encoding``), and two
values httpbin makes anew on every call, so that two calls of the bare app
differ too:

* ``/cache``: its ``ETag`` is a fresh ``uuid4`` and its ``Last-Modified`` the
  current time; both headers are left out for that URL only.
* ``/gzip``: the gzip header holds the time of compression (MTIME, bytes 4 to
  7), so those four bytes are zeroed on both sides before comparing; the rest
  of the body is compared byte for byte.

Request headers at replay: httpbin echoes request headers in ``/get``,
``/headers``, ``/anything``, ``/gzip``... Observed, with one request carrying
``Accept``, ``Accept-Encoding``, ``Accept-Language``, ``Authorization``,
``Cookie``, ``Host``, ``If-None-Match``, ``Range`` and ``User-Agent``: the
replay echoes ``Accept``, ``Accept-Language``, ``Authorization``, ``Cookie``,
``Host`` and ``User-Agent``, the bare app all of them; offload leaves out
``Accept-Encoding`` (unless in ``vary``), ``Range`` and ``If-None-Match``
on purpose, so ``/range/10`` with ``Range`` is a 206 from the bare app and a
whole 200 through offload. The comparisons therefore send ``Host`` alone
(http.client's default ``Accept-Encoding: identity`` is turned off), and
both sides echo it identically.

Two inputs of a request never reach the app at replay (docs/SECURITY.md): the
client's address, which httpbin echoes as ``origin`` (offload's answers say
``null``: the same for every client that shares the answer), and the order
of the query's parameters, which offload hands over in its canonical order.
So the bare app is served as a worker calls it, without the client's address
(``tests/thirdparty/apps/httpbin_bare.py``: no other change), and ``?b=2&a=1``
is compared with the bare app's answer to ``?a=1&b=2``.

The isolation tests below describe what offload must guarantee with this app:
a forged ``Host`` must not reach another client's ``Location``, and a custom
request header echoed in a body must not reach another client.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator

import pytest

from tests.thirdparty.harness import (
    ALL_BACKENDS,
    Server,
    assert_same_answer,
    backend_url,
    processes,
    require,
)

BARE = "tests.thirdparty.apps.httpbin_bare:app"
WRAPPED = "tests.thirdparty.apps.httpbin_app:app"
#: The Host both sides of a comparison are asked with.
HOST = [("Host", "httpbin.test")]


def gzip_without_mtime(body: bytes) -> bytes:
    """The gzip stream with its MTIME field zeroed, after checking it decompresses."""
    gzip.decompress(body)
    return body[:4] + b"\0\0\0\0" + body[8:]


def inflated(body: bytes) -> bytes:
    zlib.decompress(body)  # a deflate stream that does not decompress fails here, on either side
    return body


#: Deterministic httpbin URLs -> (headers two calls of the bare app differ in, body mapping before comparing).
URLS: dict[str, tuple[frozenset[str], Callable[[bytes], bytes] | None]] = {
    "/get?a=1&b=2": (frozenset(), None),
    # httpbin echoes the URL as sent: the app is given the canonical order (see CANONICAL below).
    "/get?b=2&a=1": (frozenset(), None),
    "/get?a=1&a=2&a=3": (frozenset(), None),
    "/anything/x?y=1": (frozenset(), None),
    "/headers": (frozenset(), None),
    "/ip": (frozenset(), None),
    "/user-agent": (frozenset(), None),
    "/cookies": (frozenset(), None),
    "/status/418": (frozenset(), None),
    "/status/204": (frozenset(), None),
    "/basic-auth/user/passwd": (frozenset(), None),
    "/bearer": (frozenset(), None),
    "/json": (frozenset(), None),
    "/html": (frozenset(), None),
    "/xml": (frozenset(), None),
    "/robots.txt": (frozenset(), None),
    "/deny": (frozenset(), None),
    "/forms/post": (frozenset(), None),
    "/encoding/utf8": (frozenset(), None),
    "/bytes/64?seed=7": (frozenset(), None),
    "/stream-bytes/100?seed=1&chunk_size=10": (frozenset(), None),
    "/base64/aGVsbG8gb2ZmbG9hZA==": (frozenset(), None),
    "/response-headers?X-Foo=1&X-Foo=2": (frozenset(), None),
    "/redirect-to?url=/get": (frozenset(), None),
    "/redirect-to?url=/get&status_code=307": (frozenset(), None),
    "/redirect/2": (frozenset(), None),
    "/relative-redirect/2": (frozenset(), None),
    "/cache": (frozenset({"etag", "last-modified"}), None),
    "/cache/60": (frozenset(), None),
    "/etag/abc": (frozenset(), None),
    "/gzip": (frozenset(), gzip_without_mtime),
    "/deflate": (frozenset(), inflated),
    "/brotli": (frozenset(), None),
    "/image/png": (frozenset(), None),
    "/image/jpeg": (frozenset(), None),
    "/image/webp": (frozenset(), None),
    "/image/svg": (frozenset(), None),
    "/links/3/1": (frozenset(), None),
    "/range/100": (frozenset(), None),
    "/drip?duration=0&numbytes=5&code=200&delay=0": (frozenset(), None),
}


#: Targets whose query the worker hands over in another order: what the bare app is asked instead.
CANONICAL = {"/get?b=2&a=1": "/get?a=1&b=2"}


def gunicorn(app: str) -> Callable[[int], list[str]]:
    def args(port: int) -> list[str]:
        return ["-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning", app]

    return args


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gunicorn serving httpbin as it is."""
    require("httpbin", "httpbin")
    with processes(tmp_path_factory.mktemp("httpbin-bare")) as started:
        yield started.serve("gunicorn-bare", gunicorn(BARE))


@pytest.fixture(scope="module", params=ALL_BACKENDS)
def offloaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gunicorn serving httpbin wrapped in offload, and one ``offload worker``, on one backend."""
    require("httpbin", "httpbin")
    directory = tmp_path_factory.mktemp(f"httpbin-{request.param}")
    with backend_url(request.param, request, directory) as url, processes(directory) as started:
        server = started.serve(f"gunicorn-{request.param}", gunicorn(WRAPPED), {"OFFLOAD_URL": url})
        started.worker(f"worker-{request.param}", WRAPPED, {"OFFLOAD_URL": url})
        yield server


@pytest.mark.parametrize("target", list(URLS))
def test_each_answer_is_the_bare_apps_byte_for_byte(target: str, bare: Server, offloaded: Server) -> None:
    ignore, body = URLS[target]
    expected = bare.get(CANONICAL.get(target, target), HOST)
    assert_same_answer(expected, offloaded.poll(target, HOST), ignore, body)
    assert_same_answer(expected, offloaded.get(target, HOST), ignore, body)  # a hit: the same again


# Isolation: what offload must guarantee. Each uses a URL no other test asks for, so they are independent.


def test_a_forged_host_never_reaches_another_clients_redirect(bare: Server, offloaded: Server) -> None:
    """httpbin builds ``Location`` from ``Host``: an attacker's ``Host`` must not end up in anyone else's answer."""
    target = "/absolute-redirect/2"
    legit_host = f"127.0.0.1:{offloaded.port}"
    legit, forged = [("Host", legit_host)], [("Host", "evil.test")]
    attacker = offloaded.poll(target, forged)  # first, as a cache poisoning attempt would be
    client = offloaded.poll(target, legit)
    assert "evil.test" not in (client.header("Location") or ""), client.describe()
    assert legit_host not in (attacker.header("Location") or ""), attacker.describe()
    assert_same_answer(bare.get(target, legit), client)
    assert_same_answer(bare.get(target, forged), attacker)
    assert "evil.test" not in (offloaded.get(target, legit).header("Location") or "")  # nor later, as a hit


def test_a_custom_request_header_is_never_echoed_to_another_client(offloaded: Server) -> None:
    """``/headers`` echoes ``X-Api-Key``: one client's key must never reach another client, nor an anonymous one.

    ``X-Api-Key`` is not keyed (not in ``vary``), so it is never given to the
    app at replay: the three clients share one answer that holds no key.
    """
    target = "/headers?isolation=api-key"  # httpbin ignores the query here; no other test asks for this URL
    alpha, beta = "key-alpha-7f3a", "key-beta-91c2"
    with_alpha = offloaded.poll(target, [*HOST, ("X-Api-Key", alpha)])
    with_beta = offloaded.poll(target, [*HOST, ("X-Api-Key", beta)])
    anonymous = offloaded.poll(target, HOST)
    assert with_alpha.body == with_beta.body == anonymous.body, "one URL, nothing keyed differs: one answer"
    assert b"Host" in with_alpha.body, with_alpha.describe()  # the echo works at all
    assert alpha.encode() not in with_beta.body, f"the client with {beta} got {with_beta.body!r}"
    assert beta.encode() not in with_alpha.body
    for key in (alpha, beta):
        assert key.encode() not in anonymous.body, f"an anonymous client got {anonymous.body!r}"
