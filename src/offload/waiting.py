"""Requests that wait for their answer (``Prefer: wait=N``), woken when a worker stores it.

A client that sends ``Prefer: wait=10`` (RFC 7240) on a miss is held up to
``min(10, max_wait)`` seconds and gets the 200 in the same request, as soon as
the job's answer is stored, instead of a 202 and a poll. Waiting requests are
woken by the backend's own notification of stored answers
(:meth:`offload.backends.Cache.watch`: Redis pub/sub, PostgreSQL
``LISTEN/NOTIFY``, datagrams beside the SQLite file, an in-process call for
``memory://``), through one listener per process; a backend that cannot
notify (memcached, caches of your own) is looked at by one thread per process
every 100 ms for all the keys waited on, never by a loop per request.

What a waiting request costs: under ASGI, a future and a small entry in a
dict (no thread); under WSGI, the server's thread that runs the request,
which is why WSGI processes let far fewer requests wait (``max_waiters``).
Past the caps (per process, and per key) a request gets the usual 202 at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from offload.answers import waited
from offload.backends import Cache
from offload.records import CachedResponse
from offload.settings import Settings

log = logging.getLogger("offload")

#: How often a process looks for the answers waited on when its backend cannot notify.
POLL_INTERVAL = 0.1


def preferred_wait(prefer: str | None) -> float:
    """The seconds a ``Prefer`` header asks to wait (``wait=N``, RFC 7240), or 0.

    >>> preferred_wait("respond-async, wait=10"), preferred_wait("wait=abc"), preferred_wait(None)
    (10.0, 0.0, 0.0)
    """
    if not prefer:
        return 0.0
    for preference in prefer.split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return max(0.0, float(value.strip().strip('"')))
            except ValueError:
                return 0.0
    return 0.0


def prefers_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header holds ``respond-async``.

    >>> prefers_async("respond-async, wait=5"), prefers_async("wait=5")
    (True, False)
    """
    if not prefer:
        return False
    return any(part.split(";")[0].strip().lower() == "respond-async" for part in prefer.split(","))


def asks_no_cache(cache_control: str | None, pragma: str | None) -> bool:
    """Whether a request asks for a fresh answer (``Cache-Control: no-cache``, or ``Pragma: no-cache`` alone).

    >>> asks_no_cache("no-cache", None), asks_no_cache("nothing-to-see-here", "foo"), asks_no_cache(None, "no-cache")
    (True, False, True)
    """
    if cache_control is not None:
        return any(part.split("=")[0].strip().lower() == "no-cache" for part in cache_control.split(","))
    return pragma is not None and "no-cache" in pragma.lower()


def hold_for(settings: Settings, wait: float, key: str, response: CachedResponse | None) -> float:
    """How long to hold a request whose decision gave ``response``: what it prefers (``wait``, or ``miss_wait``).

    Within ``max_wait``; only a 202 of offload's own for a job under ``key`` is held.
    """
    wait = max(wait, settings.miss_wait)
    if not wait or not settings.max_wait or response is None or not key:
        return 0.0
    if response.status != 202 or response.from_app:
        return 0.0
    return min(wait, settings.max_wait)


def holds_on(settings: Settings, response: CachedResponse | None, deadline: float) -> bool:
    """Whether a request held by ``miss_wait`` waits on after its wait ended in another 202.

    That happens when the answer it waited for was another request's own,
    or when its key changed (the URL's ``Vary`` was learned): it waits for
    the job queued for it then, within the same deadline.
    """
    if not settings.miss_wait or response is None or response.status != 202 or response.from_app:
        return False
    return time.monotonic() < deadline


def held(settings: Settings, wait: float, response: CachedResponse | None) -> CachedResponse | None:
    """The answer to a request that was held: it says so when the client asked (``Prefer: wait``)."""
    if not wait:
        return response
    return waited(response, min(wait, settings.max_wait))


@dataclass(eq=False)
class _Waiter:
    """One waiting request: how to wake it, from any thread."""

    wake: Callable[[], None]


@dataclass
class Waiters:
    """The requests of one process waiting for answers, by the backend key their answer is stored under."""

    cache: Callable[[], Cache]
    max_waiters: int
    max_per_key: int
    _waiting: dict[str, set[_Waiter]] = field(default_factory=dict)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _watching: bool = False
    _poller: threading.Thread | None = None

    @property
    def count(self) -> int:
        """How many requests wait now."""
        return self._count

    def _register(self, answer_key: str, waiter: _Waiter) -> bool:
        with self._lock:
            waiting = self._waiting.setdefault(answer_key, set())
            if self._count >= self.max_waiters or len(waiting) >= self.max_per_key:
                if not waiting:
                    del self._waiting[answer_key]
                return False
            waiting.add(waiter)
            self._count += 1
        self._watch()
        return True

    def _unregister(self, answer_key: str, waiter: _Waiter) -> None:
        with self._lock:
            waiting = self._waiting.get(answer_key)
            if waiting is not None and waiter in waiting:
                waiting.discard(waiter)
                self._count -= 1
                if not waiting:
                    del self._waiting[answer_key]

    def stored(self, answer_key: str) -> None:
        """Wake every request waiting for ``answer_key`` (called by the backend's watch, from its thread)."""
        with self._lock:
            waiting = list(self._waiting.get(answer_key, ()))
        for waiter in waiting:
            waiter.wake()

    def _watch(self) -> None:
        """Follow the backend's notifications, or look for the answers from one thread, from the first wait on."""
        if self._watching:
            return
        with self._lock:
            if self._watching:
                return
            self._watching = True
        try:
            stop = self.cache().watch(self.stored)
        except Exception as error:  # the backend is down: look for the answers instead
            log.warning("cannot follow stored answers (%s): looking for them every %ss", error, POLL_INTERVAL)
            stop = None
        if stop is None:
            self._poller = threading.Thread(target=self._poll, name="offload-waiting", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while True:
            threading.Event().wait(POLL_INTERVAL)
            with self._lock:
                keys = list(self._waiting)
            for key in keys:
                try:
                    if self.cache().get(key) is not None:
                        self.stored(key)
                except Exception as error:  # an outage: the waiters time out and answer 202
                    log.debug("cannot look for %s (%s)", key, error)
                    break

    def wait(self, answer_key: str, seconds: float, ready: Callable[[], bool]) -> bool:
        """Block this thread until ``answer_key`` is stored, or ``seconds`` pass; False if it may not wait.

        ``ready`` is asked once the waiter is registered: an answer stored
        between the request's lookup and its registration is not missed.
        """
        woken = threading.Event()
        waiter = _Waiter(woken.set)
        if not self._register(answer_key, waiter):
            return False
        try:
            if ready():
                return True
            return woken.wait(seconds)
        finally:
            self._unregister(answer_key, waiter)

    async def await_(self, answer_key: str, seconds: float, ready: Callable[[], object]) -> bool:
        """:meth:`wait` for an event loop: a future instead of a thread; ``ready`` may be a coroutine function."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, woken)

        waiter = _Waiter(wake)
        if not self._register(answer_key, waiter):
            return False
        try:
            checked = ready()
            if asyncio.iscoroutine(checked):
                checked = await checked
            if checked:
                return True
            try:
                await asyncio.wait_for(woken, seconds)
            except asyncio.TimeoutError:
                return False
            return True
        finally:
            self._unregister(answer_key, waiter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
