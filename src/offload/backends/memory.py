"""In-process backend (``memory://``): for tests and single-process dev servers.

Nothing leaves the process: workers must be threads of the same process (the
middleware starts one by itself for ``memory://`` URLs). Every URL names one
store per process, so ``memory://`` opened twice is the same store, and
``memory://other`` a separate one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from offload.backends.base import Cache, Claim, IndexEntry, Queue
from offload.errors import QueueFull
from offload.keys import params_match, path_matcher

if TYPE_CHECKING:
    from offload.backends import Backend

_STORES: dict[str, tuple[MemoryCache, MemoryQueue]] = {}
_STORES_LOCK = threading.Lock()


def open_backend(url: str) -> Backend:
    from offload.backends import Backend

    with _STORES_LOCK:
        if url not in _STORES:
            _STORES[url] = (MemoryCache(), MemoryQueue())
        cache, queue = _STORES[url]
    return Backend(url, cache, queue)


class MemoryCache(Cache):
    """A dict with expiry times, guarded by one lock."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[bytes, float, IndexEntry | None]] = {}
        self._generation = 0

    def _live(self, key: str, now: float) -> tuple[bytes, float, IndexEntry | None] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= now:
            del self._entries[key]
            return None
        return entry

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._live(key, now) is not None:
                return False
            self._entries[key] = (value, now + ttl, None)
            return True

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        with self._lock:
            self._entries[key] = (value, time.monotonic() + ttl, index)

    def touch(self, key: str, ttl: float) -> bool:
        with self._lock:
            now = time.monotonic()
            entry = self._live(key, now)
            if entry is None:
                return False
            self._entries[key] = (entry[0], now + ttl, entry[2])
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def expire(self, pattern: str, params: Sequence[tuple[str, str]] = ()) -> int:
        matches = path_matcher(pattern)
        with self._lock:
            now = time.monotonic()
            doomed = [
                (key, expires > now)
                for key, (_, expires, index) in self._entries.items()
                if index is not None and matches(index.path) and params_match(index.query, params)
            ]
            for key, _ in doomed:
                del self._entries[key]
            self._generation += 1
        return sum(live for _, live in doomed)  # an expired answer was gone already

    def generation(self) -> int | None:
        return self._generation

    def stats(self) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            live = [index for _, expires, index in self._entries.values() if index is not None and expires > now]
        failed = sum(1 for index in live if index.failed)
        return {"cached": len(live) - failed, "failed": failed}


class MemoryQueue(Queue):
    """A deque of waiting jobs plus a table of leased ones; a condition wakes waiting workers."""

    shared = False

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._waiting: deque[Claim] = deque()
        self._leased: dict[str, tuple[Claim, float]] = {}
        self._counter = 0

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        with self._ready:
            self._requeue_expired(time.monotonic())
            if limit is not None and len(self._waiting) >= limit:
                raise QueueFull()
            self._counter += 1
            self._waiting.append(Claim(str(self._counter), key, payload, token=""))
            self._ready.notify()

    def claim(self, lease: float, wait: float) -> Claim | None:
        deadline = time.monotonic() + wait
        with self._ready:
            while True:
                now = time.monotonic()
                self._requeue_expired(now)
                if self._waiting:
                    job = self._waiting.popleft()
                    claim = Claim(job.job_id, job.key, job.payload)
                    self._leased[claim.job_id] = (claim, now + lease)
                    return claim
                remaining = deadline - now
                if remaining <= 0:
                    return None
                next_expiry = min((until for _, until in self._leased.values()), default=now + remaining)
                self._ready.wait(max(0.001, min(remaining, next_expiry - now)))

    def _requeue_expired(self, now: float) -> None:
        for job_id, (claim, until) in list(self._leased.items()):
            if until <= now:
                del self._leased[job_id]
                self._waiting.appendleft(claim)

    def extend(self, claim: Claim, lease: float) -> bool:
        with self._ready:
            held = self._leased.get(claim.job_id)
            if held is None or held[0].token != claim.token:
                return False
            self._leased[claim.job_id] = (claim, time.monotonic() + lease)
            return True

    def ack(self, claim: Claim) -> None:
        with self._ready:
            held = self._leased.get(claim.job_id)
            if held is not None and held[0].token == claim.token:
                del self._leased[claim.job_id]

    def release(self, claim: Claim) -> None:
        with self._ready:
            held = self._leased.pop(claim.job_id, None)
            if held is not None:
                self._waiting.appendleft(claim)
                self._ready.notify()

    def stats(self) -> dict[str, int]:
        with self._ready:
            self._requeue_expired(time.monotonic())
            return {"queued": len(self._waiting), "running": len(self._leased)}
