"""The in-memory backend of :mod:`offload.testing`: offload's ``memory://`` parts, keeping a record.

:class:`RecordingCache` notes every answer stored and every expiry;
:class:`TestQueue` notes every job queued, and hands jobs only to the
:class:`~offload.testing.Recorder` that runs them (eagerly, on push, or when a
test calls :meth:`~offload.testing.Recorder.run_jobs`), never to a worker
thread of the app's own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from offload.backends.base import Claim, ExpiryRule, IndexEntry, Restamp
from offload.backends.memory import MemoryCache, MemoryQueue

if TYPE_CHECKING:
    from offload.testing.recorder import Recorder


class RecordingCache(MemoryCache):
    """A ``memory://`` cache that tells its recorder of each answer stored and each expiry."""

    def __init__(self, recorder: Recorder, namespace: str) -> None:
        super().__init__(None, namespace)
        self.recorder = recorder
        self._answers = f"{namespace}:r:"

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        super().set(key, value, ttl, index)
        if key.startswith(self._answers):
            self.recorder.stored(key[len(self._answers) :], value, index)

    def expire(self, rule: ExpiryRule, restamp: Restamp | None = None) -> int:
        count = super().expire(rule, restamp)
        self.recorder.expired(rule, count)
        return count


class TestQueue(MemoryQueue):
    """A ``memory://`` queue whose jobs only its recorder claims; it runs them at once when eager."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, recorder: Recorder, namespace: str) -> None:
        super().__init__(None, namespace)
        self.recorder = recorder
        self.on_push: Callable[[], None] | None = None
        self._claimer = threading.local()
        self._idle = threading.Event()  # never set: other claimers wait on it, as on an empty queue

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        super().push(key, payload, limit)
        self.recorder.queued(payload)
        if self.on_push is not None:
            self.on_push()

    def claim(self, lease: float, wait: float) -> Claim | None:
        if not getattr(self._claimer, "allowed", False):
            self._idle.wait(wait)  # a worker thread of the app's own: the recorder runs the jobs
            return None
        return super().claim(lease, 0)

    def claiming(self) -> _Claiming:
        """A block in which this thread may claim jobs (the recorder's own)."""
        return _Claiming(self._claimer)


class _Claiming:
    def __init__(self, flag: threading.local) -> None:
        self.flag = flag
        self.before = False

    def __enter__(self) -> None:
        self.before = getattr(self.flag, "allowed", False)
        self.flag.allowed = True

    def __exit__(self, *exc: object) -> None:
        self.flag.allowed = self.before
