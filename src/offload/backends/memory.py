"""In-process backend (``memory://``): for tests and single-process dev servers.

Nothing leaves the process: workers must be threads of the same process (the
middleware starts one by itself for ``memory://`` URLs). Every URL names one
store per process, so ``memory://`` opened twice is the same store, and
``memory://other`` a separate one. Within a store, each namespace has its own
index, expiry log and queue; values share one dict, since their keys start
with the namespace.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from offload.backends.base import Cache, Claim, DeadJob, ExpiryRule, IndexEntry, Queue, QueuedJob, Restamp
from offload.errors import QueueFull

if TYPE_CHECKING:
    from offload.backends import Backend

#: How long an expiry stays in the log that finishing jobs consult.
EXPIRY_LOG_SECONDS = 3600.0


@dataclass
class _Store:
    """Everything one ``memory://`` URL holds."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[str, tuple[bytes, float, IndexEntry | None, str]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)  # namespace -> last expiry epoch
    expiries: dict[str, list[tuple[int, float, ExpiryRule]]] = field(default_factory=dict)
    generation: int = 0
    queues: dict[str, MemoryQueue] = field(default_factory=dict)
    watchers: dict[str, list[Callable[[str], None]]] = field(default_factory=dict)


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def open_backend(url: str, namespace: str) -> Backend:
    from offload.backends import Backend

    with _STORES_LOCK:
        store = _STORES.setdefault(url, _Store())
        queue = store.queues.get(namespace)
        if queue is None:
            queue = store.queues[namespace] = MemoryQueue(store, namespace)
    return Backend(url, MemoryCache(store, namespace), queue)


class MemoryCache(Cache):
    """A dict with expiry times, guarded by the store's lock."""

    shared = False
    notifies = True

    def __init__(self, store: _Store | None = None, namespace: str = "offload") -> None:
        self._store = store if store is not None else _Store()
        self._lock = self._store.lock
        self._entries = self._store.entries
        self.namespace = namespace

    def _live(self, key: str, now: float) -> tuple[bytes, float, IndexEntry | None, str] | None:
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
            self._entries[key] = (value, now + ttl, None, self.namespace)
            return True

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        with self._lock:
            self._entries[key] = (value, time.monotonic() + ttl, index, self.namespace)

    def touch(self, key: str, ttl: float) -> bool:
        with self._lock:
            now = time.monotonic()
            entry = self._live(key, now)
            if entry is None:
                return False
            self._entries[key] = (entry[0], now + ttl, entry[2], entry[3])
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def take(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._live(key, time.monotonic())
            if entry is None:
                return None
            del self._entries[key]
            return entry[0]

    def expire(self, rule: ExpiryRule, restamp: Restamp | None = None) -> int:
        with self._lock:
            now = time.monotonic()
            self._log(rule)
            touched = 0
            for key, (value, expires, index, namespace) in list(self._entries.items()):
                if index is None or namespace != self.namespace or not rule.matches(index):
                    continue
                live = expires > now
                rewritten = restamp(value) if (restamp is not None and live) else None
                if rewritten is None:
                    del self._entries[key]
                else:
                    self._entries[key] = (rewritten, expires, index, namespace)
                touched += live
            self._store.generation += 1
        return touched

    def _log(self, rule: ExpiryRule) -> None:
        epoch = self._store.epochs.get(self.namespace, 0) + 1
        self._store.epochs[self.namespace] = epoch
        log = self._store.expiries.setdefault(self.namespace, [])
        horizon = time.time() - EXPIRY_LOG_SECONDS
        log[:] = [item for item in log if item[1] > horizon]
        log.append((epoch, time.time(), rule))

    def epoch(self) -> int:
        return self._store.epochs.get(self.namespace, 0)

    def expired_since(self, epoch: int, entry: IndexEntry) -> ExpiryRule | None:
        with self._lock:
            for number, _, rule in self._store.expiries.get(self.namespace, ()):
                if number > epoch and rule.matches(entry):
                    return rule
        return None

    def incr(self, key: str, ttl: float) -> int:
        with self._lock:
            now = time.monotonic()
            entry = self._live(key, now)
            count = 1
            if entry is not None:
                try:
                    count = int(entry[0]) + 1
                except ValueError:
                    entry = None  # not a counter: start again
            expires = entry[1] if entry is not None else now + ttl
            self._entries[key] = (str(count).encode(), expires, None, self.namespace)
            return count

    def finish_job(
        self,
        answer: str,
        value: bytes | None,
        ttl: float,
        index: IndexEntry | None,
        done: Sequence[str],
        since: int,
        restamp: Restamp | None = None,
    ) -> bool:
        survived = super().finish_job(answer, value, ttl, index, done, since, restamp)
        if value is not None:
            for watcher in list(self._store.watchers.get(self.namespace, ())):
                watcher(answer)
        return survived

    def watch(self, on_stored: Callable[[str], None]) -> Callable[[], None] | None:
        watchers = self._store.watchers.setdefault(self.namespace, [])
        watchers.append(on_stored)

        def stop() -> None:
            if on_stored in watchers:
                watchers.remove(on_stored)

        return stop

    def generation(self) -> int | None:
        return self._store.generation

    def stats(self) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            live = [
                index
                for _, expires, index, namespace in self._entries.values()
                if index is not None and expires > now and namespace == self.namespace
            ]
        failed = sum(1 for index in live if index.failed)
        return {"cached": len(live) - failed, "failed": failed}

    def namespaces(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            found = {ns for _, expires, index, ns in self._entries.values() if index is not None and expires > now}
            found.update(self._store.epochs)
        return sorted(found)


@dataclass
class _Job:
    job_id: str
    key: str
    payload: bytes
    available: float = 0.0  # monotonic time from which it may be claimed


class MemoryQueue(Queue):
    """A deque of waiting jobs plus a table of leased ones; a condition wakes waiting workers."""

    shared = False

    def __init__(self, store: _Store | None = None, namespace: str = "offload") -> None:
        self._store = store if store is not None else _Store()
        self.namespace = namespace
        self._ready = threading.Condition()
        self._waiting: deque[_Job] = deque()
        self._leased: dict[str, tuple[Claim, float]] = {}
        self._dead: dict[str, DeadJob] = {}
        self._counter = 0

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        with self._ready:
            self._requeue_expired(time.monotonic())
            if limit is not None and len(self._waiting) >= limit:
                raise QueueFull()
            self._append(key, payload)

    def _append(self, key: str, payload: bytes, available: float = 0.0) -> None:
        self._counter += 1
        self._waiting.append(_Job(str(self._counter), key, payload, available))
        self._ready.notify()

    def claim(self, lease: float, wait: float) -> Claim | None:
        deadline = time.monotonic() + wait
        with self._ready:
            while True:
                now = time.monotonic()
                self._requeue_expired(now)
                job = next((job for job in self._waiting if job.available <= now), None)
                if job is not None:
                    self._waiting.remove(job)
                    claim = Claim(job.job_id, job.key, job.payload)
                    self._leased[claim.job_id] = (claim, now + lease)
                    return claim
                remaining = deadline - now
                if remaining <= 0:
                    return None
                wakes = [until for _, until in self._leased.values()]
                wakes += [job.available for job in self._waiting]
                next_change = min(wakes, default=now + remaining)
                self._ready.wait(max(0.001, min(remaining, next_change - now)))

    def _requeue_expired(self, now: float) -> None:
        for job_id, (claim, until) in list(self._leased.items()):
            if until <= now:
                del self._leased[job_id]
                self._waiting.appendleft(_Job(claim.job_id, claim.key, claim.payload))

    def _owned(self, claim: Claim) -> bool:
        held = self._leased.get(claim.job_id)
        return held is not None and held[0].token == claim.token

    def extend(self, claim: Claim, lease: float) -> bool:
        with self._ready:
            if not self._owned(claim):
                return False
            self._leased[claim.job_id] = (claim, time.monotonic() + lease)
            return True

    def ack(self, claim: Claim) -> None:
        with self._ready:
            if self._owned(claim):
                del self._leased[claim.job_id]

    def release(self, claim: Claim, delay: float = 0.0) -> None:
        with self._ready:
            if self._owned(claim):
                del self._leased[claim.job_id]
                self._append(claim.key, claim.payload, time.monotonic() + delay)

    def bury(self, claim: Claim, error: str) -> None:
        with self._ready:
            if self._owned(claim):
                del self._leased[claim.job_id]
                self._dead[claim.job_id] = DeadJob(claim.job_id, claim.key, claim.payload, error, time.time())

    def dead(self, limit: int = 100) -> list[DeadJob]:
        with self._ready:
            return sorted(self._dead.values(), key=lambda dead: (dead.buried, int(dead.job_id)), reverse=True)[:limit]

    def revive(self, job_id: str) -> bool:
        with self._ready:
            dead = self._dead.pop(job_id, None)
            if dead is None:
                return False
            self._append(dead.key, dead.payload)
            return True

    def stats(self) -> dict[str, int]:
        with self._ready:
            self._requeue_expired(time.monotonic())
            return {"queued": len(self._waiting), "running": len(self._leased), "dead": len(self._dead)}

    def waiting(self, limit: int = 100) -> list[QueuedJob]:
        with self._ready:
            self._requeue_expired(time.monotonic())
            return [QueuedJob(job.job_id, job.key, job.payload) for job in list(self._waiting)[:limit]]

    def running(self, limit: int = 100) -> list[QueuedJob]:
        with self._ready:
            now, wall = time.monotonic(), time.time()
            self._requeue_expired(now)
            leased = sorted(self._leased.values(), key=lambda held: held[1])[:limit]
            return [QueuedJob(claim.job_id, claim.key, claim.payload, wall + until - now) for claim, until in leased]

    def namespaces(self) -> list[str]:
        with _STORES_LOCK:
            queues = list(self._store.queues.items())
        return sorted(name for name, queue in queues if queue._waiting or queue._leased or queue._dead)
