"""Redis Cluster (``redis+cluster://``): the names offload gives keys, the URL, and a real deployment on a cluster.

The backend contract suite runs on the session's cluster too (``redis-cluster``
in ``tests/backends/conftest.py``); this module checks what only a cluster
has: every key of the cache shares one hash slot and every key of a queue
shard another (``tests/test_redis_queue_shards.py`` spreads a queue), the URL's seeds and its
mistakes, and ``offload serve`` with its worker on the cluster answering a miss
with 202 and then the answer. Failing a master over under load is a chaos
scenario (``tests/test_chaos.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from offload_bench.cluster import RedisCluster

from offload.backends import IndexEntry, open_backend
from offload.backends.redis_connection import Names, RedisConnection
from offload.backends.redis_queue import RedisQueue
from offload.backends.redis_shards import shard_of
from offload.errors import ConfigurationError
from tests.deployments import Site, serving

# -- names: without a cluster they are what they always were ------------------------------


def test_names_without_a_cluster_are_unchanged() -> None:
    names = Names("offload", "shop", "3")
    assert names.key("shop:r:abc") == "shop:r:abc"
    assert names.caller_key("shop:r:abc") == "shop:r:abc"
    assert (names.answers, names.epoch, names.jobs, names.namespaces) == (
        "offload:shop:answers",
        "offload:shop:epoch",
        "offload:shop:jobs",
        "offload:namespaces",
    )
    assert (names.expired, names.stored) == ("offload:shop:expired:3", "offload:shop:stored:3")
    assert names.tag("blue") == b"offload:shop:tag:blue"


def test_names_on_a_cluster_carry_the_prefix_as_their_hash_tag() -> None:
    names = Names("offload", "shop", "0", tagged=True)
    key = names.key("shop:r:abc")
    assert key == "{offload}:shop:r:abc"
    assert names.caller_key(key) == "shop:r:abc"
    every = [key, names.answers, names.failed, names.paths, names.entries, names.epoch, names.log]
    every += [names.jobs, names.delayed, names.held, names.dead, names.namespaces, names.of("blog").jobs]
    every += [names.tag("blue").decode()]
    assert all(name.startswith("{offload}:") for name in every), every


def test_a_cluster_url_takes_seeds_and_refuses_what_a_cluster_cannot_do() -> None:
    connection = RedisConnection("redis+cluster://10.0.0.1:7000/?seeds=10.0.0.2:7001,[::1]:7002&prefix=app")
    assert connection.cluster and connection.seeds == [("10.0.0.2", 7001), ("::1", 7002)]
    assert connection.names("shop").jobs == "{app}:shop:jobs"
    assert not RedisConnection("redis://10.0.0.1:6379/0").cluster
    with pytest.raises(ConfigurationError, match="seeds"):
        RedisConnection("redis+cluster://10.0.0.1:7000/?seeds=10.0.0.2")
    with pytest.raises(ConfigurationError, match="database 0"):
        RedisConnection("redis+cluster://10.0.0.1:7000/2")
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisConnection("redis+cluster://10.0.0.1:7000/?prefix=a{b}")


# -- a real cluster --------------------------------------------------------------------------


def test_a_job_writes_in_two_slots_the_caches_and_its_queue_shards(
    redis_cluster_server: RedisCluster, redis_cluster_url: str
) -> None:
    import redis

    backend = open_backend(redis_cluster_url, "shop")
    cache, queue = backend.cache, backend.queue
    assert cache is not None and isinstance(queue, RedisQueue)
    try:
        queue.push("k1", b"request")
        claim = queue.claim(lease=5, wait=1)
        assert claim is not None
        assert cache.add("shop:p:k1", b"queued", 60)
        won, _, since = cache.start_job("shop:l:k1", "shop:p:k1", "shop:r:k1", b"running", 5)
        assert won
        entry = IndexEntry("/report", "year=2024", tags=("blue",))
        assert cache.finish_job("shop:r:k1", b"answer", 60, entry, ["shop:l:k1"], since)
        queue.release(claim, delay=30)  # a delayed job: the held hash and the delayed set too
        assert cache.get("shop:r:k1") == b"answer"
    finally:
        cache.close()
        queue.close()
    slots: dict[int, set[bytes]] = {}
    for port in redis_cluster_server.masters():
        with redis.Redis(port=port) as node:
            for key in node.scan_iter(count=1000):
                slots.setdefault(node.cluster("KEYSLOT", key), set()).add(key)
    found = {key for keys in slots.values() for key in keys}
    assert {b"{offload}:shop:r:k1", b"{offload}:shop:p:k1", b"{offload}:shop:tag:blue"} <= found, found
    # The job's stream, delayed set and held hash are in the shard of its key; a claim made the others' groups.
    queued = queue.shards[shard_of("k1", len(queue.shards))].head.encode()
    assert {queued + suffix for suffix in (b":shop:jobs", b":shop:delayed", b":shop:held")} <= found, found
    tags = {key.partition(b"}")[0] + b"}" for key in found}
    assert tags <= {b"{offload}"} | {names.head.encode() for names in queue.shards}, tags
    for tag in tags:
        assert len([slot for slot, keys in slots.items() if any(key.startswith(tag) for key in keys)]) == 1, slots


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def site(
    request: pytest.FixtureRequest, redis_cluster_server: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """``offload serve`` of the isolation site with one worker, on the session's Redis Cluster."""
    redis_cluster_server.flush()
    directory: Path = tmp_path_factory.mktemp(f"cluster-{request.param}")
    with serving(
        Site(request.param, "redis-cluster", redis_cluster_server.url, directory),
        f"tests.isolation.site:{request.param}_app",
    ) as served:
        yield served


def test_a_miss_on_a_cluster_is_queued_run_and_then_served(site: Site) -> None:
    target = f"/echo?page=1&protocol={site.protocol}"
    first = site.get(target)
    assert first.status == 202, first
    done = site.poll(target, timeout=30)
    assert done.status == 200 and done.json()["app"] == "shop", done
    assert site.get(target).status == 200
    status = site.cli("status", "--url", site.url, "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert sum(namespace["cached"] for namespace in counts.values()) >= 1, counts
    expired = site.cli("expire", "/echo", "--url", site.url)
    assert expired.returncode == 0 and "expired" in expired.stdout, expired.stdout + expired.stderr
    assert site.get(target).status == 202, "an expired answer was served"
    assert site.poll(target, timeout=30).status == 200


def test_an_applications_own_cluster_client_is_refused_with_the_url_to_use(redis_cluster_server: RedisCluster) -> None:
    import redis.cluster

    from offload.adapters import adapt_cache

    client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster_server.masters()[0])
    try:
        with pytest.raises(ConfigurationError, match=r"redis\+cluster://"):
            adapt_cache(client)
    finally:
        client.close()


def test_a_cluster_is_found_from_a_seed_when_the_first_node_is_down(
    redis_cluster_server: RedisCluster, redis_cluster_url: str
) -> None:
    from tests.servers import free_port

    live = redis_cluster_server.masters()[0]
    url = f"redis+cluster://127.0.0.1:{free_port()}/?seeds=127.0.0.1:{live}"
    cache = open_backend(url, "shop").cache
    assert cache is not None
    try:
        assert cache.add("shop:p:seeded", b"queued", 60)
        assert cache.get("shop:p:seeded") == b"queued"
    finally:
        cache.close()


def test_a_burst_of_asyncio_requests_on_a_cluster_is_answered(redis_cluster_url: str) -> None:
    """The first burst of a new asyncio cluster client: every command waits for the cluster's layout, none fails."""
    import asyncio

    from offload.backends.redis import RedisCache

    cache = open_backend(redis_cluster_url, "shop").cache
    assert isinstance(cache, RedisCache)

    async def burst() -> list[bool]:
        try:
            return await asyncio.gather(*(cache.aadd(f"shop:p:{n}", b"queued", 60) for n in range(300)))
        finally:
            await cache.aclose()

    try:
        assert all(asyncio.run(burst()))
    finally:
        cache.close()
