"""Answers kept inside the web process, so that a hit costs a dictionary lookup.

An answer is kept only while it is fresh in the backend too (until its own
expiry, at most ``local_ttl`` seconds) and only while the backend's
*generation* is unchanged: every :meth:`~offload.backends.Cache.expire`
anywhere bumps it, so an expired answer stops being served by every process.
Backends that cannot read their generation without a network round trip
return None, and then nothing is kept here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from offload.records import CachedResponse


class LocalTier:
    """A bounded dict of decoded answers, checked against the backend's generation."""

    def __init__(self, size: int, max_age: float, generation: Callable[[], int | None]) -> None:
        self.size = size
        self.max_age = max_age
        self.generation = generation
        self._entries: dict[str, tuple[CachedResponse, float, int]] = {}

    def get(self, key: str) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        response, until, generation = entry
        if until > time.time() and generation == self.generation():
            return response
        self._entries.pop(key, None)
        return None

    def put(self, key: str, response: CachedResponse, generation: int | None = None) -> None:
        """Keep ``response``; ``generation`` is the one read before it was fetched, so a concurrent expiry wins."""
        if generation is None:
            generation = self.generation()
        if generation is None or not response.expires:
            return
        if len(self._entries) >= self.size:
            # Drop the oldest tenth: cheap, and keeps the dict bounded.
            for old in list(self._entries)[: max(1, self.size // 10)]:
                self._entries.pop(old, None)
        until = min(response.expires, time.time() + self.max_age)
        self._entries[key] = (response, until, generation)

    def clear(self) -> None:
        self._entries.clear()
