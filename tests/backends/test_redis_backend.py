"""What the Redis backend promises beyond the contract: its names, its round trips, its shared subscription."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from backend_contract import eventually
from tests.servers import throwaway_redis, with_query

from offload.backends import ExpiryRule, IndexEntry, JobFinish, JobStart, open_backend
from offload.backends.expiry_log import EVERYTHING
from offload.backends.redis import RedisCache
from offload.backends.redis_queue import RedisQueue

redis = pytest.importorskip("redis")


def opened(url: str, namespace: str) -> tuple[RedisCache, RedisQueue]:
    backend = open_backend(url, namespace)
    assert isinstance(backend.cache, RedisCache) and isinstance(backend.queue, RedisQueue)
    return backend.cache, backend.queue


@pytest.fixture
def plain(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_every_name_is_under_the_prefix_and_namespace(redis_url: str, plain: Any) -> None:
    cache, queue = opened(with_query(redis_url, prefix="app"), "shop")
    try:
        cache.set("shop:r:1", b"v", 60, IndexEntry("/a", "x=1", tags=("t",)))
        cache.set("shop:r:2", b"v", 60, IndexEntry("/b", "", failed=True))
        cache.set("shop:r:3", b"v", 60, IndexEntry("/c", "", tags=("t",)))
        cache.expire(ExpiryRule("/a"))
        for key in ("a", "b", "c"):
            queue.push(key, b"p")
        first, second = queue.claim(30, 1), queue.claim(30, 1)
        assert first is not None and second is not None
        queue.release(first, delay=60)
        queue.bury(second, "error")
        found = {key.decode() for key in plain.keys("*")}
        ours = {key for key in found if key.startswith("app:shop:")}
        assert found - ours == {"shop:r:2", "shop:r:3", "app:namespaces"}, "a name outside <prefix>:<namespace>:"
        kept = (
            "answers",
            "failed",
            "paths",
            "entries",
            "tag:t",
            "epoch",
            "expiries",
            "jobs",
            "delayed",
            "held",
            "dead",
            "rescanned",
        )
        assert ours == {f"app:shop:{name}" for name in kept}
        assert plain.smembers("app:namespaces") == {b"shop"}
    finally:
        cache.close()
        queue.close()


class RoundTrips:
    """Counts what a Redis connection sends: one send is one round trip (a pipeline sends once)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = redis.connection.AbstractConnection.send_packed_command

        def counted(connection: Any, command: Any, check_health: bool = True) -> Any:
            self.count += 1
            return original(connection, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)

    def of(self, operation: Any) -> int:
        operation()  # once to load its script: the first EVALSHA of a script costs a second trip
        self.count = 0
        operation()
        return self.count


def test_one_round_trip_per_operation(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, queue = opened(redis_url, "offload")
    trips = RoundTrips(monkeypatch)
    page = IndexEntry("/page", "")
    claims: list[Any] = []

    def claim() -> None:
        queue.push("k", b"p")
        claims.append(queue.claim(30, 0))

    try:
        assert trips.of(lambda: cache.get("k")) == 1
        assert trips.of(lambda: cache.add("k", b"v", 30)) == 1
        assert trips.of(lambda: cache.set("a", b"v", 30, page)) == 1
        assert trips.of(lambda: cache.take("a")) == 1
        assert trips.of(lambda: cache.incr("n", 30)) == 1
        assert trips.of(lambda: cache.start_job("run", "pend", "a", b"m", 30)) == 1
        since = cache.epoch()
        assert trips.of(lambda: cache.finish_job("a", b"v", 30, page, ("run", "pend"), since)) == 1
        assert trips.of(lambda: queue.push("k", b"p")) == 1
        assert trips.of(claim) == 2  # the push, then the claim
        assert trips.of(lambda: queue.ack(claims.pop())) == 1
        claim()
        assert trips.of(lambda: queue.extend(claims[-1], 30)) == 1
        assert trips.of(lambda: queue.release(claims[-1], delay=0)) == 1
    finally:
        cache.close()
        queue.close()


@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"], ids=["server", "cluster"])
def test_a_batch_of_job_steps_is_one_round_trip(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a cluster too: a prefix's cache is one slot, so the batch goes to its master in one pipeline."""
    cache, queue = opened(request.getfixturevalue(server), "offload")
    trips = RoundTrips(monkeypatch)
    page = IndexEntry("/page", "")
    batch = [JobStart(f"run{n}", f"pend{n}", f"a{n}", b"m", 30, f"starts{n}", 60) for n in range(20)]
    try:
        assert trips.of(lambda: cache.start_counted_jobs(batch)) == 1
        since = cache.epoch()
        finishes = [JobFinish(f"a{n}", b"v", 30, page, (f"run{n}", f"pend{n}"), since) for n in range(20)]
        assert trips.of(lambda: cache.finish_jobs(finishes)) == 1
        assert trips.of(lambda: cache.touch_many([f"a{n}" for n in range(20)], 30)) == 1
        unknown = f"-- {uuid.uuid4().hex}\nreturn redis.call('EXISTS', KEYS[1])"  # a script the server never saw
        trips.count = 0
        keys = [cache.redis.names("offload").key(key) for key in ("a0", "a1", "gone")]  # in one slot on a cluster
        assert cache.redis.run_many(unknown, [([key], []) for key in keys]) == [1, 1, 0]
        assert trips.count == 3, "the pipeline, the script's load, the runs again"
    finally:
        cache.close()
        queue.close()


def test_finish_job_after_an_expiry_takes_a_second_trip(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, queue = opened(redis_url, "offload")
    trips = RoundTrips(monkeypatch)
    try:
        since = cache.start_job("run", "pend", "a", b"m", 30)[2]
        cache.expire(ExpiryRule("/other"))
        cache.finish_job("warm", None, 30, None, (), since)
        trips.count = 0
        assert cache.finish_job("a", b"v", 30, IndexEntry("/page", ""), ("run", "pend"), since) is True
        assert trips.count == 2  # the store found an expiry to check; the markers went once it was cleared
        assert cache.get("a") == b"v" and cache.get("pend") is None
    finally:
        cache.close()
        queue.close()


def test_a_lost_log_answers_with_everything(redis_url: str, plain: Any) -> None:
    """Redis restarted without its data: a job that read an epoch before cannot tell what was expired."""
    cache, queue = opened(redis_url, "offload")
    try:
        cache.expire(ExpiryRule("/a"))
        since = cache.epoch()
        plain.delete(cache.names.epoch, cache.names.log)
        time.sleep(0.01)
        cache.expire(ExpiryRule("/a"))
        assert cache.epoch() > since
        assert cache.expired_since(since, IndexEntry("/unrelated", "")) == EVERYTHING
    finally:
        cache.close()
        queue.close()


def test_a_delayed_job_counts_as_queued_and_wakes_its_worker_when_due(redis_url: str) -> None:
    cache, queue = opened(redis_url, "offload")
    try:
        queue.push("k", b"p")
        claim = queue.claim(30, 1)
        assert claim is not None
        queue.release(claim, delay=0.4)
        assert queue.stats() == {"queued": 1, "running": 0, "dead": 0}
        started = time.monotonic()
        again = queue.claim(30, 10)
        assert again is not None and again.key == "k"
        assert 0.3 < time.monotonic() - started < 0.9  # woken when due, not at the next second's look
    finally:
        cache.close()
        queue.close()


def test_one_subscriber_thread_serves_every_channel_of_a_process(redis_url: str) -> None:
    shop, shop_queue = opened(redis_url, "shop")
    blog, blog_queue = opened(redis_url, "blog")
    heard: list[str] = []
    stops = []
    try:
        assert shop.generation() is not None and blog.generation() is not None
        stops = [shop.watch(heard.append), blog.watch(heard.append)]
        threads = [thread for thread in threading.enumerate() if thread.name == "offload-redis-pubsub"]
        assert len(threads) == 1
        before = shop.generation()
        blog.expire(ExpiryRule("/x"))
        shop.finish_job("shop:r:1", b"v", 30, IndexEntry("/x", ""), (), shop.epoch())
        blog.finish_job("blog:r:1", b"v", 30, IndexEntry("/x", ""), (), blog.epoch())
        assert eventually(lambda: sorted(heard) == ["blog:r:1", "shop:r:1"], within=5)
        assert shop.generation() == before  # another namespace's expiry keeps this one's answers
    finally:
        for stop in stops:
            if stop is not None:
                stop()
        for part in (shop, shop_queue, blog, blog_queue):
            part.close()
    assert eventually(lambda: all(t.name != "offload-redis-pubsub" for t in threading.enumerate()), within=5)


@pytest.mark.slow
def test_watch_and_generation_come_back_after_an_outage() -> None:
    with throwaway_redis() as server:
        cache, queue = opened(server.url, "offload")
        heard: list[str] = []
        stop = cache.watch(heard.append)
        assert stop is not None
        try:
            assert cache.generation() is not None
            server.stop()
            assert eventually(lambda: cache.generation() is None, within=10)
            server.start()
            assert eventually(lambda: cache.generation() is not None, within=15)
            cache.finish_job("offload:r:1", b"v", 30, IndexEntry("/x", ""), (), 0)
            assert eventually(lambda: heard == ["offload:r:1"], within=5)
        finally:
            stop()
            cache.close()
            queue.close()


def test_more_threads_than_redis_py_pools_by_default_wait_on_the_server_at_once(redis_url: str) -> None:
    """150 threads each block in a claim on an empty queue: each holds a connection, and none is refused."""
    _, queue = opened(redis_url, "many-threads")
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            assert queue.claim(lease=5, wait=1.5) is None
        except BaseException as error:  # reported below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=claim) for _ in range(150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    queue.close()


def test_a_claim_takes_lapsed_leases_from_the_index_and_scans_the_group_once_per_rescan() -> None:
    """With 2,000 jobs running, claims read the head of ``leases``; XAUTOCLAIM walks the group once a minute at most."""
    with throwaway_redis() as server:
        _, queue = opened(server.url, "offload")
        client = redis.Redis.from_url(server.url)
        try:
            for n in range(2000):
                queue.push(f"k{n}", b"p")
            running = queue.claim_many(lease=60, wait=0, limit=2000)
            assert len(running) == 2000
            queue.push("short", b"p")
            short = queue.claim(lease=0.3, wait=0)
            assert short is not None and short.key == "short"

            def scans() -> int:
                stats = client.info("commandstats").get("cmdstat_xautoclaim")
                return int(stats["calls"]) if stats else 0

            before = scans()
            for _ in range(50):
                assert queue.claim(lease=60, wait=0) is None
            time.sleep(0.5)
            again = queue.claim(lease=60, wait=0)  # the lapsed lease, found at the head of the index
            assert again is not None and again.job_id == short.job_id
            assert scans() == before  # no walk over the 2,000 running jobs
            assert queue.stats()["running"] == 2001
        finally:
            client.close()
            queue.close()
