"""Memcached as offload's cache (``memcached://host:port``); the queue comes from another URL.

Memcached has no queue, so it is combined with one::

    WSGIMiddleware(app, cache="memcached://127.0.0.1:11211", queue="redis://127.0.0.1:6379/0")

The pending marker is memcached's ``add``, atomic on the server, so of many
concurrent misses exactly one enqueues. Several servers are written
``memcached://a:11211,b:11211`` (keys are spread by rendezvous hashing). URL
options: ``timeout`` (seconds, default 2), ``index_buckets`` (default 256),
``chunk_size`` (bytes, default 512 KiB).

Memcached cannot list its keys, so ``expire()`` and ``stats()`` use an index
kept in memcached itself: every cached answer is listed (key, path, query,
failed, expiry) in one of ``index_buckets`` index entries, chosen by a hash of
the answer's key. An index entry is only ever replaced with ``gets``/``cas``
(or created with ``add``), so concurrent writers on any number of machines
never lose each other's updates: a writer that lost the race reads again and
retries. The order of writes keeps the index complete:

* ``set`` lists the answer first, then stores it, then checks the listing is
  still there: an ``expire()`` that ran in between removed the listing of a
  value it could not yet delete, so the listing is restored if the value exists.
* ``expire()`` deletes the answers first, then their listings, so a crash in
  between leaves listings of deleted answers (harmless), never answers no
  listing points to.
* ``delete`` removes the value, then its listing.

Listings past their expiry (plus a minute for clock skew between machines)
are dropped whenever their index entry is written. Limits, by design: an index
entry evicted by memcached under memory pressure takes its listings with it
(those answers then live until their ttl; size memcached so that its
``evictions`` counter stays at zero), and ``stats()`` counts listings, so an
answer evicted early is counted until its listed expiry.

Keys memcached would refuse (spaces, control characters, over 200 bytes) are
stored under a SHA-256 digest of the key; offload's own keys are short hex
digests and stay readable. Values larger than ``chunk_size`` (memcached refuses items over 1 MiB by
default) are stored in chunks under fresh keys, with a small header under the
key itself that is written last; a missing or short chunk reads as a miss.
Nothing read back is unpickled: values are bytes, index entries zlib-compressed
JSON, both checked before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from offload.backends.base import Cache, IndexEntry
from offload.errors import BackendUnavailable, ConfigurationError, MissingDependency
from offload.keys import params_match, path_matcher

if TYPE_CHECKING:
    from offload.backends import Backend

log = logging.getLogger("offload.memcached")

INDEX_MAGIC = b"offload-index/1\n"
CHUNKS_MAGIC = b"offload-chunks/1\n"
#: Listings are pruned this long after their expiry, so a machine whose clock
#: runs ahead does not drop another machine's live listings.
PRUNE_GRACE = 60.0
#: memcached reads expiry times above 30 days as Unix timestamps.
_RELATIVE_LIMIT = 30 * 24 * 3600
_MAX_INDEX_BYTES = 64 * 1024 * 1024
_CAS_ATTEMPTS = 200

#: One listing: path, query, failed, expiry as a Unix time.
Listing = tuple[str, str, bool, float]


def open_backend(url: str) -> Backend:
    from offload.backends import Backend

    return Backend(url, MemcachedCache.from_url(url), None)


def _import_pymemcache() -> Any:
    try:
        import pymemcache  # type: ignore[import-untyped]
        import pymemcache.client.base  # type: ignore[import-untyped]
        import pymemcache.client.hash  # type: ignore[import-untyped]
    except ImportError as error:
        raise MissingDependency('memcached:// needs pymemcache: pip install "offload[memcached]"') from error
    return pymemcache


def _servers(url: str) -> list[tuple[str, int]]:
    parts = urlsplit(url)
    servers = []
    for item in parts.netloc.split(","):
        host, port = item, 11211
        if item.startswith("["):  # [::1]:11211
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 11211
        elif item.count(":") == 1:
            host, _, text = item.partition(":")
            if not text.isdigit():
                raise ConfigurationError(f"{url!r}: the port {text!r} is not a number")
            port = int(text)
        if not host:
            raise ConfigurationError(f"{url!r} names no server: write memcached://host:11211")
        servers.append((host, port))
    return servers


def _option(options: dict[str, list[str]], name: str, default: float, url: str) -> float:
    values = options.get(name)
    if not values:
        return default
    try:
        value = float(values[-1])
    except ValueError:
        raise ConfigurationError(f"{url!r}: {name} must be a number") from None
    if value <= 0:
        raise ConfigurationError(f"{url!r}: {name} must be positive")
    return value


def exptime(ttl: float) -> int:
    """Seconds as memcached's expiry field: whole seconds, at least one, absolute past 30 days."""
    seconds = max(1, math.ceil(ttl))
    return int(time.time()) + seconds if seconds > _RELATIVE_LIMIT else seconds


def memcached_key(key: str) -> str:
    """``key`` as memcached accepts it: offload's own keys unchanged, others (spaces, length...) hashed.

    >>> memcached_key("offload:r:ab12"), memcached_key("with space").startswith("offload-hash:")
    ('offload:r:ab12', True)
    """
    if len(key) <= 200 and key.isascii() and key.isprintable() and " " not in key:
        return key
    return "offload-hash:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_plain_client(client: Any) -> None:
    """Refuse a pymemcache client whose serde would unpickle what it reads back.

    offload stores bytes and reads back bytes; a client configured with
    ``pickle_serde`` would unpickle a foreign value planted in the cache.
    """
    pymemcache = _import_pymemcache()
    serde = getattr(client, "serde", None)
    if serde is None and isinstance(getattr(client, "default_kwargs", None), dict):
        serde = client.default_kwargs.get("serde")  # HashClient
    if serde is None:
        return
    wrapping = pymemcache.serde.LegacyWrappingSerde
    if isinstance(serde, wrapping) and serde.deserialize == serde._default_deserialize:
        return
    raise ConfigurationError(
        "this pymemcache client deserializes values (its serde may unpickle): "
        "give offload its own client without serde=, e.g. pymemcache.PooledClient(('host', 11211))"
    )


class MemcachedCache(Cache):
    """The cache contract over a pymemcache client, with an index for ``expire()`` and ``stats()``.

    ``client`` is used as it is (it must be thread-safe if the cache is shared
    by threads: a ``PooledClient`` or ``HashClient(use_pooling=True)``);
    ``factory`` makes a fresh client in each process, for caches opened from a
    URL before a server forks its workers.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        factory: Callable[[], Any] | None = None,
        index_buckets: int = 256,
        chunk_size: int = 512 * 1024,
    ) -> None:
        if (client is None) == (factory is None):
            raise ConfigurationError("give MemcachedCache a client or a factory, not both")
        if client is not None:
            check_plain_client(client)
        self._factory = factory
        self._client = client
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.index_buckets = index_buckets
        self.chunk_size = chunk_size
        self._errors: tuple[type[BaseException], ...] = (_import_pymemcache().exceptions.MemcacheError, OSError)

    @classmethod
    def from_url(cls, url: str) -> MemcachedCache:
        """A cache for ``memcached://host:port[,host:port...][?timeout=2&index_buckets=256&chunk_size=524288]``."""
        pymemcache = _import_pymemcache()
        servers = _servers(url)
        options = parse_qs(urlsplit(url).query)
        timeout = _option(options, "timeout", 2.0, url)
        buckets = int(_option(options, "index_buckets", 256, url))
        chunk_size = int(_option(options, "chunk_size", 512 * 1024, url))

        def connect() -> Any:
            if len(servers) == 1:
                return pymemcache.client.base.PooledClient(
                    servers[0], connect_timeout=timeout, timeout=timeout, default_noreply=False
                )
            return pymemcache.client.hash.HashClient(
                servers,
                connect_timeout=timeout,
                timeout=timeout,
                use_pooling=True,
                default_noreply=False,
                retry_attempts=1,
                dead_timeout=5,
            )

        return cls(factory=connect, index_buckets=buckets, chunk_size=chunk_size)

    # -- plumbing ----------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The client, made anew after a fork when this cache owns it."""
        if self._factory is not None and (self._client is None or self._pid != os.getpid()):
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client, self._pid = self._factory(), os.getpid()
        return self._client

    @contextmanager
    def _reaching(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._errors as error:
            raise BackendUnavailable(f"memcached {what}: {type(error).__name__}: {error}") from error

    def _bucket(self, key: str) -> str:
        return f"offload-index:{zlib.crc32(key.encode('utf-8')) % self.index_buckets}"

    # -- values -----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        key = memcached_key(key)
        with self._reaching("get"):
            value = self.client.get(key)
            if not isinstance(value, bytes):
                return None
            if not value.startswith(CHUNKS_MAGIC):
                return value
            return self._join_chunks(key, value)

    def _join_chunks(self, key: str, header: bytes) -> bytes | None:
        try:
            meta = json.loads(header[len(CHUNKS_MAGIC) :])
            chunk_id, count, length = meta["id"], meta["n"], meta["length"]
            if not (isinstance(chunk_id, str) and chunk_id.isalnum() and isinstance(count, int) and 0 < count < 10_000):
                raise ValueError("bad chunk header")
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring %s: a chunk header not in offload's format", key)
            return None
        names = [f"{key}:c:{chunk_id}:{n}" for n in range(count)]
        found = self.client.get_many(names)
        parts = [found.get(name) for name in names]
        if not all(isinstance(part, bytes) for part in parts):
            return None  # a chunk expired or was evicted: a miss
        value = b"".join(parts)
        return value if len(value) == length else None

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        key, expire = memcached_key(key), exptime(ttl)
        with self._reaching("add"):
            stored = self._chunked(key, value, expire)
            if self.client.add(key, stored, expire, noreply=False):
                return True
            if stored is not value:  # chunks written for nothing: drop them now rather than at expiry
                meta = json.loads(stored[len(CHUNKS_MAGIC) :])
                self.client.delete_many([f"{key}:c:{meta['id']}:{n}" for n in range(meta["n"])], noreply=False)
            return False

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        key = memcached_key(key)
        with self._reaching("set"):
            if index is None:
                self._update_index(key, lambda entries: entries.pop(key, None) is not None)
                self._store(key, value, ttl)
                return
            listing: Listing = (index.path, index.query, index.failed, time.time() + ttl)

            def list_it(entries: dict[str, Listing]) -> bool:
                entries[key] = listing
                return True

            self._update_index(key, list_it)
            self._store(key, value, ttl)
            if key not in self._read_bucket(self._bucket(key)) and self.client.get(key) is not None:
                self._update_index(key, list_it)  # an expire() came between listing and storing

    def _store(self, key: str, value: bytes, ttl: float) -> None:
        expire = exptime(ttl)
        stored = self.client.set(key, self._chunked(key, value, expire), expire, noreply=False)
        if not stored:
            raise BackendUnavailable(f"memcached refused to store {key}")

    def _chunked(self, key: str, value: bytes, expire: int) -> bytes:
        """What to store under ``key``: the value itself, or (after writing its chunks) a header naming them."""
        if len(value) <= self.chunk_size:
            return value
        chunk_id = uuid.uuid4().hex[:16]
        chunks = {
            f"{key}:c:{chunk_id}:{n}": value[start : start + self.chunk_size]
            for n, start in enumerate(range(0, len(value), self.chunk_size))
        }
        failed = self.client.set_many(chunks, expire, noreply=False)
        if failed:
            raise BackendUnavailable(f"memcached refused to store {len(failed)} chunks of {key}")
        return CHUNKS_MAGIC + json.dumps({"id": chunk_id, "n": len(chunks), "length": len(value)}).encode()

    def touch(self, key: str, ttl: float) -> bool:
        key, expire = memcached_key(key), exptime(ttl)
        with self._reaching("touch"):
            value = self.client.get(key)
            if value is None:
                return False
            if isinstance(value, bytes) and value.startswith(CHUNKS_MAGIC):
                try:
                    meta = json.loads(value[len(CHUNKS_MAGIC) :])
                    for n in range(int(meta["n"])):
                        self.client.touch(f"{key}:c:{meta['id']}:{n}", expire, noreply=False)
                except (ValueError, KeyError, TypeError):
                    pass  # unreadable header: get() reads it as a miss anyway
            if not self.client.touch(key, expire, noreply=False):
                return False

            def extend(entries: dict[str, Listing]) -> bool:
                listing = entries.get(key)
                if listing is None:
                    return False
                entries[key] = (*listing[:3], time.time() + ttl)
                return True

            self._update_index(key, extend)
            return True

    def delete(self, key: str) -> None:
        key = memcached_key(key)
        with self._reaching("delete"):
            self.client.delete(key, noreply=False)
            self._update_index(key, lambda entries: entries.pop(key, None) is not None)

    # -- the index ------------------------------------------------------------------

    def _update_index(self, key: str, change: Callable[[dict[str, Listing]], bool]) -> None:
        """Apply ``change`` to the index entry listing ``key``, retrying when another writer got there first."""
        self._update_bucket(self._bucket(key), change)

    def _update_bucket(self, bucket: str, change: Callable[[dict[str, Listing]], bool]) -> None:
        for attempt in range(_CAS_ATTEMPTS):
            raw, token = self.client.gets(bucket)
            entries = self._decode_bucket(bucket, raw)
            horizon = time.time() - PRUNE_GRACE
            live = {key: listing for key, listing in entries.items() if listing[3] > horizon}
            if not change(live) and len(live) == len(entries):
                return
            data = self._encode_bucket(bucket, live)
            if token is None:
                if self.client.add(bucket, data, 0, noreply=False):
                    return
            elif self.client.cas(bucket, data, token, 0, noreply=False):
                return
            time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
        raise BackendUnavailable(f"memcached index entry {bucket} is too contended; try again")

    def _read_bucket(self, bucket: str) -> dict[str, Listing]:
        return self._decode_bucket(bucket, self.client.get(bucket))

    def _encode_bucket(self, bucket: str, entries: dict[str, Listing]) -> bytes:
        body = json.dumps({key: list(listing) for key, listing in entries.items()}, separators=(",", ":"))
        data = INDEX_MAGIC + zlib.compress(body.encode("utf-8"))
        if len(data) > 1000 * 1000:
            raise BackendUnavailable(
                f"memcached index entry {bucket} outgrew memcached's item size: raise index_buckets in the URL"
            )
        return data

    def _decode_bucket(self, bucket: str, raw: Any) -> dict[str, Listing]:
        if raw is None:
            return {}
        try:
            if not isinstance(raw, bytes) or not raw.startswith(INDEX_MAGIC):
                raise ValueError("no index header")
            inflate = zlib.decompressobj()
            body = inflate.decompress(raw[len(INDEX_MAGIC) :], _MAX_INDEX_BYTES)
            if inflate.unconsumed_tail or not inflate.eof:
                raise ValueError("truncated or oversized")
            loaded = json.loads(body)
            if not isinstance(loaded, dict):
                raise ValueError("not an object")
            entries: dict[str, Listing] = {}
            for key, item in loaded.items():
                path, query, failed, expires = item
                if not (isinstance(path, str) and isinstance(query, str) and isinstance(failed, bool)):
                    raise ValueError("bad listing")
                entries[key] = (path, query, failed, float(expires))
            return entries
        except (ValueError, TypeError, zlib.error) as error:
            log.warning("memcached index entry %s is not in offload's format (%s): starting it afresh", bucket, error)
            return {}

    def _all_buckets(self) -> dict[str, dict[str, Listing]]:
        names = [f"offload-index:{n}" for n in range(self.index_buckets)]
        found = self.client.get_many(names)
        return {name: self._decode_bucket(name, found.get(name)) for name in names if name in found}

    def expire(self, pattern: str, params: Sequence[tuple[str, str]] = ()) -> int:
        matches = path_matcher(pattern)

        def doomed_in(entries: dict[str, Listing]) -> list[str]:
            return [
                key for key, (path, query, _, _) in entries.items() if matches(path) and params_match(query, params)
            ]

        with self._reaching("expire"):
            return sum(
                self._expire_in(bucket, doomed_in)
                for bucket, entries in self._all_buckets().items()
                if doomed_in(entries)
            )

    def _expire_in(self, bucket: str, doomed_in: Callable[[dict[str, Listing]], list[str]]) -> int:
        """Delete the answers one index entry lists as doomed, then their listings; count those still held."""
        dropped: list[str] = []

        def drop(entries: dict[str, Listing]) -> bool:
            doomed = doomed_in(entries)
            # memcached's clock ticks in whole seconds, so an answer may be gone before its
            # listed expiry: count what memcached itself says it still held.
            dropped[:] = [key for key in doomed if self.client.delete(key, noreply=False)]
            for key in doomed:
                del entries[key]
            return bool(doomed)

        self._update_bucket(bucket, drop)
        return len(dropped)

    def stats(self) -> dict[str, int]:
        now = time.time()
        cached = failed = 0
        with self._reaching("stats"):
            for entries in self._all_buckets().values():
                for _, _, is_failed, expires in entries.values():
                    if expires > now:
                        failed += is_failed
                        cached += not is_failed
        return {"cached": cached, "failed": failed}

    def close(self) -> None:
        if self._factory is None:
            return  # a client given to us is closed by its owner
        client, self._client = self._client, None
        if client is not None:
            with self._reaching("close"):
                client.close()
