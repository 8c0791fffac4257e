"""The protocol-neutral core: what to answer to a request, decided once for WSGI and ASGI.

:meth:`Offloader.decide` is written as a generator that yields the backend
operations it needs (``("get", key)``, ``("add", key, value, ttl)``, ...) and
receives their results. The WSGI middleware runs it with blocking calls
(:meth:`Offloader.decide_sync`), the ASGI middleware with awaited ones, so the
decision logic exists exactly once and never performs I/O by itself.

A request goes through the steps Varnish names: *recv* (is it offloaded at
all, is it too large), *hash* (:meth:`Offloader.primary_key`, then the key of
its variant when the app's ``Vary`` was learned for the URL), *lookup* (an
answer, one meant for a single client, or nothing) and *miss* (queue exactly
one job for the key, answer 202). What a worker may store is decided in
:mod:`offload.storable`, after the replay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from offload import admission, freshness
from offload.answers import OwnAnswers, monitored
from offload.backends import DEFAULT_NAMESPACE, Backend, Cache, ExpiryRule, Queue, open_backend, resolve_url
from offload.delivery import NO_CONDITIONS, Conditions, deliver
from offload.errors import BackendUnavailable, ConfigurationError, CorruptRecord, QueueFull
from offload.events import Events
from offload.freshness import FRESH
from offload.keys import Target, normalize_params, personal_key, request_key, variant_key
from offload.local import KeyMemo, LocalTier
from offload.policy import FORWARD, MIDDLEWARE, CachePolicy, policy_of
from offload.records import CachedResponse, PendingMarker, StoredRequest, VaryRecord, decode_stored
from offload.settings import Settings, settings_from
from offload.waiting import Waiters, held, hold_for, holds_on

log = logging.getLogger("offload")

T = TypeVar("T")

#: A backend operation the decision needs: a method name and its arguments.
Operation = tuple[Any, ...]
Decision = Generator[Operation, Any, "CachedResponse | None"]

#: Which part of the backend each operation of :meth:`Offloader.decide` goes to.
OPERATIONS = {
    "get": "cache",
    "add": "cache",
    "delete": "cache",
    "take": "cache",
    "incr": "cache",
    "touch": "cache",
    "push": "queue",
    "stats": "queue",
}


#: Seconds a new pending marker holds its key until its job is queued and the marker is made to last.
CLAIM_WINDOW = 30.0


class RequestTooLarge(Exception):
    """The keyed request headers exceed ``max_headers``."""


@dataclass(slots=True)
class Incoming:
    """One GET or HEAD as the core sees it; an adapter builds it when the in-memory tier had no answer.

    ``inputs`` is a tuple of the raw request parts the key depends on, as the
    adapter reads them (its hash is remembered, so a repeated request skips
    SHA-256); ``header(name)`` returns a request header by lowercase name,
    repeated ones joined with commas; ``names()`` the lowercase names of
    every header the client sent; ``url_size`` the length of the path and
    query string as the client sent them; ``conditions`` its validators; the
    rest what the client prefers (see :mod:`offload.waiting`).
    """

    method: str
    target: Target
    inputs: tuple[Any, ...]
    header: Callable[[str], bytes | None]
    names: Callable[[], Iterable[str]]
    url_size: int  # bytes of the path and query as sent, for ``max_url``
    conditions: Conditions = NO_CONDITIONS  # If-None-Match, If-Modified-Since
    client: str = ""  # the client's address, for admission control only: never keyed, never replayed
    wait: float = 0.0  # seconds the client prefers to wait for the answer (Prefer: wait=N)
    respond_async: bool = False  # the client prefers a status monitor (Prefer: respond-async)
    no_cache: bool = False  # the client asked for a fresh answer (Cache-Control: no-cache)
    key: str = ""  # set by the decision: the key whose answer a 202 stands for
    seen: tuple[Any, ...] | None = None  # set by the decision: what it found under ``key`` (see :func:`version`)
    owner: str = ""  # a token of this request's own, when answers for one client go to their request only
    personal: bool = False  # set by the decision: this request's job has a key of its own (see keys.personal_key)
    remembered: bool = True  # whether answers kept in this process's memory may serve it (not after a wait)
    arrived: float = field(default_factory=time.time)


def _is_for(answer: CachedResponse, incoming: Incoming) -> bool:
    """Whether an answer kept for one client may go to this request: it has no owner, or it is this request's."""
    return not answer.owner or answer.owner == incoming.owner


def _no_early_refresh() -> float:
    return 1.0


def version(found: CachedResponse | VaryRecord | None) -> tuple[Any, ...] | None:
    """What tells one stored record from the next under a key: a waiting request is woken by a change of it."""
    if isinstance(found, CachedResponse):
        return (found.created, found.expires, found.retry_at, found.private, found.owner)
    if isinstance(found, VaryRecord):
        return ("vary", found.headers)
    return None


def _path(request: StoredRequest) -> str:
    return request.target.full_path.decode("latin-1")


def keys_of(request: StoredRequest, policy: CachePolicy = MIDDLEWARE) -> tuple[str, str]:
    """The primary key and the key of a stored request, computed again from what it holds.

    A worker compares them with the keys the request was stored under: a job
    whose inputs do not give its key is not offload's, and is dropped.
    """
    primary = request_key(request.target, policy.key_headers(request.vary, request.header))
    key = primary
    if request.learned:
        key = variant_key(primary, policy.key_headers(request.learned, request.header))
    if request.personal:
        key = personal_key(key, request.owner)
    return primary, key


class Offloader:
    """Holds the settings and the backend, and decides how to answer each request.

    ``url`` names the backend (see :func:`offload.backends.open_backend`);
    ``cache`` and ``queue`` are parts of your own that replace its parts
    (objects keeping the contract of :mod:`offload.backends.base`; the
    middlewares turn clients and URLs into such objects). Keyword options are
    those of :class:`offload.settings.Settings`.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        cache: Cache | None = None,
        queue: Queue | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise ConfigurationError("pass either settings= or keyword options, not both")
        self.settings = settings if settings is not None else settings_from(options)
        #: The rules this deployment follows (the ``policy`` setting; the middleware's by default).
        self.policy = policy_of(self.settings)
        self.namespace = self.settings.namespace or DEFAULT_NAMESPACE
        self.url = resolve_url(url)  # read the environment now, not at the first request
        self._explicit_cache = cache
        self._explicit_queue = queue
        #: What the app named its own cache and queue by (a URL, or the object it passed), for people to read;
        #: the middlewares set it, since the parts they pass are already adapted. See :meth:`own_parts`.
        self.part_sources: dict[str, object] = {}
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        prefix = self.namespace
        self._response_prefix = f"{prefix}:r:"
        self._pending_prefix = f"{prefix}:p:"
        self._running_prefix = f"{prefix}:l:"
        self._attempts_prefix = f"{prefix}:a:"
        s = self.settings
        self.events = Events()
        #: Gives the ``traceparent`` a queued job carries (set by :func:`offload.tracing.install`), else None.
        self.trace_context: Callable[[], str] | None = None
        #: offload's own answers (202, 503, 414, 431, 429), built once.
        self.answers = OwnAnswers(s)
        self.random = random.Random()  # early refresh draws from it; tests seed it
        self._last_outage_log = 0.0
        self._last_full_log = 0.0
        self._refused = 0  # 503s for a full queue since the last log line
        self._keys = KeyMemo(s.key_memo)
        #: Keys this process asked a refresh for, until when: a stale hit meanwhile costs no backend call.
        self._refreshing: dict[str, float] = {}
        self._waiters: Waiters | None = None
        #: Requests that may wait at once in this process when ``max_waiters`` is None; the middleware sets it.
        self.default_waiters = 8
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

    @property
    def uses_own_parts(self) -> bool:
        """Whether the app passed both its cache and its queue as objects, so that its URL is never opened."""
        return self._explicit_cache is not None and self._explicit_queue is not None

    def own_parts(self) -> dict[str, object]:
        """The parts the app passed instead of its URL's, by name (``"cache"``, ``"queue"``): what it named them by."""
        given = {"cache": self._explicit_cache, "queue": self._explicit_queue}
        return {name: self.part_sources.get(name, part) for name, part in given.items() if part is not None}

    @property
    def opened_backend(self) -> Backend | None:
        """The backend in use if it was opened already, else None: looking costs no I/O."""
        return self._backend

    def use_backend(self, backend: Backend | None) -> Backend | None:
        """Put ``backend`` under this offloader (None: open its own again on next use); return the previous one.

        The in-process tier of answers is dropped and built again over the new
        backend. :mod:`offload.testing` swaps in a recording backend this way.
        """
        with self._backend_lock:
            previous, self._backend = self._backend, backend
            self._local = None
        return previous

    def _open(self) -> Backend:
        cache, queue = self._explicit_cache, self._explicit_queue
        if cache is None or queue is None:
            opened = open_backend(self.url, self.namespace)
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
        if cache is None:  # pragma: no cover - _open refuses a backend without one
            raise ConfigurationError("no cache")
        return cache

    @property
    def queue(self) -> Queue:
        queue = self.backend.queue
        if queue is None:  # pragma: no cover - _open refuses a backend without one
            raise ConfigurationError("no queue")
        return queue

    # -- keys -------------------------------------------------------------

    def response_key(self, key: str) -> str:
        return self._response_prefix + key

    def pending_key(self, key: str) -> str:
        return self._pending_prefix + key

    def running_key(self, key: str) -> str:
        return self._running_prefix + key

    def attempts_key(self, key: str) -> str:
        return self._attempts_prefix + key

    def primary_key(self, incoming: Incoming) -> str:
        """The key of the request's URL: its target and its ``vary`` headers (remembered per process)."""
        key = self._keys.get(incoming.inputs)
        if key is None:
            key = request_key(incoming.target, self.policy.key_headers(self.settings.vary, incoming.header))
            size = sum(len(part) for part in incoming.inputs if isinstance(part, (str, bytes)))
            self._keys.put(incoming.inputs, key, size)
        return key

    # -- the decision ---------------------------------------------------------

    def decide(self, incoming: Incoming) -> Decision:
        """Decide the answer to one request; None means "let the app answer it"."""
        if incoming.method != "GET" and incoming.method != "HEAD":
            return None
        if incoming.url_size > self.settings.max_url:
            return self.answers.uri_too_long
        policy = self.policy
        if policy.owned_answers and not incoming.owner:
            incoming.owner = secrets.token_hex(16)
        primary = key = self.primary_key(incoming)
        learned: tuple[str, ...] = ()
        fwd = "uri-miss"
        try:
            found = yield from self._lookup(key, incoming.remembered)
            if isinstance(found, VaryRecord):
                learned = found.headers
                key = variant_key(primary, policy.key_headers(learned, incoming.header))
                found = yield from self._lookup(key, incoming.remembered)
                fwd = "vary-miss"
            if incoming.personal or (
                isinstance(found, CachedResponse) and found.private and not _is_for(found, incoming)
            ):
                # Another request's own answer: this one gets its own, under a key of its own.
                key, incoming.personal = personal_key(key, incoming.owner), True
                found = yield from self._lookup(key, incoming.remembered)
            now = time.time()
            if isinstance(found, CachedResponse) and found.private:
                mine = yield from self._take(key, incoming)
                if mine is not None:
                    return deliver(mine, now, FRESH, incoming.conditions, self.settings.cache_status)
                found = None
            elif isinstance(found, CachedResponse):
                look = policy.look(found, incoming, now, self.settings, self.random.random)
                if look.serve:
                    # A client's no-cache never makes it wait: at most one refresh, deduplicated, once a second.
                    wanted = look.refresh or (incoming.no_cache and now - found.created > 1.0)
                    if (wanted or look.stale) and not self._refresh_asked(key, now) and wanted:
                        yield from self._refresh(incoming, key, primary, learned, found.created)
                    return deliver(found, now, look, incoming.conditions, self.settings.cache_status)
                fwd = "stale"
            action = policy.at_miss(incoming, found)
            if action == FORWARD:
                return None
            if isinstance(action, CachedResponse):
                return action
            try:
                request = self._stored_request(incoming, key, primary, learned, incoming.personal)
            except RequestTooLarge:
                return self.answers.headers_too_large
            incoming.key, incoming.seen = key, version(found)
            duration = found.duration if isinstance(found, CachedResponse) else 0.0
            return (yield from self._miss(incoming, key, request, fwd, duration))
        except BackendUnavailable as error:
            return self._outage(error)

    def _lookup(
        self, key: str, remembered: bool = True
    ) -> Generator[Operation, Any, CachedResponse | VaryRecord | None]:
        """What the response key holds, from this process's memory (if ``remembered``) or the backend.

        Damaged records are misses.
        """
        local = self._local
        seen = None
        if local:
            kept = local.get(key) if remembered else None
            # A stale copy is read again from the backend: its refresh may have landed meanwhile.
            if kept is not None and not (isinstance(kept, CachedResponse) and kept.expires <= time.time()):
                return kept
            seen = local.generation()  # before the read: an expiry during it is not missed
        data = yield ("get", self._response_prefix + key)
        if data is None:
            return None
        try:
            found = decode_stored(data)
        except CorruptRecord as error:
            log.warning("ignoring a cached answer that is not in offload's format (%s); recomputing it", error)
            return None
        if local is None and self._local is None:
            self._local = self._make_local_tier()  # kept from the next read on, once it has a generation
        elif local and seen is not None:
            local.put(key, found, seen)
        return found

    def _take(self, key: str, incoming: Incoming) -> Generator[Operation, Any, CachedResponse | None]:
        """Claim an answer meant for one client: of all the requests that find it, one gets it.

        An answer that turns out to be another request's (stored meanwhile) is put back for it.
        """
        data = yield ("take", self._response_prefix + key)
        if data is None:
            return None
        with contextlib.suppress(CorruptRecord):
            found = decode_stored(data)
            if isinstance(found, CachedResponse) and _is_for(found, incoming):
                return found
            if isinstance(found, CachedResponse):
                yield ("add", self._response_prefix + key, data, max(1.0, found.expires - time.time()))
        return None

    def _refresh(self, incoming: Incoming, key: str, primary: str, learned: tuple[str, ...], served: float) -> Decision:
        """Queue one refresh of an answer (created at ``served``) that is served meanwhile.

        A full queue or an outage only skips it: the next request tries again.
        """
        pending = self._pending_prefix + key
        try:
            request = self._stored_request(incoming, key, primary, learned)
            marker = PendingMarker("queued", time.time()).encode()
            won = yield ("add", pending, marker, self._claim_window)
            if not won:
                return None
            # The refresh that made the marker may have stored its answer and dropped the marker
            # since this request read the answer it serves: then there is nothing left to refresh.
            data = yield ("get", self._response_prefix + key)
            with contextlib.suppress(CorruptRecord):
                found = decode_stored(data) if data is not None else None
                if isinstance(found, CachedResponse) and found.created > served and time.time() < found.expires:
                    yield ("delete", pending)
                    return None
            yield ("push", key, request.encode(), self.settings.max_queued)
            yield from self._hold_key(pending)
            if self.events.listeners:
                self.events.emit("job.queued", key=key, path=_path(request), refresh=True)
        except (RequestTooLarge, QueueFull, BackendUnavailable):
            pass  # the stale answer is served; the next request tries again
        return None

    def _miss(
        self, incoming: Incoming, key: str, request: StoredRequest, fwd: str = "uri-miss", duration: float = 0.0
    ) -> Decision:
        """Queue one job for ``key``, unless one is queued or running: the 202 in either case.

        ``duration`` is how long the app took to compute the stale answer
        found, if any: the 202's ``Retry-After`` says so.
        """
        settings = self.settings
        pending = self._pending_prefix + key
        won = yield ("add", pending, PendingMarker("queued", time.time()).encode(), self._claim_window)
        if not won:
            return self._accepted(incoming, fwd, True, duration)
        if settings.max_new_keys_per_minute is not None:
            client = admission.client_of(settings, incoming.header, incoming.client)
            if client is not None:
                counter, left = admission.counter_key(self.namespace, client, time.time())
                count = yield ("incr", counter, float(admission.WINDOW))
                if count > settings.max_new_keys_per_minute:
                    yield ("delete", pending)
                    return self.answers.limited(left)
        # A worker stores its answer, then deletes the pending marker: an answer
        # stored between the lookup and this add is served, not computed again.
        data = yield ("get", self._response_prefix + key)
        if data is not None:
            with contextlib.suppress(CorruptRecord):
                found = decode_stored(data)
                now = time.time()
                if isinstance(found, CachedResponse) and not found.private and self._serves(found, incoming, now):
                    with contextlib.suppress(BackendUnavailable):  # else the marker expires by itself
                        yield ("delete", pending)
                    return deliver(found, now, FRESH, NO_CONDITIONS, settings.cache_status)
        try:
            yield ("push", key, request.encode(), settings.max_queued)
        except QueueFull:
            yield ("delete", pending)
            self._log_queue_full()
            return self.answers.queue_full
        except BackendUnavailable:
            with contextlib.suppress(BackendUnavailable):  # else the marker expires by itself
                yield ("delete", pending)
            raise
        yield from self._hold_key(pending)
        if self.events.listeners:
            self.events.emit("job.queued", key=key, path=_path(request), refresh=False)
        return self._accepted(incoming, fwd, False, duration)

    @property
    def _claim_window(self) -> float:
        """How long a new pending marker holds its key before its job is queued.

        A process that dies between the marker and the push (a killed web
        process, a failed-over backend) leaves a marker with no job: it blocks
        the key for seconds, not for ``pending_ttl``.
        """
        return min(self.settings.pending_ttl, CLAIM_WINDOW)

    def _hold_key(self, pending: str) -> Decision:
        """The job is queued: its marker now holds the key for ``pending_ttl`` (the worker renews it once it runs)."""
        if self.settings.pending_ttl > CLAIM_WINDOW:
            with contextlib.suppress(BackendUnavailable):  # else the marker lapses and a later miss queues again
                yield ("touch", pending, self.settings.pending_ttl)
        return None

    def _serves(self, answer: CachedResponse, incoming: Incoming, now: float) -> bool:
        """Whether an answer found on the way to queueing a job serves the request as it is: fresh for it."""
        look = self.policy.look(answer, incoming, now, self.settings, _no_early_refresh)
        return look.serve and not look.stale and not look.refresh

    def _accepted(self, incoming: Incoming, fwd: str, collapsed: bool, duration: float) -> CachedResponse:
        """The 202: ``Retry-After`` from the time the app took last, a monitor for a client that asked for one."""
        accepted = self.answers.accepted(fwd, collapsed, duration)
        if incoming.respond_async and self.settings.monitor_path is not None and incoming.key:
            root = incoming.target.root_path.decode("latin-1")
            return monitored(accepted, root + self.settings.monitor_path + incoming.key)
        return accepted

    def _stored_request(
        self, incoming: Incoming, key: str, primary: str, learned: tuple[str, ...], personal: bool = False
    ) -> StoredRequest:
        """What a worker replays: the target and the headers the policy replays (the keyed ones), the others' names."""
        vary = self.settings.vary
        headers, present = self.policy.replayed(incoming, tuple(dict.fromkeys((*vary, *learned))))
        size = sum(len(name) + len(value) + 4 for name, value in headers) + sum(len(name) + 2 for name in present)
        if size > self.settings.max_headers:
            raise RequestTooLarge()
        trace = self.trace_context() if self.trace_context is not None else ""
        return StoredRequest(
            key,
            primary,
            incoming.target,
            tuple(headers),
            vary,
            learned,
            present,
            trace=trace,
            owner=incoming.owner,
            personal=personal,
        )

    def _make_local_tier(self) -> LocalTier | Literal[False]:
        """The in-process tier, if enabled and the cache can say cheaply when to drop it."""
        cache, s = self.cache, self.settings
        if not s.local_cache or not s.local_ttl or cache.generation() is None:
            return False
        return LocalTier(s.local_cache, s.local_max_answer, s.local_ttl, cache.generation)

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
        return None if self.settings.passthrough_on_error else self.answers.unavailable

    def told(self, response: CachedResponse | None, path: str, started: float) -> None:
        """Emit the ``request`` event for an answer a middleware gives (None: the app answers by itself)."""
        if response is None:
            self.events.emit("pass", reason="outage", path=path)
            return
        outcome = response.memo.get("outcome", "hit")
        self.events.emit("request", outcome=outcome, path=path, seconds=time.perf_counter() - started)

    def kept(self, inputs: tuple[Any, ...], conditions: Conditions = NO_CONDITIONS) -> CachedResponse | None:
        """The answer this process keeps for a request it has seen, if fresh: a hit without I/O.

        ``inputs`` is the tuple an adapter builds for :attr:`Incoming.inputs`.
        Adapters try this before :meth:`decide`, which would find the same
        answer at a higher cost. URLs with a learned ``Vary``, and answers
        that are stale or due for a refresh, go through :meth:`decide`.
        """
        local = self._local
        if not local:
            return None
        key = self._keys.get(inputs)
        if key is None:
            return None
        found = local.get(key)
        if not isinstance(found, CachedResponse):
            return None
        now = time.time()
        look = freshness.look(found, now, self.settings.early_refresh, self.random.random)
        if not look.serve:
            return None
        # A stale copy (or one due for a refresh) is served from memory only within a second of the last look
        # at the backend (see _refresh_asked): its refresh may have landed, and only the backend knows.
        if (look.refresh or look.stale) and not self._refreshing.get(key, 0.0) > now:
            return None
        return deliver(found, now, look, conditions, self.settings.cache_status)

    def _refresh_asked(self, key: str, now: float) -> bool:
        """Whether this process looked at ``key``'s stale answer in the backend (and asked a refresh) a moment ago.

        If not, it notes that it does now. A stale answer is served by every
        request until its refresh lands: only the first of them in each second
        reads it from the backend again and tries to queue a refresh (the
        pending marker decides, across processes, whether one is queued); the
        others are served from this process's memory.
        """
        if self._refreshing.get(key, 0.0) > now:
            return True
        if len(self._refreshing) >= 10_000:
            self._refreshing = {k: until for k, until in self._refreshing.items() if until > now}
            if len(self._refreshing) >= 10_000:
                self._refreshing.clear()
        self._refreshing[key] = now + 1.0
        return False

    def decide_sync(self, incoming: Incoming) -> CachedResponse | None:
        """Run :meth:`decide` with blocking backend calls; hold a client that prefers to wait (Prefer: wait)."""
        response = self.run_sync(self.decide(incoming))
        seconds = hold_for(self.settings, incoming.wait, incoming.key, response)
        if not seconds:
            return response
        deadline = time.monotonic() + seconds
        while True:
            answer_key = self.response_key(incoming.key)
            ready = functools.partial(self._changed_sync, answer_key, incoming.seen)
            woken = self.waiters.wait(answer_key, max(0.0, deadline - time.monotonic()), ready)
            if woken:  # what changed is in the backend, not in this process's memory
                incoming.remembered = False
                response = self.run_sync(self.decide(incoming))
            if not (woken and holds_on(self.settings, response, deadline)):
                return held(self.settings, incoming.wait, response)

    async def decide_async(
        self, incoming: Incoming, call: Callable[[Operation], Awaitable[Any]]
    ) -> CachedResponse | None:
        """Run :meth:`decide`, awaiting each backend operation through ``call``; a waiting client costs no thread."""
        response = await self.run_async(self.decide(incoming), call)
        seconds = hold_for(self.settings, incoming.wait, incoming.key, response)
        if not seconds:
            return response
        deadline = time.monotonic() + seconds
        while True:
            answer_key = self.response_key(incoming.key)
            ready = functools.partial(self._changed_async, answer_key, incoming.seen, call)
            woken = await self.waiters.await_(answer_key, max(0.0, deadline - time.monotonic()), ready)
            if woken:  # what changed is in the backend, not in this process's memory
                incoming.remembered = False
                response = await self.run_async(self.decide(incoming), call)
            if not (woken and holds_on(self.settings, response, deadline)):
                return held(self.settings, incoming.wait, response)

    def _changed_sync(self, answer_key: str, seen: tuple[Any, ...] | None) -> bool:
        return self.run_sync(self._changed(answer_key, seen))

    async def _changed_async(
        self, answer_key: str, seen: tuple[Any, ...] | None, call: Callable[[Operation], Awaitable[Any]]
    ) -> bool:
        return await self.run_async(self._changed(answer_key, seen), call)

    def _changed(self, answer_key: str, seen: tuple[Any, ...] | None) -> Generator[Operation, Any, bool]:
        """Whether the key a request waits on holds something else than what its decision found there."""
        data = yield ("get", answer_key)
        if data is None:
            return seen is not None
        try:
            return version(decode_stored(data)) != seen
        except CorruptRecord:
            return True

    @property
    def waiters(self) -> Waiters:
        """The requests of this process waiting for answers (created on first use)."""
        waiters = self._waiters
        if waiters is None:
            with self._backend_lock:
                waiters = self._waiters
                if waiters is None:
                    limit = self.settings.max_waiters
                    waiters = self._waiters = Waiters(
                        lambda: self.cache,
                        self.default_waiters if limit is None else limit,
                        self.settings.max_waiters_per_key,
                    )
        return waiters

    def run_sync(self, steps: Generator[Operation, Any, T]) -> T:
        """Drive a generator of backend operations (:meth:`decide`, a monitor) with blocking calls."""
        try:
            operation = next(steps)
            while True:
                try:
                    result = self._call(operation)
                except (BackendUnavailable, QueueFull) as error:
                    operation = steps.throw(error)
                else:
                    operation = steps.send(result)
        except StopIteration as done:
            value: T = done.value
            return value

    async def run_async(self, steps: Generator[Operation, Any, T], call: Callable[[Operation], Awaitable[Any]]) -> T:
        """Drive a generator of backend operations, awaiting each through ``call``."""
        try:
            operation = next(steps)
            while True:
                try:
                    result = await call(operation)
                except (BackendUnavailable, QueueFull) as error:
                    operation = steps.throw(error)
                else:
                    operation = steps.send(result)
        except StopIteration as done:
            value: T = done.value
            return value

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

    def expire(
        self,
        path: str | None = None,
        params: Any = None,
        *,
        tag: str | None = None,
        soft: bool = False,
        refresh: bool = False,
    ) -> int:
        """Drop cached answers for ``path`` (``*`` matches anything), optionally only with ``params``, or by ``tag``.

        ``params`` is a mapping or pairs; an answer matches when its query
        holds every given name=value exactly. With ``soft``, answers are
        marked stale instead of dropped: they are served (within ``stale``)
        while one refresh per key runs. With ``refresh``, that refresh is
        queued at once for each answer whose request holds no credential
        (re-render on purge). Returns how many answers were touched.
        A job running meanwhile does not store an answer computed before the
        expiry: its answer is dropped (or marked stale) on arrival.
        """
        rule = ExpiryRule(path, normalize_params(params), tag, soft)
        found: list[bytes] = []

        def restamp(data: bytes) -> bytes | None:
            with contextlib.suppress(CorruptRecord):
                answer = CachedResponse.decode(data)
                if answer.request:
                    found.append(answer.request)
            return freshness.mark_stale(data) if soft else None

        count = self.cache.expire(rule, restamp if (soft or refresh) else None)
        if refresh:
            for payload in found:
                self.enqueue(payload)
        return count

    def enqueue(self, payload: bytes) -> bool:
        """Queue a job for a stored request now, unless one is queued or running for its key; True if queued."""
        request = dataclasses.replace(StoredRequest.decode(payload), enqueued=time.time())
        marker = PendingMarker("queued", time.time()).encode()
        pending = self._pending_prefix + request.key
        if not self.cache.add(pending, marker, self._claim_window):
            return False
        try:
            self.queue.push(request.key, request.encode(), self.settings.max_queued)
        except (QueueFull, BackendUnavailable):
            self.cache.delete(pending)
            raise
        with contextlib.suppress(BackendUnavailable):
            self.cache.touch(pending, self.settings.pending_ttl)
        return True
