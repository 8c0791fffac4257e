"""Memcached as offload's cache (``memcached://host:port``); the queue comes from another URL.

Memcached has no queue, so it is combined with one::

    WSGIMiddleware(app, cache="memcached://127.0.0.1:11211", queue="redis://127.0.0.1:6379/0")

The pending marker is memcached's ``add``, atomic on the server, so of many
concurrent misses exactly one enqueues. Several servers are written
``memcached://a:11211,b:11211`` (keys are spread by rendezvous hashing). URL
options: ``timeout`` (seconds, default 2), ``index_buckets`` (default 256),
``chunk_size`` (bytes, default 512 KiB).

Memcached cannot list its keys, so ``expire()`` and ``stats()`` use an index
kept in memcached itself, per namespace: every cached answer is listed (key,
path, query, tags, failed, expiry) in one of ``index_buckets`` index entries,
chosen by a hash of the answer's key; the expiry log and the list of
namespaces are items too (names, formats and sizing in
:mod:`offload.backends.memcached_items`). Those items are only ever replaced
with ``gets``/``cas`` (or created with ``add``), so a writer that lost a race
reads again and retries. The order of writes keeps the index complete:

* ``set`` lists the answer first, then stores it, then checks the listing is
  still there: an ``expire()`` that ran in between removed the listing of a
  value it could not yet delete, so the listing is restored if the value exists.
* ``expire()`` logs its rule, then deletes (or rewrites) the answers, then
  drops their listings, so a crash in between leaves listings of deleted
  answers (harmless), never answers no listing points to.
* ``delete`` removes the value, then its listing.

Listings past their expiry (plus a minute for clock skew between machines)
are dropped whenever their index entry is written. Limits, by design: an index
entry evicted by memcached under memory pressure takes its listings with it
(those answers then live until their ttl; size memcached so that its
``evictions`` counter stays at zero), and ``stats()`` counts listings, so an
answer evicted early is counted until its listed expiry. Memcached cannot
tell of stored answers: :meth:`~MemcachedCache.watch` returns None.

Keys memcached would refuse (spaces, control characters, over 200 bytes) are
stored under a SHA-256 digest of the key; offload's own keys are short hex
digests and stay readable. Values larger than ``chunk_size`` (memcached refuses items over 1 MiB by
default) are stored in chunks under fresh keys, with a small header under the
key itself that is written last; a missing or short chunk reads as a miss.
Nothing read back is unpickled: values are bytes stored with flags 0, and the
clients offload makes read an item with other flags (another client's pickle,
text or number) as absent: ``get`` misses it and ``add`` replaces it.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from offload.backends.base import DEFAULT_NAMESPACE, Cache, ExpiryRule, IndexEntry, Restamp, check_namespace
from offload.backends.expiry_log import entry_text, first_expiry, kept, parse_entry
from offload.backends.memcached_items import (
    NAMESPACES_KEY,
    BytesSerde,
    Listing,
    decode_bucket,
    decode_list,
    decode_log,
    encode_bucket,
    encode_list,
    encode_log,
    index_key,
    log_key,
)
from offload.errors import BackendUnavailable, ConfigurationError, MissingDependency, install_hint

if TYPE_CHECKING:
    from offload.backends import Backend

log = logging.getLogger("offload.memcached")

CHUNKS_MAGIC = b"offload-chunks/1\n"
#: Listings are pruned this long after their expiry, so a machine whose clock
#: runs ahead does not drop another machine's live listings.
PRUNE_GRACE = 60.0
#: memcached reads expiry times above 30 days as Unix timestamps.
_RELATIVE_LIMIT = 30 * 24 * 3600
_CAS_ATTEMPTS = 200
#: Seconds between two looks of a process at the list of namespaces (see MemcachedCache._register).
REGISTER_EVERY = 300.0


def open_backend(url: str, namespace: str = DEFAULT_NAMESPACE) -> Backend:
    from offload.backends import Backend

    return Backend(url, MemcachedCache.from_url(url, namespace), None)


def _import_pymemcache() -> Any:
    try:
        import pymemcache  # type: ignore[import-untyped]
        import pymemcache.client.base  # type: ignore[import-untyped]
        import pymemcache.client.hash  # type: ignore[import-untyped]
    except ImportError as error:
        raise MissingDependency(f"memcached:// needs pymemcache: {install_hint('memcached')}") from error
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
    if isinstance(serde, BytesSerde) or (
        isinstance(serde, wrapping) and serde.deserialize == serde._default_deserialize
    ):
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
        namespace: str = DEFAULT_NAMESPACE,
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
        self.namespace = check_namespace(namespace)
        self._next_register = 0.0  # monotonic time of the next look at the list of namespaces
        self._errors: tuple[type[BaseException], ...] = (_import_pymemcache().exceptions.MemcacheError, OSError)

    @classmethod
    def from_url(cls, url: str, namespace: str = DEFAULT_NAMESPACE) -> MemcachedCache:
        """A cache for ``memcached://host:port[,host:port...][?timeout=2&index_buckets=256&chunk_size=524288]``."""
        pymemcache = _import_pymemcache()
        servers = _servers(url)
        options = parse_qs(urlsplit(url).query)
        timeout = _option(options, "timeout", 2.0, url)
        buckets = int(_option(options, "index_buckets", 256, url))
        chunk_size = int(_option(options, "chunk_size", 512 * 1024, url))
        serde = BytesSerde()

        def connect() -> Any:
            if len(servers) == 1:
                return pymemcache.client.base.PooledClient(
                    servers[0], connect_timeout=timeout, timeout=timeout, default_noreply=False, serde=serde
                )
            return pymemcache.client.hash.HashClient(
                servers,
                connect_timeout=timeout,
                timeout=timeout,
                use_pooling=True,
                default_noreply=False,
                retry_attempts=1,
                dead_timeout=5,
                serde=serde,
            )

        return cls(factory=connect, index_buckets=buckets, chunk_size=chunk_size, namespace=namespace)

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
        return index_key(self.namespace, zlib.crc32(key.encode("utf-8")) % self.index_buckets)

    def _replace(self, name: str, change: Callable[[Any], bytes | None]) -> None:
        """Replace item ``name`` by ``change(what it holds)`` (None: leave it); retry when another writer came first."""
        for attempt in range(_CAS_ATTEMPTS):
            raw, token = self.client.gets(name)
            data = change(raw)
            if data is None:
                return
            if token is None:
                if self.client.add(name, data, 0, noreply=False):
                    return
            elif self.client.cas(name, data, token, 0, noreply=False):
                return
            time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
        raise BackendUnavailable(f"memcached item {name} is too contended; try again")

    def _register(self, started: bool) -> None:
        """List this namespace in :data:`NAMESPACES_KEY` when it ``started`` to hold something, and now and then.

        The list is read rarely, so memcached may evict it first: each process
        looks at it every :data:`REGISTER_EVERY` seconds, which also keeps it recently used.
        """
        if not started and time.monotonic() < self._next_register:
            return
        self._next_register = time.monotonic() + REGISTER_EVERY

        def add(raw: Any) -> bytes | None:
            listed = decode_list(raw)
            return None if self.namespace in listed else encode_list([*listed, self.namespace])

        self._replace(NAMESPACES_KEY, add)

    # -- values -----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        key = memcached_key(key)
        with self._reaching("get"):
            return self._whole(key, self.client.get(key))

    def _whole(self, key: str, value: Any) -> bytes | None:
        """The value an item holds: itself, or the chunks its header names; None for anything else."""
        if not isinstance(value, bytes):
            return None
        if not value.startswith(CHUNKS_MAGIC):
            return value
        try:
            meta = json.loads(value[len(CHUNKS_MAGIC) :])
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
        whole = b"".join(parts)
        return whole if len(whole) == length else None

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        key, expire = memcached_key(key), exptime(ttl)
        with self._reaching("add"):
            stored = self._chunked(key, value, expire)
            if self.client.add(key, stored, expire, noreply=False):
                return True
            # Taken, unless by an item of another client (other flags): that one is not offload's.
            held, token = self.client.gets(key)
            if held is None and token is not None and self.client.cas(key, stored, token, expire, noreply=False):
                return True
            if stored is not value:  # chunks written for nothing: drop them now rather than at expiry
                meta = json.loads(stored[len(CHUNKS_MAGIC) :])
                self.client.delete_many([f"{key}:c:{meta['id']}:{n}" for n in range(meta["n"])], noreply=False)
            return False

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        key = memcached_key(key)
        with self._reaching("set"):
            if index is None:
                self._update_bucket(self._bucket(key), lambda listings: listings.pop(key, None) is not None)
                self._store(key, value, ttl)
                return
            listing: Listing = (index, math.ceil(time.time() + ttl))

            def list_it(listings: dict[str, Listing]) -> bool:
                listings[key] = listing
                return True

            self._update_bucket(self._bucket(key), list_it)
            self._store(key, value, ttl)
            bucket = self._bucket(key)
            if key not in decode_bucket(bucket, self.client.get(bucket)) and self.client.get(key) is not None:
                self._update_bucket(bucket, list_it)  # an expire() came between listing and storing

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

            def extend(listings: dict[str, Listing]) -> bool:
                listing = listings.get(key)
                if listing is None:
                    return False
                listings[key] = (listing[0], math.ceil(time.time() + ttl))
                return True

            self._update_bucket(self._bucket(key), extend)
            return True

    def delete(self, key: str) -> None:
        key = memcached_key(key)
        with self._reaching("delete"):
            self.client.delete(key, noreply=False)
            self._update_bucket(self._bucket(key), lambda listings: listings.pop(key, None) is not None)

    def incr(self, key: str, ttl: float) -> int:
        key, expire = memcached_key(key), exptime(ttl)
        client_error = _import_pymemcache().exceptions.MemcacheClientError
        with self._reaching("incr"):
            for _ in range(_CAS_ATTEMPTS):
                try:
                    count = self.client.incr(key, 1, noreply=False)
                except client_error:  # not a number: not a counter, so it starts again
                    _, token = self.client.gets(key)
                    if token is not None and self.client.cas(key, b"1", token, expire, noreply=False):
                        return 1
                    continue
                if count is not None:
                    return int(count)
                if self.client.add(key, b"1", expire, noreply=False):  # memcached's incr keeps the expiry
                    return 1
        raise BackendUnavailable(f"memcached counter {key} is too contended; try again")

    # -- the index ------------------------------------------------------------------

    def _update_bucket(self, bucket: str, change: Callable[[dict[str, Listing]], bool]) -> None:
        """Apply ``change`` to the listings of index entry ``bucket``; listings long expired go on the way."""

        started = [False]

        def rewrite(raw: Any) -> bytes | None:
            listings = decode_bucket(bucket, raw)
            horizon = time.time() - PRUNE_GRACE
            live = {key: listing for key, listing in listings.items() if listing[1] > horizon}
            if not change(live) and len(live) == len(listings):
                return None
            started[0] = not listings and bool(live)
            return encode_bucket(bucket, live)

        self._replace(bucket, rewrite)
        self._register(started[0])

    def _buckets(self, namespace: str) -> dict[str, dict[str, Listing]]:
        names = [index_key(namespace, n) for n in range(self.index_buckets)]
        found = self.client.get_many(names)
        return {name: decode_bucket(name, found[name]) for name in names if found.get(name) is not None}

    def expire(self, rule: ExpiryRule, restamp: Restamp | None = None) -> int:
        with self._reaching("expire"):
            self._log(rule)
            touched = 0
            for bucket, listings in self._buckets(self.namespace).items():
                selected = {key: listing for key, listing in listings.items() if rule.matches(listing[0])}
                if selected:
                    touched += self._drop(bucket, rule) if restamp is None else self._rewrite(bucket, selected, restamp)
            return touched

    def _drop(self, bucket: str, rule: ExpiryRule) -> int:
        """Delete the answers an index entry lists as selected, then their listings; count those memcached held."""
        dropped: set[str] = set()

        def drop(listings: dict[str, Listing]) -> bool:
            doomed = [key for key, (entry, _) in listings.items() if rule.matches(entry)]
            # memcached's clock ticks in whole seconds, so an answer may be gone before its
            # listed expiry: count what memcached itself says it still held.
            dropped.update(key for key in doomed if key not in dropped and self.client.delete(key, noreply=False))
            for key in doomed:
                del listings[key]
            return bool(doomed)

        self._update_bucket(bucket, drop)
        return len(dropped)

    def _rewrite(self, bucket: str, selected: dict[str, Listing], restamp: Restamp) -> int:
        """Replace each selected answer by ``restamp(value)`` until its listed expiry, if unchanged since read."""
        touched, gone = 0, []
        for key, (_, expires) in selected.items():
            held, token = self.client.gets(key)
            value = self._whole(key, held)
            if value is None or token is None:
                continue
            rewritten = restamp(value)
            if rewritten is None:
                touched += bool(self.client.delete(key, noreply=False))
                gone.append(key)
            elif expires > time.time():
                expire = exptime(expires - time.time())
                touched += bool(
                    self.client.cas(key, self._chunked(key, rewritten, expire), token, expire, noreply=False)
                )
        if gone:
            self._update_bucket(bucket, lambda listings: [listings.pop(key, None) for key in gone] != [])
        return touched

    # -- the expiry log ------------------------------------------------------------------

    def _log(self, rule: ExpiryRule) -> int:
        """Log ``rule`` under the next epoch (the first one of a log is its base: see offload.backends.expiry_log)."""
        name, epochs, started = log_key(self.namespace), [0], [False]

        def append(raw: Any) -> bytes:
            current, base, entries = decode_log(name, raw)
            now_ms = int(time.time() * 1000)
            started[0] = current == 0
            if started[0]:
                current = base = now_ms
            epochs[0] = current + 1
            return encode_log(current + 1, base, kept([*entries, entry_text(current + 1, now_ms, rule)], now_ms))

        self._replace(name, append)
        self._register(started[0])
        return epochs[0]

    def _read_log(self, namespace: str) -> tuple[int, int, list[str]]:
        name = log_key(namespace)
        with self._reaching("read the expiry log"):
            return decode_log(name, self.client.get(name))

    def epoch(self) -> int:
        return self._read_log(self.namespace)[0]

    def expired_since(self, epoch: int, entry: IndexEntry) -> ExpiryRule | None:
        current, base, entries = self._read_log(self.namespace)
        newer = [text for text in entries if (parsed := parse_entry(text)) is None or parsed[0] > epoch]
        return first_expiry(epoch, current, base, newer, entry)

    # -- counts ------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        now = time.time()
        cached = failed = 0
        with self._reaching("stats"):
            for listings in self._buckets(self.namespace).values():
                for entry, expires in listings.values():
                    if expires > now:
                        failed += entry.failed
                        cached += not entry.failed
        return {"cached": cached, "failed": failed}

    def namespaces(self) -> list[str]:
        now = time.time()
        found = []
        with self._reaching("namespaces"):
            for namespace in decode_list(self.client.get(NAMESPACES_KEY)):
                if self._read_log(namespace)[0] or any(
                    expires > now for listings in self._buckets(namespace).values() for _, expires in listings.values()
                ):
                    found.append(namespace)
        return sorted(found)

    def close(self) -> None:
        if self._factory is None:
            return  # a client given to us is closed by its owner
        client, self._client = self._client, None
        if client is not None:
            with self._reaching("close"):
                client.close()
