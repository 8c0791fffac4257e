"""offload in front of any HTTP server: :func:`proxy_app` builds the ASGI app ``offload proxy`` serves.

The app is offload's ASGI middleware (:class:`ProxyMiddleware`) around a
:class:`~offload.proxy.upstream.Forwarder`: a GET or HEAD is answered from the
store, or waits (``miss_wait``) while one worker fetches it from the upstream
for every request that asks meanwhile; any other request streams through to
the upstream. Workers fetch with a :class:`~offload.proxy.upstream.Fetcher`,
which ``offload worker`` finds through :meth:`ProxyMiddleware.offload_replayer`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from offload.asgi import ASGIMiddleware, Message, Receive, Scope, Send
from offload.core import Incoming
from offload.delivery import MEMBER, Conditions
from offload.errors import BackendUnavailable
from offload.proxy import fields
from offload.proxy.policy import SharedCache
from offload.proxy.ranges import ranged
from offload.proxy.upstream import Fetcher, Forwarder, Upstream
from offload.records import CachedResponse, StoredRequest

log = logging.getLogger("offload.proxy")

#: Where the scope of a request keeps when it arrived, for the answer's ``Cache-Status``.
ARRIVED = "offload.proxy.arrived"

#: What proxy mode changes in offload's defaults, and why.
PROXY_DEFAULTS: dict[str, Any] = {
    "vary": (),  # the key is the URL and what the origin's Vary names (RFC 9111 4.1)
    "max_attempts": 1,  # a request is never sent to the origin twice
    "failure_statuses": frozenset({500, 502, 503, 504}),  # the errors stale-if-error covers (RFC 5861 4)
    "etags": False,  # the origin's answers are stored as sent
    "monitor_path": None,  # every path belongs to the upstream
    "stale_if_error": 60.0,  # the last good answer, while the upstream fails (RFC 9111 4.2.4)
}


class ProxyMiddleware(ASGIMiddleware):
    """offload's ASGI middleware in front of ``upstream``: the key and the fetches of an HTTP cache.

    The query is part of the key as the client sent it (a proxy sends on the
    URL it was given, byte for byte), and every answer carries a ``Date``
    (RFC 9110 6.6.1), offload's own included. With ``shared_cache``, unsafe
    methods invalidate what is stored (RFC 9111 4.4), and an answer too large
    to keep makes its URL go straight to the upstream. Build it with
    :func:`proxy_app`, which sets proxy mode's defaults.
    """

    def __init__(self, upstream: Upstream, *, shared_cache: bool = True, **options: Any) -> None:
        self.upstream = upstream
        self.shared_cache = shared_cache
        super().__init__(Forwarder(upstream, self.invalidate if shared_cache else None), **options)

    def invalidate(self, paths: list[str]) -> None:
        """Drop every stored answer of these paths, whatever their query: more than asked is safe, less is not."""
        for path in paths:
            try:
                self.offloader.expire(path)
            except BackendUnavailable as error:
                log.error("cannot invalidate %s after an unsafe request (%s)", path, error)

    def incoming(
        self, scope: Scope, method: str, headers: dict[bytes, bytes], inputs: tuple[Any, ...], conditions: Conditions
    ) -> Incoming:
        incoming = super().incoming(scope, method, headers, inputs, conditions)
        scope[ARRIVED] = incoming.arrived
        raw_query = bytes(scope.get("query_string", b""))
        return dataclasses.replace(incoming, target=dataclasses.replace(incoming.target, query=raw_query))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, _dated(send))

    async def respond(
        self, scope: Scope, send: Send, response: CachedResponse, extra: tuple[bytes, bytes] | None = None
    ) -> None:
        """Send a stored answer; to a ``Range`` request, the part it asks for (:mod:`offload.proxy.ranges`).

        An answer fetched while the request waited says so in ``Cache-Status``
        (``fwd=miss``, the upstream's status, and ``stored`` when it was kept).
        """
        arrived = scope.get(ARRIVED)
        if self.offloader.settings.cache_status and arrived is not None and response.created >= arrived:
            response = _fetched(response)
        if scope.get("method") == "GET" and response.status == 200:
            wanted = _field(scope, b"range")
            if wanted is not None:
                response = ranged(response, wanted, _field(scope, b"if-range"))
        await super().respond(scope, send, response, extra)

    def offload_replayer(self) -> Callable[[StoredRequest, int], CachedResponse]:
        """How a worker replays this app's requests: a fetch from the upstream (see :mod:`offload.replay`)."""
        return Fetcher(self.upstream, self.offloader, passes_large=self.shared_cache)


def _fetched(response: CachedResponse) -> CachedResponse:
    """The answer with the ``Cache-Status`` of one fetched for the request it goes to (RFC 9211)."""
    value = f"{MEMBER}; fwd=miss; fwd-status={response.status}" + ("" if response.private else "; stored")
    headers = tuple(
        (name, value) if name == "Cache-Status" and old.startswith(MEMBER + ";") else (name, old)
        for name, old in response.headers
    )
    return dataclasses.replace(response, headers=headers)


def _field(scope: Scope, name: bytes) -> str | None:
    """A request header, repeated ones joined with commas; None when absent."""
    values = [bytes(value).decode("latin-1") for key, value in scope.get("headers", ()) if bytes(key).lower() == name]
    return ", ".join(values) if values else None


def _dated(send: Send) -> Send:
    """``send`` adding a ``Date`` to an answer that has none."""

    async def sending(message: Message) -> None:
        if message.get("type") == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(bytes(name).lower() == b"date" for name, _ in headers):
                headers.append((b"date", _now().encode("latin-1")))
                message = {**message, "headers": headers}
        await send(message)

    return sending


_last: tuple[int, str] = (0, "")


def _now() -> str:
    """The current time as an IMF-fixdate, made once a second."""
    global _last
    second = int(time.time())
    if _last[0] != second:
        _last = (second, fields.imf_date(second))
    return _last[1]


def proxy_app(
    upstream: str,
    *,
    shared_cache: bool = True,
    timeout: float = 30.0,
    connect_timeout: float = 5.0,
    max_connections: int = 100,
    keepalive: float = 4.0,
    **options: Any,
) -> ProxyMiddleware:
    """An ASGI app that serves ``upstream`` (an ``http://`` URL) through offload.

    GETs follow the worker pattern: a miss waits up to ``miss_wait`` seconds
    (by default the upstream ``timeout`` plus 5) while one worker fetches the
    URL for every request that asks meanwhile, then gets the answer; every
    other request streams through. Run the workers with ``offload worker
    MODULE:ATTR`` (or ``offload proxy``, which runs both).

    :param upstream: the server behind the proxy, ``http://host:port`` (a path prefix is kept).
    :param shared_cache: follow RFC 9111 as a shared cache (the default): the
        origin's ``Cache-Control``, ``Vary``, validators, the client's
        request directives, invalidation on unsafe methods. With False,
        offload's middleware rules apply: keyed on ``vary``, kept for ``ttl``.
    :param timeout: seconds to wait for the upstream (connect, each read and
        write), 30 by default; past it the answer is a 504.
    :param connect_timeout: seconds to wait for a connection, 5 by default; a refused one is a 502.
    :param max_connections: connections to the upstream per process, 100 by default.
    :param keepalive: seconds an idle upstream connection is kept, 4 by default.
    :param options: the options of :class:`offload.settings.Settings`; proxy
        mode changes some defaults (:data:`PROXY_DEFAULTS`).

    >>> app = proxy_app("http://127.0.0.1:8080", url="memory://doctest-proxy")
    >>> app.offloader.settings.miss_wait, app.offloader.settings.vary
    (35.0, ())
    """
    origin = Upstream(
        upstream, timeout=timeout, connect_timeout=connect_timeout, max_connections=max_connections, keepalive=keepalive
    )
    settings: dict[str, Any] = {**PROXY_DEFAULTS, **options}
    settings.setdefault("miss_wait", origin.timeout + 5.0)
    settings.setdefault("max_wait", max(30.0, float(settings["miss_wait"])))
    settings.setdefault("namespace", namespace_of(origin.url))
    if shared_cache:
        settings.setdefault("policy", SharedCache())
    elif "vary" not in options:
        settings["vary"] = ("authorization", "cookie")
    return ProxyMiddleware(origin, shared_cache=shared_cache, **settings)


def namespace_of(url: str) -> str:
    """The namespace of a proxy's store by default: named after its upstream.

    >>> namespace_of("http://127.0.0.1:8080/api")
    'proxy-127-0-0-1-8080-api'
    """
    parts = urlsplit(url)
    name = "proxy-" + f"{parts.hostname}-{parts.port or ''}-{parts.path}".strip("-/")
    safe = "".join(char if char.isascii() and char.isalnum() else "-" for char in name)
    while "--" in safe:
        safe = safe.replace("--", "-")
    return safe.strip("-")[:64]
