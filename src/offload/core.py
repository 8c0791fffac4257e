"""The protocol-neutral core: what to answer to a request, decided once for WSGI and ASGI.

:meth:`Offloader.decide` is written as a generator that yields the backend
operations it needs (``("get", key)``, ``("add", key, value, ttl)``, ...) and
receives their results. The WSGI middleware runs it with blocking calls
(:meth:`Offloader.decide_sync`), the ASGI middleware with awaited ones, so the
decision logic exists exactly once and never performs I/O by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Literal

from offload.backends import Backend, Cache, Queue, open_backend, resolve_url
from offload.errors import BackendUnavailable, ConfigurationError, CorruptRecord, QueueFull
from offload.keys import request_key
from offload.local import LocalTier
from offload.records import CachedResponse, PendingMarker, StoredRequest
from offload.settings import Settings

log = logging.getLogger("offload")

#: A backend operation the decision needs: a method name and its arguments.
Operation = tuple[Any, ...]
Decision = Generator[Operation, Any, "CachedResponse | None"]

#: Request keys remembered per process, so a hit skips hashing; cleared when full.
KEY_MEMO_SIZE = 10_000

OPERATIONS = {"get": "cache", "add": "cache", "delete": "cache", "push": "queue"}


class RequestTooLarge(Exception):
    """Raised by a request builder when the request exceeds ``max_headers``."""


def own_answer(status: int, retry_after: int | None = None, body: bytes = b"") -> CachedResponse:
    """An answer of offload's own: never cached by proxies, with an optional ``Retry-After``."""
    headers = [("Cache-Control", "no-store")]
    if retry_after is not None:
        headers.insert(0, ("Retry-After", str(retry_after)))
    if body:
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
    headers.append(("Content-Length", str(len(body))))
    return CachedResponse(status, tuple(headers), body)


class Offloader:
    """Holds the settings and the backend, and decides how to answer each request.

    ``url`` names the backend (see :func:`offload.backends.open_backend`);
    ``cache`` and ``queue`` override its parts with objects of your own.
    Keyword options are those of :class:`offload.settings.Settings`.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        cache: Any = None,
        queue: Any = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise ConfigurationError("pass either settings= or keyword options, not both")
        self.settings = settings if settings is not None else Settings(**options)
        if url is None:  # as OFFLOAD_URL, these name the parts when the code names nothing
            cache = cache if cache is not None else os.environ.get("OFFLOAD_CACHE_URL") or None
            queue = queue if queue is not None else os.environ.get("OFFLOAD_QUEUE_URL") or None
        self.url = resolve_url(url)  # read the environment now, not at the first request
        self._explicit_cache = cache
        self._explicit_queue = queue
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        prefix = self.settings.namespace
        self._response_prefix = f"{prefix}:r:"
        self._pending_prefix = f"{prefix}:p:"
        self._running_prefix = f"{prefix}:l:"
        s = self.settings
        self.accepted = own_answer(202, s.retry_after)
        self.queue_full = own_answer(503, s.retry_after)
        self.unavailable = own_answer(503, s.retry_after)
        self.uri_too_long = own_answer(414, body=b"Request-URI too long\n")
        self.headers_too_large = own_answer(431, body=b"Request headers too large\n")
        self._last_outage_log = 0.0
        self._last_full_log = 0.0
        self._refused = 0  # 503s for a full queue since the last log line
        self._keys: dict[tuple[bytes, bytes, tuple[bytes | None, ...]], str] = {}
        self._local: LocalTier | Literal[False] | None = None  # None: not decided yet

    # -- backend --------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The cache and queue in use, opened on first use (after any fork)."""
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    self._backend = self._open()
        return self._backend

    def _open(self) -> Backend:
        from offload.adapters import adapt_cache, adapt_queue

        cache = adapt_cache(self._explicit_cache) if self._explicit_cache is not None else None
        queue = adapt_queue(self._explicit_queue) if self._explicit_queue is not None else None
        if cache is None or queue is None:
            opened = open_backend(self.url)
            cache = cache or opened.cache
            queue = queue or opened.queue
        if cache is None or queue is None:
            missing = "cache" if cache is None else "queue"
            raise ConfigurationError(
                f"the backend {self.url!r} has no {missing}: pass {missing}= or a URL that has one"
            )
        return Backend(self.url or "", cache, queue)

    @property
    def cache(self) -> Cache:
        cache = self.backend.cache
        assert cache is not None  # checked in _open
        return cache

    @property
    def queue(self) -> Queue:
        queue = self.backend.queue
        assert queue is not None  # checked in _open
        return queue

    # -- keys -------------------------------------------------------------

    def response_key(self, key: str) -> str:
        return self._response_prefix + key

    def pending_key(self, key: str) -> str:
        return self._pending_prefix + key

    def running_key(self, key: str) -> str:
        return self._running_prefix + key

    # -- the decision ---------------------------------------------------------

    def decide(
        self,
        method: str,
        path: bytes,
        query: bytes,
        header: Callable[[str], bytes | None],
        build_request: Callable[[str], StoredRequest],
    ) -> Decision:
        """Decide the answer to one request; None means "let the app answer it".

        ``header(name)`` returns a request header by lowercase name;
        ``build_request(key)`` makes the record a worker replays, and is called
        only on a miss.
        """
        if method != "GET" and method != "HEAD":
            return None
        settings = self.settings
        if len(path) + len(query) > settings.max_url:
            return self.uri_too_long
        vary = tuple([header(name) for name in settings.vary])
        memo = (path, query, vary)
        key = self._keys.get(memo)
        if key is None:
            key = request_key(path, query, zip(settings.vary, vary, strict=True))
            if len(self._keys) >= KEY_MEMO_SIZE:
                self._keys.clear()
            self._keys[memo] = key
        local = self._local
        seen = None
        if local:
            kept = local.get(key)
            if kept is not None:
                return kept
            seen = local.generation()  # before the read: an expiry during it is not missed
        try:
            data = yield ("get", self._response_prefix + key)
        except BackendUnavailable as error:
            return self._outage(error)
        if data is not None:
            try:
                response = CachedResponse.decode(data)
            except CorruptRecord as error:
                log.warning("ignoring a cached answer that is not in offload's format (%s); recomputing it", error)
            else:
                if local is None and self._local is None:
                    self._local = self._make_local_tier()  # kept from the next read on, once it has a generation
                elif local and seen is not None:
                    local.put(key, response, seen)
                return response
        try:
            request = build_request(key)
        except RequestTooLarge:
            return self.headers_too_large
        pending = self._pending_prefix + key
        try:
            won = yield ("add", pending, PendingMarker("queued", time.time()).encode(), settings.pending_ttl)
            if not won:
                return self.accepted
            # A worker stores its answer, then deletes the pending marker: an answer
            # stored between the read above and this add is served, not computed again.
            data = yield ("get", self._response_prefix + key)
            if data is not None:
                with contextlib.suppress(CorruptRecord):
                    response = CachedResponse.decode(data)
                    with contextlib.suppress(BackendUnavailable):  # else the marker expires by itself
                        yield ("delete", pending)
                    return response
            try:
                yield ("push", key, request.encode(), settings.max_queued)
            except QueueFull:
                yield ("delete", pending)
                self._log_queue_full()
                return self.queue_full
            except BackendUnavailable:
                with contextlib.suppress(BackendUnavailable):  # else the marker expires by itself
                    yield ("delete", pending)
                raise
        except BackendUnavailable as error:
            return self._outage(error)
        return self.accepted

    def _make_local_tier(self) -> LocalTier | Literal[False]:
        """The in-process tier, if enabled and the cache can say cheaply when to drop it."""
        cache = self.cache
        if not self.settings.local_cache or not self.settings.local_ttl or cache.generation() is None:
            return False
        return LocalTier(self.settings.local_cache, self.settings.local_ttl, cache.generation)

    def _log_queue_full(self) -> None:
        """One log line per 10 seconds at most: a flood of misses must not become a flood of log lines."""
        self._refused += 1
        now = time.monotonic()
        if now - self._last_full_log > 10:
            self._last_full_log = now
            refused, self._refused = self._refused, 0
            log.warning(
                "queue holds max_queued=%s jobs: answering 503 (%d request(s) since the last report)",
                self.settings.max_queued,
                refused,
            )

    def _outage(self, error: BackendUnavailable) -> CachedResponse | None:
        now = time.monotonic()
        if now - self._last_outage_log > 10:
            self._last_outage_log = now
            action = "passing requests to the app" if self.settings.passthrough_on_error else "answering 503"
            log.error("offload backend unavailable (%s): %s until it is back", error, action)
        return None if self.settings.passthrough_on_error else self.unavailable

    def kept(self, path: bytes, query: bytes, vary: tuple[bytes | None, ...]) -> CachedResponse | None:
        """The answer this process keeps for a request it has seen, if still valid: a hit without I/O.

        ``vary`` holds the request's values of ``settings.vary``, in order. Adapters try
        this before :meth:`decide`, which would find the same answer at a higher cost.
        """
        local = self._local
        if not local:
            return None
        key = self._keys.get((path, query, vary))
        return None if key is None else local.get(key)

    def decide_sync(
        self,
        method: str,
        path: bytes,
        query: bytes,
        header: Callable[[str], bytes | None],
        build_request: Callable[[str], StoredRequest],
    ) -> CachedResponse | None:
        """Run :meth:`decide` with blocking backend calls."""
        decision = self.decide(method, path, query, header, build_request)
        try:
            operation = next(decision)
            while True:
                try:
                    result = self._call(operation)
                except (BackendUnavailable, QueueFull) as error:
                    operation = decision.throw(error)
                else:
                    operation = decision.send(result)
        except StopIteration as done:
            result_value: CachedResponse | None = done.value
            return result_value

    async def decide_async(
        self,
        method: str,
        path: bytes,
        query: bytes,
        header: Callable[[str], bytes | None],
        build_request: Callable[[str], StoredRequest],
        call: Callable[[Operation], Awaitable[Any]],
    ) -> CachedResponse | None:
        """Run :meth:`decide`, awaiting each backend operation through ``call``."""
        decision = self.decide(method, path, query, header, build_request)
        try:
            operation = next(decision)
            while True:
                try:
                    result = await call(operation)
                except (BackendUnavailable, QueueFull) as error:
                    operation = decision.throw(error)
                else:
                    operation = decision.send(result)
        except StopIteration as done:
            result_value: CachedResponse | None = done.value
            return result_value

    def _call(self, operation: Operation) -> Any:
        name, *args = operation
        target = self.cache if OPERATIONS[name] == "cache" else self.queue
        try:
            return getattr(target, name)(*args)
        except (BackendUnavailable, QueueFull):
            raise
        except Exception as error:  # a driver error we do not know: treat it as an outage
            raise BackendUnavailable(f"{type(error).__name__}: {error}") from error

    # -- expiry -----------------------------------------------------------------

    def expire(self, path: str, params: Any = None) -> int:
        """Drop cached answers for ``path`` (``*`` matches anything), optionally only with ``params``.

        ``params`` is a mapping or pairs; an answer matches when its query
        holds every given name=value exactly. Returns how many were dropped.
        """
        from offload.keys import normalize_params

        return self.cache.expire(path, normalize_params(params))
