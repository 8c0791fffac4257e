"""The backend contract: one cache and one queue, as offload needs them.

A backend module provides a :class:`Cache`, a :class:`Queue`, or both, and
registers its URL scheme in :mod:`offload.backends`. The middleware, the
worker and the CLI speak only to these two classes, so a new engine slots in
without touching them. Values are opaque ``bytes`` produced by
:mod:`offload.records`; a backend never interprets them.

Every method may raise :class:`~offload.errors.BackendUnavailable` when the
engine cannot be reached; the callers answer 503 and try again on the next
request. The behaviour suite in ``tests/backends`` runs against every backend.

Async twins: a cache may also define coroutine methods ``aget``, ``aadd`` and
``adelete``, and a queue ``apush``, with the same arguments and contract as
``get``, ``add``, ``delete`` and ``push``. The ASGI middleware awaits them
when present; otherwise it runs the blocking method in a small, bounded thread
pool (:data:`offload.asgi.BACKEND_THREADS`), so the event loop never blocks.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What a cached answer is indexed by, so that ``expire()`` and ``status`` can find it."""

    path: str  # canonical, percent-encoded path (offload.keys.canonical_path)
    query: str  # canonical query string (offload.keys.canonical_query)
    failed: bool = False  # an error answer stored after the job failed


class Cache(ABC):
    """A key-value store with expiry and an atomic add-if-absent."""

    #: Whether entries survive this process and are seen by other processes.
    shared = True

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or None if absent or expired."""

    @abstractmethod
    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if ``key`` is absent or expired; return whether it was stored.

        This must be atomic across every process using the backend: of many
        concurrent calls for one key exactly one returns True. It is how
        offload enqueues exactly one job per key.
        """

    @abstractmethod
    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any value.

        With ``index``, the entry is a cached answer that :meth:`expire` and
        :meth:`stats` must be able to find by path and query.
        """

    @abstractmethod
    def touch(self, key: str, ttl: float) -> bool:
        """Give an existing entry a new expiry; return False if it is gone (a lost lease)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    @abstractmethod
    def expire(self, pattern: str, params: Sequence[tuple[str, str]] = ()) -> int:
        """Remove the indexed answers whose path matches ``pattern`` and whose query holds ``params``.

        ``pattern`` is decoded text where ``*`` matches anything; see
        :func:`offload.keys.path_matcher` and :func:`offload.keys.params_match`
        for the exact rules. Returns how many answers were removed.
        """

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counts of live indexed answers: ``{"cached": n, "failed": m}``."""

    def start_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float
    ) -> tuple[bool, bytes | None]:
        """Begin a job: take the lock ``running``; if taken, mark ``pending`` as running and read ``answer``.

        Returns whether the lock was taken (an atomic add, as :meth:`add`) and,
        if so, the value under ``answer``. The same as these three calls in turn;
        engines that can do it in one round trip override it.
        """
        if not self.add(running, marker, lease):
            return False, None
        self.set(pending, marker, lease)
        return True, self.get(answer)

    def finish_job(
        self, answer: str, value: bytes | None, ttl: float, index: IndexEntry | None, done: Sequence[str]
    ) -> None:
        """End a job: store ``value`` under ``answer`` (unless None), then delete each key of ``done``.

        The same as :meth:`set` then :meth:`delete` in turn, in that order (an
        answer must exist before its markers go); engines that can do it in one
        round trip override it.
        """
        if value is not None:
            self.set(answer, value, ttl, index)
        for key in done:
            self.delete(key)

    def generation(self) -> int | None:
        """A number that changes whenever :meth:`expire` removes answers, in any process.

        Web processes keep recent answers in memory only while this number is
        unchanged, so it must be cheap: no network round trip (read shared
        memory, or a value a background listener keeps current). Return None
        when the cache cannot tell cheaply; then nothing is kept in memory.
        """
        return None

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release connections; the cache may be used again afterwards."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A job taken from a queue by one worker, until its lease runs out."""

    job_id: str
    key: str
    payload: bytes
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


class Queue(ABC):
    """A reliable job queue: a claimed job is leased, and comes back if its lease runs out."""

    #: Whether a worker in another process can claim what this process pushes.
    shared = True

    @abstractmethod
    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        """Add a job for ``key`` carrying ``payload``.

        With ``limit``, refuse with :class:`~offload.errors.QueueFull` when
        that many jobs are already waiting; the check and the push are one step.
        """

    @abstractmethod
    def claim(self, lease: float, wait: float) -> Claim | None:
        """Take the oldest available job for ``lease`` seconds.

        Waits up to ``wait`` seconds for one (without busy polling where the
        engine can wake the worker) and returns None if none came. A job whose
        lease ran out without :meth:`ack` is available again.
        """

    @abstractmethod
    def extend(self, claim: Claim, lease: float) -> bool:
        """Renew a running job's lease; return False if it was lost to another worker."""

    @abstractmethod
    def ack(self, claim: Claim) -> None:
        """Remove a finished job for good."""

    @abstractmethod
    def release(self, claim: Claim) -> None:
        """Hand a job back at once, for another worker to claim."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counts of jobs: ``{"queued": n, "running": m}``."""

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release connections; the queue may be used again afterwards."""
