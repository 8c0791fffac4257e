"""The HTTP server behind the proxy, and the two ways a request reaches it.

* :class:`Forwarder` is the ASGI app offload wraps in proxy mode. It sends
  every request offload does not answer from its store (``POST``, ``PUT``,
  ``DELETE`` and any other method, ``no-store`` requests, ``HEAD`` requests
  nothing stored can serve) to the upstream as it comes, streaming the
  request body up and the response body down, so a body of any size goes
  through in bounded memory. After a non-error answer to an unsafe method it
  invalidates what is stored for the target URI and for the ``Location`` and
  ``Content-Location`` it names on the same origin (RFC 9111 4.4).
* :class:`Fetcher` is what a worker does with a stored request (a GET that
  missed): it asks the upstream, conditionally when a stored answer with
  validators exists (``If-None-Match``, ``If-Modified-Since``), and returns
  the whole answer; a ``304`` freshens the stored answer (RFC 9111 4.3.4).
  The answer records its corrected initial age (RFC 9111 4.2.3) in ``Age``.
  Each fetch has a connection of its own (``Connection: close``): an answer
  is shared once stored, so it must never be read from a connection on
  which a previous answer left bytes its framing did not account for (a
  ``Content-Length`` shorter than the body, a body after a ``304``), which
  the HTTP client would take for the start of the next answer.

Both drop the hop-by-hop fields each way and add the ``Forwarded`` family and
``Via`` to requests (:mod:`offload.proxy.fields`). An upstream that cannot be
reached, or drops the connection, is a ``502``; one that does not answer
within the timeout a ``504``: offload's own answers, with ``Retry-After``,
which a worker keeps as failures (so ``stale-if-error`` serves the last good
answer meanwhile). Requests are never sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.cookiejar
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes, urljoin, urlsplit

from offload.answers import own_answer
from offload.core import Offloader
from offload.errors import BackendUnavailable, ConfigurationError, CorruptRecord, install_hint
from offload.keys import Target
from offload.proxy import fields
from offload.proxy.policy import CLIENT, pass_marker
from offload.records import CachedResponse, StoredRequest, decode_stored
from offload.replay import REPLAY_KEY, BodyTooLarge

try:
    import httpx
except ImportError as missing:  # pragma: no cover - depends on the installation
    raise ConfigurationError(f"offload's proxy mode needs httpx: {install_hint('proxy')}") from missing

log = logging.getLogger("offload.proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Methods that change nothing on the server (RFC 9110 9.2.1); any other invalidates (RFC 9111 4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Request fields the cache decides itself when it fetches: it asks for whole answers, conditionally on its own copy.
CACHE_DECIDES = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range", "expect"}
)
#: Request fields never sent on as they came: the upstream gets its own Host and its own framing.
FRAMING = frozenset({"host", "content-length"})


@dataclasses.dataclass(frozen=True)
class Upstream:
    """Where the upstream is and how long to wait for it.

    ``url`` is its base URL (``http://127.0.0.1:8080``, optionally with a path
    prefix); ``timeout`` bounds each wait for the upstream (connecting, each
    read, each write), ``connect_timeout`` the connection alone.
    ``keepalive`` is how long an idle connection to it is kept: shorter than
    the upstream's own idle timeout, so a request never goes out on a
    connection the upstream is closing.
    """

    url: str
    timeout: float = 30.0
    connect_timeout: float = 5.0
    max_connections: int = 100
    keepalive: float = 4.0
    retry_after: int = 10  # the Retry-After of the 502s and 504s

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigurationError(f"the upstream must be an http:// or https:// URL, not {self.url!r}")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigurationError("upstream timeouts must be positive numbers of seconds")

    @property
    def authority(self) -> str:
        return urlsplit(self.url).netloc.rpartition("@")[2]

    def target(self, raw_path: bytes, query: bytes) -> str:
        """The upstream URL of a request for ``raw_path`` and ``query`` (as the client sent them)."""
        prefix = urlsplit(self.url).path.rstrip("/")
        path = raw_path.decode("latin-1") or "/"
        url = f"{urlsplit(self.url).scheme}://{self.authority}{prefix}{path}"
        return f"{url}?{query.decode('latin-1')}" if query else url

    def limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_connections,
            keepalive_expiry=self.keepalive,
        )

    def timeouts(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)

    def failure(self, status: int, why: str) -> CachedResponse:
        """offload's own 502 or 504 for a request the upstream did not answer."""
        answer = own_answer(status, self.retry_after, f"offload: {why}\n".encode())
        return dataclasses.replace(answer, headers=(*answer.headers, ("Date", fields.imf_date(time.time()))))


def quiet(limits: httpx.Limits) -> dict[str, Any]:
    """Options of an HTTP client that sends what the proxy is given and keeps nothing between requests.

    No cookie jar (cookies one client's answer set must never go with another
    client's request), no proxy or ``.netrc`` credentials from the
    environment, no redirects followed.
    """
    return {
        "limits": limits,
        "cookies": http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        "trust_env": False,
        "follow_redirects": False,
    }


Client = TypeVar("Client", httpx.Client, httpx.AsyncClient)


def plain(client: Client) -> Client:
    """The client without the headers httpx adds by default (``Accept``, ``Accept-Encoding``, ``User-Agent``...).

    The upstream gets the client's own: an ``Accept-Encoding`` the client did
    not send would bring back a body it cannot read.
    """
    for name in list(client.headers):
        del client.headers[name]
    return client


def outgoing(headers: fields.Fields, client: str, target: Target, *, cache_decides: bool) -> list[tuple[str, str]]:
    """The fields of a request as sent upstream: end-to-end, without Host and framing, with ``Forwarded``.

    With ``cache_decides`` (a worker's fetch), the conditional and ``Range``
    fields of the client are left out too: the cache asks for whole answers.
    """
    dropped = FRAMING | CACHE_DECIDES if cache_decides else FRAMING
    kept = [(name, value) for name, value in fields.end_to_end(headers) if name.lower() not in dropped]
    return fields.forwarded(kept, client, target.scheme, target.host)


def received(
    response: httpx.Response, sent_at: float, received_at: float
) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """The end-to-end fields of an upstream answer, a ``Date`` added if it had none, and its age on arrival.

    The second item is the ``Age`` field the answer gets: its corrected
    initial age (RFC 9111 4.2.3), the larger of the age its ``Date`` implies
    and its own ``Age`` plus the time the request took; None for zero.
    """
    raw = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers.raw]
    kept = [(name, value) for name, value in fields.end_to_end(raw) if name.lower() != "age"]
    date = fields.http_date(next((value for name, value in kept if name.lower() == "date"), None), received_at)
    if date is None:
        kept = [(name, value) for name, value in kept if name.lower() != "date"]
        kept.append(("Date", fields.imf_date(received_at)))
    apparent = max(0.0, received_at - date) if date is not None else 0.0
    corrected = fields.age_of(raw) + (received_at - sent_at)
    age = int(max(apparent, corrected))
    return kept, (("Age", str(age)) if age > 0 else None)


def freshened(stored: CachedResponse, update: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The stored answer's fields updated by a ``304`` (RFC 9111 3.2): each field it sends replaces the stored ones.

    ``Content-Length`` is not updated: it describes the stored body.

    >>> freshened(CachedResponse(200, (("A", "1"), ("B", "2"), ("b", "3"))), [("b", "4"), ("C", "5")])
    (('A', '1'), ('b', '4'), ('C', '5'))
    """
    new: dict[str, list[tuple[str, str]]] = {}
    for name, value in update:
        if name.lower() != "content-length":
            new.setdefault(name.lower(), []).append((name, value))
    merged: list[tuple[str, str]] = []
    for name, value in stored.headers:
        lower = name.lower()
        if lower == "age":
            continue
        if lower not in new:
            merged.append((name, value))
        elif new[lower]:
            merged.extend(new[lower])
            new[lower] = []
    for pairs in new.values():
        merged.extend(pairs)
    return tuple(merged)


class Fetcher:
    """A worker's replay in proxy mode: a stored GET sent to the upstream, its whole answer returned.

    Called from the worker's threads; one HTTP client serves them all, with a
    connection per fetch (see the module's docstring).
    """

    def __init__(self, upstream: Upstream, offloader: Offloader | None = None, passes_large: bool = False) -> None:
        self.upstream = upstream
        self.offloader = offloader
        #: Whether an answer over ``max_body`` becomes a pass marker (the URL is then streamed) rather than a 502.
        self.passes_large = passes_large
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    limits = httpx.Limits(max_connections=self.upstream.max_connections, max_keepalive_connections=0)
                    client = self._client = plain(httpx.Client(timeout=self.upstream.timeouts(), **quiet(limits)))
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __call__(self, request: StoredRequest, max_body: int) -> CachedResponse:
        target = request.target
        stored = self.stored(request)
        client = (request.header(CLIENT) or b"").decode("latin-1")
        text = [(name, value.decode("latin-1")) for name, value in request.headers if not name.startswith(":")]
        headers = [*outgoing(text, client, target, cache_decides=True), ("Connection", "close")]
        if stored is not None:
            headers += validators(stored)
        raw_path = target.raw_path if target.raw_path is not None else quote(target.full_path).encode()
        url = self.upstream.target(raw_path, target.query)
        sent_at = time.time()
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                received_at = time.time()
                body = bytearray()
                length = fields.delta_seconds(response.headers.get("content-length"))
                if length is not None and length > max_body:
                    return self._too_large(max_body)
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > max_body:
                        return self._too_large(max_body)
        except httpx.TimeoutException:
            log.warning("GET %s: the upstream did not answer within %ss", url, self.upstream.timeout)
            return self.upstream.failure(504, f"the upstream did not answer within {self.upstream.timeout:g}s")
        except httpx.HTTPError as error:
            log.warning("GET %s: the upstream failed: %s: %s", url, type(error).__name__, error)
            return self.upstream.failure(502, f"the upstream failed ({type(error).__name__})")
        kept, age = received(response, sent_at, received_at)
        if response.status_code == 304 and stored is not None:
            headers_now = freshened(stored, kept)
            return CachedResponse(
                stored.status, (*headers_now, *([age] if age else [])), stored.body, reason=stored.reason
            )
        reason = response.reason_phrase if response.reason_phrase.isascii() else ""
        return CachedResponse(response.status_code, (*kept, *([age] if age else [])), bytes(body), reason=reason)

    def _too_large(self, max_body: int) -> CachedResponse:
        if not self.passes_large:
            raise BodyTooLarge(max_body)
        return pass_marker(f"the answer is larger than max_body={max_body} bytes; it is streamed, not stored")

    def stored(self, request: StoredRequest) -> CachedResponse | None:
        """The answer stored for the request's key, if it may be revalidated: shared, not a failure."""
        if self.offloader is None:
            return None
        try:
            data = self.offloader.cache.get(self.offloader.response_key(request.key))
            found = decode_stored(data) if data is not None else None
        except (BackendUnavailable, CorruptRecord):
            return None
        if not isinstance(found, CachedResponse) or found.private or found.failed or not validators(found):
            return None
        return found


def validators(answer: CachedResponse) -> list[tuple[str, str]]:
    """The conditional fields that ask whether a stored answer changed (RFC 9110 13.1)."""
    found = []
    etag = answer.header("etag")
    if etag is not None:
        found.append(("If-None-Match", etag))
    modified = answer.header("last-modified")
    if modified is not None:
        found.append(("If-Modified-Since", modified))
    return found


Invalidate = Callable[[list[str]], None]


class Forwarder:
    """The ASGI app behind offload in proxy mode: forwards each request it is given to the upstream, streaming.

    ``invalidate`` is given the paths to expire after a non-error answer to an
    unsafe method (it runs in a thread: backends block).
    """

    def __init__(self, upstream: Upstream, invalidate: Invalidate | None = None) -> None:
        self.upstream = upstream
        self.invalidate = invalidate
        self._clients: dict[int, httpx.AsyncClient] = {}

    def client(self) -> httpx.AsyncClient:
        """The client of the running event loop (one per loop: a connection pool belongs to its loop)."""
        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = plain(
                httpx.AsyncClient(timeout=self.upstream.timeouts(), **quiet(self.upstream.limits()))
            )
        return client

    async def aclose(self) -> None:
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets are not proxied
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1011})
            return
        if scope.get(REPLAY_KEY):
            raise ConfigurationError("proxy mode replays requests with its Fetcher, not through the app")
        await self.forward(scope, receive, send)

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send one request upstream, its body as it arrives; send the answer back, its body as it arrives."""
        method = scope["method"]
        headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in scope.get("headers", ())]
        target = _target_of(scope, headers)
        client_address = scope.get("client")
        address = str(client_address[0]) if client_address else ""
        sent = outgoing(headers, address, target, cache_decides=False)
        length = next((value for name, value in headers if name.lower() == "content-length"), None)
        chunked = any(name.lower() == "transfer-encoding" for name, _ in headers)
        if length is not None:
            sent.append(("Content-Length", length))
        content = _body(receive) if (length not in (None, "0") or chunked) else None
        raw_path = scope.get("raw_path") or quote(scope.get("path", "/")).encode()
        url = self.upstream.target(bytes(raw_path), bytes(scope.get("query_string", b"")))
        request = self.client().build_request(method, url, headers=sent, content=content)
        try:
            response = await self.client().send(request, stream=True)
        except httpx.TimeoutException:
            log.warning("%s %s: the upstream did not answer within %ss", method, url, self.upstream.timeout)
            await _send_answer(send, self.upstream.failure(504, "the upstream did not answer in time"), method)
            return
        except httpx.HTTPError as error:
            log.warning("%s %s: the upstream failed: %s: %s", method, url, type(error).__name__, error)
            await _send_answer(
                send, self.upstream.failure(502, f"the upstream failed ({type(error).__name__})"), method
            )
            return
        try:
            kept = fields.end_to_end(
                [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers.raw]
            )
            if not any(name.lower() == "date" for name, _ in kept):
                kept.append(("Date", fields.imf_date(time.time())))
            if method not in SAFE_METHODS and 200 <= response.status_code < 400 and self.invalidate is not None:
                # Before the client hears of the change, so that its next request finds nothing stale.
                paths = invalidated(target, kept, self.upstream.authority)
                await asyncio.get_running_loop().run_in_executor(None, self.invalidate, paths)
            raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in kept]
            await send({"type": "http.response.start", "status": response.status_code, "headers": raw})
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                with contextlib.suppress(Exception):
                    await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def invalidated(target: Target, response_fields: fields.Fields, upstream_authority: str) -> list[str]:
    """The paths an unsafe request invalidates: its own, and its answer's ``Location`` and ``Content-Location``.

    Those two count only on the same origin as the request (RFC 9111 4.4):
    relative references, or absolute ones naming the request's scheme and
    host, or the upstream's authority. Paths come back percent-decoded, as
    ``expire()`` takes them.

    >>> target = Target("http", "example.com", b"", b"/a", b"", b"/a")
    >>> invalidated(target, [("Location", "/b?x=1"), ("Content-Location", "https://elsewhere.org/c")], "up:80")
    ['/a', '/b']
    """
    base = f"{target.scheme}://{target.host}{(target.raw_path or quote(target.full_path).encode()).decode('latin-1')}"
    paths = [_decoded(urlsplit(base).path)]
    for name, value in response_fields:
        if name.lower() not in ("location", "content-location"):
            continue
        resolved = urlsplit(urljoin(base, value.strip()))
        same = resolved.scheme == target.scheme and resolved.netloc in (target.host, upstream_authority)
        if same and _decoded(resolved.path) not in paths:
            paths.append(_decoded(resolved.path))
    return paths


def _decoded(path: str) -> str:
    return unquote_to_bytes(path or "/").decode("utf-8", "surrogateescape")


def _target_of(scope: Scope, headers: list[tuple[str, str]]) -> Target:
    host = next((value for name, value in headers if name.lower() == "host"), None)
    if host is None:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    raw = scope.get("raw_path")
    path = str(scope.get("path", "/")).encode("utf-8", "surrogateescape")
    return Target(str(scope.get("scheme", "http")), host, b"", path, bytes(scope.get("query_string", b"")), raw)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as the client sends it, chunk by chunk (never whole in memory)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client went away while sending its request body")
        chunk = message.get("body", b"")
        if chunk:
            yield bytes(chunk)
        if not message.get("more_body", False):
            return


async def _send_answer(send: Send, answer: CachedResponse, method: str) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.raw_headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else answer.body, "more_body": False})
