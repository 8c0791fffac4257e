"""Answers kept inside the web process, so that a hit costs a dictionary lookup.

An answer is kept only while it is fresh in the backend too (until its own
expiry, at most ``local_ttl`` seconds) and only while the backend's
*generation* is unchanged: every :meth:`~offload.backends.Cache.expire`
anywhere bumps it, so an expired answer stops being served by every process.
Backends that cannot read their generation without a network round trip
return None, and then nothing is kept here.

The tier is bounded in bytes, not in entries: it holds at most ``budget``
bytes of bodies and headers, and an answer larger than ``max_answer`` is never
kept (it is read from the backend each time, which for a large body costs
little next to sending it). Answers meant for one client are never kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from offload.records import CachedResponse, VaryRecord

#: Bytes counted for an entry besides its body and headers: the dict slot, the tuple, the key.
ENTRY_OVERHEAD = 256


def size_of(record: CachedResponse | VaryRecord) -> int:
    """The bytes an entry holds, roughly: body, headers and a fixed overhead."""
    if isinstance(record, VaryRecord):
        return ENTRY_OVERHEAD + sum(len(name) for name in record.headers)
    return ENTRY_OVERHEAD + len(record.body) + sum(len(n) + len(v) for n, v in record.headers)


class LocalTier:
    """A byte-bounded dict of decoded answers (and learned ``Vary`` lists), checked against the backend's generation."""

    def __init__(self, budget: int, max_answer: int, max_age: float, generation: Callable[[], int | None]) -> None:
        self.budget = budget
        self.max_answer = max_answer
        self.max_age = max_age
        self.generation = generation
        self.used = 0
        self._entries: dict[str, tuple[CachedResponse | VaryRecord, float, int, int]] = {}

    def get(self, key: str) -> CachedResponse | VaryRecord | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        record, until, generation, _ = entry
        if until > time.time() and generation == self.generation():
            return record
        self._drop(key)
        return None

    def put(self, key: str, record: CachedResponse | VaryRecord, generation: int | None = None) -> None:
        """Keep ``record``; ``generation`` is the one read before it was fetched, so a concurrent expiry wins."""
        if generation is None:
            generation = self.generation()
        if generation is None:
            return
        now = time.time()
        if isinstance(record, CachedResponse):
            if not record.expires or record.private:
                return
            # Kept while it may still be served (stale windows included): whether it is, is freshness's call.
            servable = record.expires + (0.0 if record.failed else max(record.stale, record.stale_if_error))
            until = min(servable, now + self.max_age)
        else:
            until = now + self.max_age
        size = size_of(record)
        if size > self.max_answer or size > self.budget:
            return
        self._drop(key)
        while self.used + size > self.budget and self._entries:
            self._drop(next(iter(self._entries)))  # the oldest first: dicts keep insertion order
        self._entries[key] = (record, until, generation, size)
        self.used += size

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.used -= entry[3]

    def clear(self) -> None:
        self._entries.clear()
        self.used = 0


class KeyMemo:
    """Request inputs already hashed in this process, so a hit skips SHA-256; bounded in bytes.

    Inputs larger than ``max_entry`` (a long cookie, a long query) are not
    remembered, and the memo starts afresh when it would pass ``budget``.
    """

    def __init__(self, budget: int, max_entry: int = 4096) -> None:
        self.budget = budget
        self.max_entry = max_entry
        self.used = 0
        self._keys: dict[tuple[object, ...], str] = {}

    def get(self, inputs: tuple[object, ...]) -> str | None:
        return self._keys.get(inputs)

    def put(self, inputs: tuple[object, ...], key: str, size: int) -> None:
        size += ENTRY_OVERHEAD
        if size > self.max_entry or not self.budget:
            return
        if self.used + size > self.budget:
            self._keys.clear()
            self.used = 0
        self._keys[inputs] = key
        self.used += size

    def values(self) -> list[str]:
        return list(self._keys.values())
