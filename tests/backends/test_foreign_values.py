"""Values offload did not write, found where it looks: misses and fresh starts, never an error or a 503.

Each test plants the foreign value with the engine's own client (redis-py,
pymemcache), the way another program sharing the server would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from tests.servers import MemcachedServer

from offload.backends import ExpiryRule, IndexEntry, open_backend
from offload.backends.expiry_log import EVERYTHING
from offload.backends.redis import RedisCache
from offload.backends.redis_queue import RedisQueue

redis = pytest.importorskip("redis")
pymemcache = pytest.importorskip("pymemcache")

#: Ways to plant a Redis value of another type than a string under a key.
REDIS_TYPES = {
    "hash": lambda client, key: client.hset(key, "field", "value"),
    "list": lambda client, key: client.rpush(key, "item"),
    "set": lambda client, key: client.sadd(key, "member"),
    "sorted set": lambda client, key: client.zadd(key, {"member": 1}),
    "stream": lambda client, key: client.xadd(key, {"field": "value"}),
}


@pytest.fixture
def plain(redis_url: str) -> Iterator[Any]:
    """A redis-py client of the test's database, as another program would use it."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_cache(redis_url: str) -> Iterator[RedisCache]:
    cache = open_backend(redis_url).cache
    assert isinstance(cache, RedisCache)
    yield cache
    cache.close()


@pytest.mark.parametrize("kind", REDIS_TYPES)
def test_redis_value_of_another_type_is_a_miss(redis_cache: RedisCache, plain: Any, kind: str) -> None:
    REDIS_TYPES[kind](plain, "offload:r:foreign")
    assert redis_cache.get("offload:r:foreign") is None
    assert redis_cache.take("offload:r:foreign") is None
    assert redis_cache.start_job("offload:x:1", "offload:p:1", "offload:r:foreign", b"m", 30) == (True, None, 0)
    assert asyncio.run(_aget_and_atake(redis_cache, "offload:r:foreign")) == (None, None)
    assert plain.type("offload:r:foreign").decode() == kind.replace("sorted set", "zset")  # left where it was


async def _aget_and_atake(cache: RedisCache, key: str) -> tuple[bytes | None, bytes | None]:
    try:
        return await cache.aget(key), await cache.atake(key)
    finally:
        await cache.aclose()


@pytest.mark.parametrize("kind", REDIS_TYPES)
def test_redis_marker_of_another_type_gives_way_to_add(redis_cache: RedisCache, plain: Any, kind: str) -> None:
    REDIS_TYPES[kind](plain, "offload:p:marker")
    REDIS_TYPES[kind](plain, "offload:x:lock")
    assert redis_cache.add("offload:p:marker", b"mine", 30) is True
    assert redis_cache.get("offload:p:marker") == b"mine"
    assert redis_cache.add("offload:p:marker", b"again", 30) is False
    assert redis_cache.start_job("offload:x:lock", "offload:p:2", "offload:r:none", b"m", 30)[0] is True


def test_redis_string_without_expiry_gives_way_to_add(redis_cache: RedisCache, plain: Any) -> None:
    """offload writes every value with an expiry: one without (a counter of another program) would block forever."""
    plain.incr("offload:p:counted")
    plain.set("offload:p:text", b"left by someone")
    assert redis_cache.get("offload:p:counted") == b"1"  # a string is bytes: the records layer judges it
    assert redis_cache.add("offload:p:counted", b"mine", 30) is True
    assert redis_cache.add("offload:p:text", b"mine", 30) is True
    assert plain.pttl("offload:p:text") > 0


def test_redis_counter_over_a_foreign_value_starts_again(redis_cache: RedisCache, plain: Any) -> None:
    plain.hset("offload:c:hash", "a", "b")
    plain.set("offload:c:text", b"not a number", px=60_000)
    for key in ("offload:c:hash", "offload:c:text"):
        assert [redis_cache.incr(key, 30) for _ in range(3)] == [1, 2, 3]
        assert 0 < plain.pttl(key) <= 30_000


def test_redis_stream_entry_without_offload_fields_is_claimed_empty(redis_url: str, plain: Any) -> None:
    queue = open_backend(redis_url).queue
    assert isinstance(queue, RedisQueue)
    try:
        queue.push("first", b"payload")
        plain.xadd(queue.names.jobs, {"something": "else"})
        plain.xadd(queue.names.jobs, {"k": "only a key"})
        claims = [queue.claim(lease=30, wait=0.2) for _ in range(3)]
        assert [(claim.key, claim.payload) for claim in claims if claim] == [
            ("first", b"payload"),
            ("", b""),
            ("only a key", b""),
        ]
        for claim in claims:
            assert claim is not None
            queue.release(claim, delay=0.5)  # handed back whole, fields and all
        again = [queue.claim(lease=30, wait=5) for _ in range(3)]
        assert sorted(claim.key for claim in again if claim) == ["", "first", "only a key"]
        for claim in again:
            assert claim is not None
            queue.bury(claim, "foreign")
        assert queue.stats() == {"queued": 0, "running": 0, "dead": 3}
    finally:
        queue.close()


def test_redis_garbage_in_offload_structures_is_ignored(redis_cache: RedisCache, plain: Any) -> None:
    names = redis_cache.names
    plain.zadd(names.paths, {b"/page\0no tags segment": 0, b"/page\0\0x:garbage": 0})
    plain.sadd(names.tag(b"t".decode()), "offload:r:not-indexed")
    plain.sadd(names.namespaces, "not a namespace!", "x" * 100)
    redis_cache.set("offload:r:1", b"v", 60, IndexEntry("/page", "", tags=("t",)))
    assert redis_cache.expire(ExpiryRule("/page")) == 1
    redis_cache.set("offload:r:1", b"v", 60, IndexEntry("/page", "", tags=("t",)))
    assert redis_cache.expire(ExpiryRule(tag="t")) == 1
    assert plain.smembers(names.tag("t")) == set()  # the stray key was forgotten on the way
    assert redis_cache.namespaces() == ["offload"]


def test_redis_damaged_log_entry_counts_as_an_expiry_of_everything(redis_cache: RedisCache, plain: Any) -> None:
    redis_cache.expire(ExpiryRule("/a"))
    since = redis_cache.epoch()
    plain.hincrby(redis_cache.names.epoch, "n", 1)
    plain.zadd(redis_cache.names.log, {b"not an entry": since + 1})
    assert redis_cache.expired_since(since, IndexEntry("/b", "")) == EVERYTHING


# -- memcached -------------------------------------------------------------------------

#: pymemcache's flags for a pickle, text and an integer (python-memcached and Django use the same).
FOREIGN_FLAGS = {"pickle": 1, "integer": 2, "text": 16}


@pytest.fixture
def memcached_cache(memcached: MemcachedServer) -> Iterator[Any]:
    cache = open_backend(memcached.url).cache
    assert cache is not None
    yield cache
    cache.close()


@pytest.fixture
def raw_memcached(memcached: MemcachedServer) -> Iterator[Any]:
    client = pymemcache.client.base.Client(("127.0.0.1", memcached.port), default_noreply=False)
    yield client
    client.close()


@pytest.mark.parametrize("flags", FOREIGN_FLAGS.values(), ids=list(FOREIGN_FLAGS))
def test_memcached_item_with_other_flags_is_a_miss_and_gives_way(
    memcached_cache: Any, raw_memcached: Any, flags: int
) -> None:
    for key in ("offload:r:foreign", "offload:p:marker", "offload:x:lock"):
        raw_memcached.set(key, b"\x80\x04K*.", flags=flags)  # pickle.dumps(42)
    assert memcached_cache.get("offload:r:foreign") is None
    assert memcached_cache.take("offload:r:foreign") is None
    assert memcached_cache.start_job("offload:x:lock", "offload:p:1", "offload:r:foreign", b"m", 30)[:2] == (True, None)
    assert memcached_cache.add("offload:p:marker", b"mine", 30) is True
    assert memcached_cache.get("offload:p:marker") == b"mine"
    assert memcached_cache.add("offload:p:marker", b"again", 30) is False


def test_memcached_counter_over_a_foreign_value_starts_again(memcached_cache: Any, raw_memcached: Any) -> None:
    raw_memcached.set("offload:c:text", b"not a number", expire=60)
    assert [memcached_cache.incr("offload:c:text", 30) for _ in range(3)] == [1, 2, 3]


def test_memcached_garbage_in_offload_items_is_a_fresh_start(memcached_cache: Any, raw_memcached: Any) -> None:
    for n in range(memcached_cache.index_buckets):
        raw_memcached.set(f"offload-index:offload:{n}", b"cos\nsystem\n(S'echo pwned'\ntR.")
    raw_memcached.set("offload-expiries:offload", b"offload-expiries/1\nnot zlib")
    raw_memcached.set("offload-namespaces", b"[1, 2]", flags=1)
    assert memcached_cache.stats() == {"cached": 0, "failed": 0}
    assert memcached_cache.epoch() == 0
    assert memcached_cache.namespaces() == []
    memcached_cache.set("offload:r:x", b"v", 60, IndexEntry("/x", ""))
    assert memcached_cache.stats() == {"cached": 1, "failed": 0}
    assert memcached_cache.expire(ExpiryRule("/x")) == 1
    assert memcached_cache.namespaces() == ["offload"]
