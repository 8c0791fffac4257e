"""A queue spread over the shards of a Redis Cluster (see ``offload.backends.redis_shards``), on a real cluster.

What the contract suite (``tests/backends``, which runs on the cluster too)
cannot tell: that the shards of one queue land on more than one master, that
claims take from every shard in turn, that each claim's ack, renewal, release
and burial goes to the shard it came from, that the counts add up over the
shards, and that every process uses the shard count stored in the cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from offload_bench.cluster import RedisCluster

from offload.backends import Claim, open_backend
from offload.backends.redis_queue import RedisQueue
from offload.backends.redis_shards import DEFAULT_SHARDS, locate, shard_of
from offload.errors import ConfigurationError, QueueFull
from tests.servers import with_query

redis = pytest.importorskip("redis")


def opened(url: str, namespace: str = "shop") -> RedisQueue:
    queue = open_backend(url, namespace).queue
    assert isinstance(queue, RedisQueue)
    return queue


@pytest.fixture
def queue(redis_cluster_url: str) -> Iterator[RedisQueue]:
    """The queue of namespace ``shop`` on the emptied cluster, with the default shard count."""
    found = opened(redis_cluster_url)
    yield found
    found.close()


def keys_per_shard(each: int, count: int = DEFAULT_SHARDS) -> dict[int, list[str]]:
    """``each`` job keys for every one of ``count`` shards."""
    found: dict[int, list[str]] = {shard: [] for shard in range(count)}
    number = 0
    while any(len(keys) < each for keys in found.values()):
        key = f"/report?n={number}"
        number += 1
        if len(found[shard_of(key, count)]) < each:
            found[shard_of(key, count)].append(key)
    return found


def shard(claim: Claim, count: int = DEFAULT_SHARDS) -> int:
    where = locate(claim.job_id, count)
    assert where is not None, claim.job_id
    return where[0]


def entries_per_master(cluster: RedisCluster, namespace: str = "shop") -> dict[int, int]:
    """The number of stream entries of the namespace's queue on each master, read on that master."""
    counts: dict[int, int] = {}
    for port in cluster.masters():
        with redis.Redis(port=port) as node:
            for stream in node.scan_iter(match=f"{{offload:q*}}:{namespace}:jobs", count=1000):
                assert cluster.master_of(stream.decode()) == port  # CLUSTER KEYSLOT, then the slot's owner
                counts[port] = counts.get(port, 0) + node.xlen(stream)
    return counts


def test_jobs_for_many_keys_land_on_every_master(redis_cluster_server: RedisCluster, queue: RedisQueue) -> None:
    for number in range(300):
        queue.push(f"/report?n={number}", b"request")
    counts = entries_per_master(redis_cluster_server)
    assert sum(counts.values()) == 300, counts
    assert len([port for port, entries in counts.items() if entries]) > 1, counts
    assert len(queue.shards) == DEFAULT_SHARDS
    shards = Counter(redis_cluster_server.master_of(names.jobs) for names in queue.shards)
    assert set(shards) == set(redis_cluster_server.masters()), shards
    assert max(shards.values()) - min(shards.values()) <= 1, f"the shards fall unevenly on the masters: {shards}"


def test_one_job_per_key_under_concurrent_misses(redis_cluster_url: str) -> None:
    from offload.wsgi import WSGIMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = WSGIMiddleware(app, url=redis_cluster_url, worker_threads=0)
    barrier = threading.Barrier(8)
    statuses: Counter[str] = Counter()

    def misses() -> None:
        barrier.wait(timeout=30)
        for number in range(40):
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/report", "QUERY_STRING": f"n={number}"}
            middleware(environ, lambda status, headers, exc_info=None: statuses.update([status]))

    threads = [threading.Thread(target=misses) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    queue = middleware.offloader.queue
    try:
        assert statuses == {"202 Accepted": 320}, statuses
        assert queue.stats() == {"queued": 40, "running": 0, "dead": 0}
    finally:
        middleware.offloader.cache.close()
        queue.close()


def test_claims_take_from_every_shard_in_turn(queue: RedisQueue) -> None:
    for keys in keys_per_shard(2).values():
        for key in keys:
            queue.push(key, b"request")
    first = [queue.claim(lease=30, wait=0) for _ in range(DEFAULT_SHARDS)]
    assert all(first)
    assert {shard(claim) for claim in first if claim} == set(range(DEFAULT_SHARDS)), "a shard was passed over"
    rest = queue.claim_many(lease=30, wait=0, limit=100)
    assert sorted(shard(claim) for claim in rest) == list(range(DEFAULT_SHARDS))
    assert queue.claim(lease=30, wait=0) is None
    queue.ack_many([claim for claim in first if claim] + rest)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}


def test_a_claim_waiting_on_an_empty_queue_gets_a_job_pushed_to_any_shard(queue: RedisQueue) -> None:
    for keys in keys_per_shard(1).values():
        pusher = threading.Timer(0.2, queue.push, args=(keys[0], b"late"))
        pusher.start()
        try:
            claim = queue.claim(lease=30, wait=15)
        finally:
            pusher.join()
        assert claim is not None and claim.key == keys[0]
        queue.ack(claim)


def claim_woken_by(queue: RedisQueue, action: Any, *args: Any) -> tuple[Claim | None, float]:
    """A claim that waits while ``action(*args)`` runs 0.3 s later: what it got, and after how long."""
    doer = threading.Timer(0.3, action, args=args)
    doer.start()
    started = time.monotonic()
    try:
        return queue.claim(lease=30, wait=120), time.monotonic() - started
    finally:
        doer.join()


def test_a_push_to_any_shard_wakes_a_waiting_claim_at_once(queue: RedisQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread waits; pushes to every shard in turn each wake it, long before it would look again by itself."""
    from offload.backends import redis_queue

    monkeypatch.setattr(redis_queue, "RECHECK", 60.0)  # no look of its own while the test runs
    woken: list[float] = []
    for keys in keys_per_shard(1).values():
        claim, waited = claim_woken_by(queue, queue.push, keys[0], b"late")
        woken.append(waited)
        assert claim is not None and claim.key == keys[0]
        queue.ack(claim)
    assert max(woken) < 30, woken  # woken by the push: without it, each claim would wait out its 60 s look


def test_a_release_and_a_revival_wake_a_waiting_claim(queue: RedisQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    from offload.backends import redis_queue

    monkeypatch.setattr(redis_queue, "RECHECK", 60.0)
    queue.push("/report?n=1", b"x")
    first = queue.claim(lease=30, wait=5)
    assert first is not None
    again, waited = claim_woken_by(queue, queue.release, first)
    assert again is not None and again.key == "/report?n=1" and waited < 30
    queue.bury(again, "for the test")
    (dead,) = queue.dead()
    revived, waited = claim_woken_by(queue, queue.revive, dead.job_id)
    assert revived is not None and revived.key == "/report?n=1" and waited < 30


def test_acks_renewals_and_releases_go_to_the_shard_of_each_claim(queue: RedisQueue) -> None:
    keys = keys_per_shard(3)
    for each in keys.values():
        for key in each:
            queue.push(key, b"request")
    claims = queue.claim_many(lease=30, wait=0, limit=100)
    assert len(claims) == 3 * DEFAULT_SHARDS
    by_key = {claim.key: claim for claim in claims}
    acked = [by_key[each[0]] for each in keys.values()]
    released = [by_key[each[1]] for each in keys.values()]
    kept = [by_key[each[2]] for each in keys.values()]
    queue.ack_many(acked[::2])
    for claim in acked[1::2]:
        queue.ack(claim)
    for claim in released:
        queue.release(claim)
    assert queue.extend_many(acked + released + kept, 30) == [False] * 32 + [True] * 16
    assert all(queue.extend(claim, 30) for claim in kept)
    assert queue.stats() == {"queued": 16, "running": 16, "dead": 0}
    again = queue.claim_many(lease=30, wait=0, limit=100)
    assert sorted(claim.key for claim in again) == sorted(claim.key for claim in released), "a released job is lost"
    queue.bury(again[0], "boom")
    queue.ack_many(again[1:] + kept)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 1}
    assert queue.claim(lease=30, wait=0) is None, "an acked job came back"


def test_a_lapsed_lease_is_found_on_every_shard(queue: RedisQueue) -> None:
    for each in keys_per_shard(1).values():
        queue.push(each[0], b"request")
    lost = queue.claim_many(lease=0.3, wait=0, limit=100)
    assert len(lost) == DEFAULT_SHARDS
    time.sleep(0.5)
    again = queue.claim_many(lease=30, wait=15, limit=100)
    assert sorted(claim.job_id for claim in again) == sorted(claim.job_id for claim in lost)
    assert queue.extend_many(lost, 30) == [False] * DEFAULT_SHARDS
    queue.ack_many(again)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}


def test_counts_listings_and_dead_letters_add_up_over_the_shards(queue: RedisQueue) -> None:
    keys = [each[0] for each in keys_per_shard(1).values()]
    for key in keys:
        queue.push(key, key.encode())
    claims = queue.claim_many(lease=30, wait=0, limit=6)
    for claim in claims[:3]:
        queue.bury(claim, f"failed {claim.key}")
    assert queue.stats() == {"queued": 10, "running": 3, "dead": 3}
    assert len(queue.waiting()) == 10 and len(queue.waiting(limit=4)) == 4
    assert sorted(job.job_id for job in queue.running()) == sorted(claim.job_id for claim in claims[3:])
    dead = queue.dead()
    assert sorted(letter.key for letter in dead) == sorted(claim.key for claim in claims[:3])
    assert all(letter.error == f"failed {letter.key}" for letter in dead)
    assert queue.revive(dead[0].job_id) and not queue.revive(dead[0].job_id)
    assert not queue.revive("99:1-0") and not queue.revive("not an id")
    assert queue.stats() == {"queued": 11, "running": 3, "dead": 2}
    assert queue.namespaces() == ["shop"]


def test_a_capped_push_holds_over_the_whole_queue(queue: RedisQueue) -> None:
    """Each shard takes its part of the cap (3 or 2 of 40): the whole queue holds 40 jobs, never more."""
    refused = 0
    for number in range(400):
        try:
            queue.push(f"/report?n={number}", b"request", limit=40)
        except QueueFull:
            refused += 1
    assert refused == 400 - 40 and queue.stats()["queued"] == 40
    claims = queue.claim_many(lease=30, wait=0, limit=5)
    for claim in claims:  # running jobs do not count: their shards take as many more
        queue.push(claim.key, b"again", limit=40)
    with pytest.raises(QueueFull):
        queue.push(claims[0].key, b"once more", limit=40)
    assert queue.stats() == {"queued": 40, "running": 5, "dead": 0}


def test_native_pushes_spread_and_are_capped_as_the_blocking_ones(queue: RedisQueue) -> None:
    """``apush`` (the ASGI middleware's) learns the shard count on its own loop and pushes to the key's shard."""
    import asyncio

    async def scenario() -> int:
        refused = 0
        for number in range(100):
            try:
                await queue.apush(f"/report?n={number}", b"request", limit=32)
            except QueueFull:
                refused += 1
        await queue.aclose()
        return refused

    assert asyncio.run(scenario()) == 100 - 32
    claims = queue.claim_many(lease=30, wait=0, limit=100)
    assert len(claims) == 32 and {shard(claim) for claim in claims} == set(range(DEFAULT_SHARDS))
    assert all(shard(claim) == shard_of(claim.key, DEFAULT_SHARDS) for claim in claims)
    queue.ack_many(claims)


def test_the_shard_count_stored_in_the_cluster_wins(redis_cluster_url: str, caplog: pytest.LogCaptureFixture) -> None:
    first = opened(with_query(redis_cluster_url, queue_shards="4"))
    with caplog.at_level(logging.WARNING, logger="offload.redis"):
        other = opened(with_query(redis_cluster_url, queue_shards="8"))
        default = opened(redis_cluster_url)
        try:
            for number in range(40):
                first.push(f"/report?n={number}", b"request")
            assert len(other.shards) == len(default.shards) == 4
            claims = other.claim_many(lease=30, wait=0, limit=100)
            assert len(claims) == 40 and {shard(claim, 4) for claim in claims} == {0, 1, 2, 3}
            default.ack_many(claims)  # any process routes any claim
            assert first.stats() == {"queued": 0, "running": 0, "dead": 0}
        finally:
            for queue in (first, other, default):
                queue.close()
    warnings = [record.getMessage() for record in caplog.records if "queue_shards=8" in record.getMessage()]
    assert len(warnings) == 1 and "using 4" in warnings[0], warnings


def test_one_shard_keeps_the_names_of_a_queue_on_one_slot(
    redis_cluster_server: RedisCluster, redis_cluster_url: str
) -> None:
    queue = opened(with_query(redis_cluster_url, queue_shards="1"))
    try:
        queue.push("k", b"request")
        claim = queue.claim(lease=30, wait=1)
        assert claim is not None and ":" not in claim.job_id
        queue.ack(claim)
    finally:
        queue.close()
    assert queue.shards == [queue.names] and queue.stream == "{offload}:shop:jobs"


def test_shards_are_for_a_cluster_only() -> None:
    from offload.backends.redis_connection import RedisConnection

    assert RedisConnection("redis://127.0.0.1:6379/0?queue_shards=1").queue_shards == 1
    with pytest.raises(ConfigurationError, match="redis\\+cluster"):
        RedisConnection("redis://127.0.0.1:6379/0?queue_shards=4")
    for wrong in ("0", "x", "100000"):
        with pytest.raises(ConfigurationError, match="queue_shards"):
            RedisConnection(f"redis+cluster://127.0.0.1:7000/?queue_shards={wrong}")


def test_jobs_queued_before_the_queue_was_spread_keep_it_one_shard(
    redis_cluster_server: RedisCluster, redis_cluster_url: str
) -> None:
    before = opened(with_query(redis_cluster_url, queue_shards="1"), "blog")  # as every queue was: one slot
    before.push("/old", b"request")
    with redis.Redis(port=redis_cluster_server.master_of(before.names.queue_shards)) as node:
        node.delete(before.names.queue_shards)  # no count stored yet, as before the queues were spread
    after, blog = opened(redis_cluster_url), opened(redis_cluster_url, "blog")
    try:
        assert len(after.shards) == 1  # another namespace, opened first: the prefix's waiting jobs count
        claim = blog.claim(lease=30, wait=1)
        assert claim is not None and claim.key == "/old"
    finally:
        for queue in (before, after, blog):
            queue.close()


def test_job_ids_name_their_shard_and_keys_hash_alike_everywhere() -> None:
    from offload.backends.redis_shards import make_job_id, share

    assert make_job_id(3, "1700000000000-0", 16) == "3:1700000000000-0"
    assert make_job_id(0, "1700000000000-0", 1) == "1700000000000-0"  # one shard: the stream id, as always
    assert locate("3:1700000000000-0", 16) == (3, "1700000000000-0")
    assert locate("1700000000000-0", 1) == (0, "1700000000000-0")
    assert locate("16:1-0", 16) is None and locate("1-0", 16) is None and locate("x:1-0", 16) is None
    assert shard_of("/report?n=1", 16) == 3 and shard_of("anything", 1) == 0  # CRC-32: the same in every process
    assert [share(10_000, 16, shard) for shard in (0, 15)] == [625, 625]
    assert [share(40, 16, shard) for shard in range(16)] == [3] * 8 + [2] * 8  # 40 in all
    assert [share(5, 16, shard) for shard in (0, 4, 5, 15)] == [1, 1, 1, 1]  # a cap below the shards: one each


def test_a_stored_layout_that_is_not_offloads_is_an_outage_with_what_to_do(
    redis_cluster_server: RedisCluster, redis_cluster_url: str
) -> None:
    from offload.errors import BackendUnavailable

    queue = opened(redis_cluster_url)
    with redis.Redis(port=redis_cluster_server.master_of(queue.names.queue_shards)) as node:
        node.set(queue.names.queue_shards, "16:1,2")
    try:
        with pytest.raises(BackendUnavailable, match="not a shard layout"):
            queue.push("/report", b"request")
    finally:
        queue.close()


def test_claims_pass_over_a_shard_whose_master_is_down(queue: RedisQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    from offload.errors import BackendUnavailable

    for each in keys_per_shard(1).values():
        queue.push(each[0], b"request")
    down = queue.shards[0]
    run = queue._run

    def failing(source: str, shard: Any, keys: list[Any], args: list[Any]) -> Any:
        if shard is down:
            raise BackendUnavailable("the master of shard 0 is failing over")
        return run(source, shard, keys, args)

    monkeypatch.setattr(queue, "_run", failing)
    claims = queue.claim_many(lease=30, wait=0, limit=100)
    assert sorted(shard(claim) for claim in claims) == list(range(1, DEFAULT_SHARDS))
    queue.ack_many(claims)
    with pytest.raises(BackendUnavailable):  # nothing anywhere else: the outage is the answer
        queue.claim(lease=30, wait=0)
    monkeypatch.undo()
    last = queue.claim(lease=30, wait=0)
    assert last is not None and shard(last) == 0
    queue.ack(last)
