"""What the memcached cache keeps beside the values: the names and formats of its own items.

Three kinds of items, each only ever replaced with ``gets``/``cas`` (or
created with ``add``), so concurrent writers on any number of machines never
lose each other's updates. Each starts with a magic line, and anything else
found under its name (garbage, another client's item) reads as empty, to be
written afresh:

``offload-index:<namespace>:<n>``
    One of the namespace's ``index_buckets`` index entries: zlib-compressed
    JSON mapping each answer's key to its listing, ``[path, query, expiry
    (Unix seconds), failed (0 or 1), tag, ...]``: only what ``expire()`` and
    ``stats()`` read.
``offload-expiries:<namespace>``
    The expiry log: the last epoch, the log's base epoch and the entries of
    the last hour (see :mod:`offload.backends.expiry_log`), zlib-compressed
    JSON. Epoch and entry are one item, written in one ``cas``: a counter
    beside a log would be two items that memcached may evict apart.
``offload-namespaces``
    The namespaces that ever created an index entry or logged an expiry.

Sizing: memcached refuses items over 1 MiB (``-I``), so an index entry holds
at most :data:`ITEM_LIMIT` bytes. A listing of a short path and query takes
about 50 bytes compressed (the key's digest is most of it), plus its tags; an
index entry thus holds about 20,000 listings, and a namespace about
``index_buckets`` x 20,000 live answers (5 million at the default 256). An
index entry that would outgrow that makes ``set`` fail with
:class:`~offload.errors.BackendUnavailable` (the worker backs off, then stores
a failure): raise ``index_buckets`` well before, the more so for long queries
or many tags. The expiry log drops its oldest entries when it would outgrow
the limit (a finishing job then treats them as expired: see the log's gaps).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from offload.backends.base import IndexEntry
from offload.errors import BackendUnavailable

log = logging.getLogger("offload.memcached")

INDEX_MAGIC = b"offload-index/2\n"
LOG_MAGIC = b"offload-expiries/1\n"
LIST_MAGIC = b"offload-namespaces/1\n"

#: The largest item offload writes, below memcached's default 1 MiB item size with room for its overhead.
ITEM_LIMIT = 1000 * 1000

#: What an index item may inflate to: far above ITEM_LIMIT at any ratio zlib reaches on listings.
_MAX_INFLATED = 64 * 1024 * 1024

#: The item listing the namespaces.
NAMESPACES_KEY = "offload-namespaces"

#: One listing: the answer's index entry and its expiry (Unix seconds).
Listing = tuple[IndexEntry, int]


def index_key(namespace: str, number: int) -> str:
    """The name of index entry ``number`` of ``namespace``."""
    return f"offload-index:{namespace}:{number}"


def log_key(namespace: str) -> str:
    """The name of ``namespace``'s expiry log."""
    return f"offload-expiries:{namespace}"


class BytesSerde:
    """The pymemcache serde of offload's own clients: bytes stored with flags 0, and only those read back.

    An item stored with other flags (pickled, text or a number written by
    another client) reads as absent, never as a value.
    """

    def serialize(self, key: Any, value: Any) -> tuple[Any, int]:
        return value, 0

    def deserialize(self, key: Any, value: bytes, flags: int) -> bytes | None:
        return value if flags == 0 else None


def _inflate(name: str, raw: Any, magic: bytes) -> Any:
    """The JSON an item holds, or None when there is no such item; raises ValueError for anything else."""
    if raw is None:
        return None
    if not isinstance(raw, bytes) or not raw.startswith(magic):
        raise ValueError("no header")
    inflate = zlib.decompressobj()
    try:
        body = inflate.decompress(raw[len(magic) :], _MAX_INFLATED)
    except zlib.error as error:
        raise ValueError(str(error)) from None
    if inflate.unconsumed_tail or not inflate.eof:
        raise ValueError("truncated or oversized")
    return json.loads(body)


def _deflate(magic: bytes, data: Any) -> bytes:
    return magic + zlib.compress(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(), 9)


def decode_bucket(name: str, raw: Any) -> dict[str, Listing]:
    """The listings of an index entry; a damaged or foreign one is empty (and written afresh)."""
    try:
        loaded = _inflate(name, raw, INDEX_MAGIC)
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ValueError("not an object")
        listings: dict[str, Listing] = {}
        for key, item in loaded.items():
            path, query, expires, failed, *tags = item
            if not (isinstance(path, str) and isinstance(query, str) and isinstance(expires, int)):
                raise ValueError("bad listing")
            if not all(isinstance(tag, str) for tag in tags):
                raise ValueError("bad tag")
            listings[key] = (IndexEntry(path, query, bool(failed), tuple(tags)), expires)
        return listings
    except (ValueError, TypeError) as error:
        log.warning("memcached index entry %s is not in offload's format (%s): starting it afresh", name, error)
        return {}


def encode_bucket(name: str, listings: dict[str, Listing]) -> bytes:
    """An index entry's item; refuses one memcached would not store."""
    data = _deflate(
        INDEX_MAGIC,
        {
            key: [entry.path, entry.query, expires, int(entry.failed), *entry.tags]
            for key, (entry, expires) in listings.items()
        },
    )
    if len(data) > ITEM_LIMIT:
        raise BackendUnavailable(
            f"memcached index entry {name} outgrew memcached's item size: raise index_buckets in the URL"
        )
    return data


def decode_log(name: str, raw: Any) -> tuple[int, int, list[str]]:
    """The last epoch, the base epoch and the entries of an expiry log; (0, 0, []) for none or a damaged one."""
    try:
        loaded = _inflate(name, raw, LOG_MAGIC)
        if loaded is None:
            return 0, 0, []
        current, base, entries = loaded["n"], loaded["base"], loaded["log"]
        if not (isinstance(current, int) and isinstance(base, int) and isinstance(entries, list)):
            raise ValueError("bad log")
        return current, base, [entry for entry in entries if isinstance(entry, str)]
    except (ValueError, TypeError, KeyError) as error:
        log.warning("memcached expiry log %s is not in offload's format (%s): starting it afresh", name, error)
        return 0, 0, []


def encode_log(current: int, base: int, entries: Sequence[str]) -> bytes:
    """An expiry log's item; the oldest entries go while it would outgrow :data:`ITEM_LIMIT`."""
    kept = list(entries)
    while True:
        data = _deflate(LOG_MAGIC, {"n": current, "base": base, "log": kept})
        if len(data) <= ITEM_LIMIT or not kept:
            return data
        kept = kept[len(kept) // 10 + 1 :]


def decode_list(raw: Any) -> list[str]:
    """The namespaces listed; none for a damaged or foreign item."""
    try:
        loaded = _inflate(NAMESPACES_KEY, raw, LIST_MAGIC)
    except ValueError:
        return []
    return [name for name in loaded if isinstance(name, str)] if isinstance(loaded, list) else []


def encode_list(namespaces: Sequence[str]) -> bytes:
    return _deflate(LIST_MAGIC, sorted(set(namespaces)))
