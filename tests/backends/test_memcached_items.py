"""The memcached cache's own items: sized as its docstring says, and never a write reported done that was refused."""

from __future__ import annotations

import hashlib
import os
import time
from base64 import b64encode
from collections.abc import Iterator
from typing import Any

import pytest
from tests.servers import MemcachedServer

from offload.backends import ExpiryRule, IndexEntry
from offload.backends.memcached import MemcachedCache
from offload.backends.memcached_items import ITEM_LIMIT, encode_bucket, index_key
from offload.errors import BackendUnavailable

pytest.importorskip("pymemcache")


def test_an_index_entry_holds_twenty_thousand_listings_of_short_paths() -> None:
    """The sizing rule of offload.backends.memcached_items: about 50 bytes a listing."""
    expires = int(time.time()) + 600
    listings = {
        "offload:r:" + hashlib.sha256(str(n).encode()).hexdigest(): (
            IndexEntry(f"/reports/{n % 300}", f"a={n}"),
            expires,
        )
        for n in range(20_000)
    }
    assert len(encode_bucket("offload-index:offload:0", listings)) < ITEM_LIMIT


@pytest.fixture
def one_bucket(memcached: MemcachedServer) -> Iterator[MemcachedCache]:
    cache = MemcachedCache.from_url(f"{memcached.url}?index_buckets=1")
    yield cache
    cache.close()


def test_an_index_entry_that_would_outgrow_an_item_refuses_the_set(one_bucket: MemcachedCache) -> None:
    def random_path(size: int) -> str:  # base64 of random bytes: zlib saves only a quarter of it
        return "/" + b64encode(os.urandom(size)).decode()

    expires = int(time.time()) + 600
    listings = {f"offload:r:{n}": (IndexEntry(random_path(750), ""), expires) for n in range(1200)}
    full = encode_bucket("offload-index:offload:0", listings)
    one_bucket.client.set(index_key("offload", 0), full)
    with pytest.raises(BackendUnavailable, match="index_buckets"):
        one_bucket.set("offload:r:new", b"answer", 60, IndexEntry(random_path(ITEM_LIMIT - len(full) + 10_000), ""))
    assert one_bucket.get("offload:r:new") is None  # listed first, stored after: nothing half done
    assert one_bucket.stats() == {"cached": 1200, "failed": 0}


def test_a_value_memcached_refuses_is_not_reported_stored(memcached: MemcachedServer) -> None:
    cache = MemcachedCache.from_url(f"{memcached.url}?chunk_size=4000000")  # one item over memcached's 1 MiB
    try:
        with pytest.raises(BackendUnavailable):
            cache.set("offload:r:big", b"x" * 2_000_000, 60, IndexEntry("/big", ""))
        assert cache.get("offload:r:big") is None
        with pytest.raises(BackendUnavailable):
            cache.add("offload:p:big", b"x" * 2_000_000, 60)
    finally:
        cache.close()


def test_the_expiry_log_keeps_its_newest_entries_when_it_would_outgrow_an_item(one_bucket: MemcachedCache) -> None:
    for _ in range(6):  # about 200 kB each, compressed
        one_bucket.expire(ExpiryRule("/" + b64encode(os.urandom(200_000)).decode()))
    latest = one_bucket.epoch()
    assert one_bucket.expired_since(latest - 1, IndexEntry("/none", "")) is None
    found: Any = one_bucket.expired_since(latest - 6, IndexEntry("/none", ""))
    assert found is not None and found.pattern == "*"  # the oldest went: a gap, which counts as everything
