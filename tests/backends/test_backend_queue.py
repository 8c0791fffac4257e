"""The queue half of the backend contract (see offload.backends.base.Queue), run against every backend."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import Any

import pytest
from backend_contract import POISON, BackendSpec, drain, eventually, push_later

from offload.backends import Claim, Queue
from offload.errors import QueueFull


def claim_now(queue: Queue, lease: float = 30) -> Claim | None:
    """Claim with a short wait: the job is expected to be there already."""
    return queue.claim(lease=lease, wait=0.2)


def test_claim_from_an_empty_queue_returns_none(queue: Queue) -> None:
    assert queue.claim(lease=30, wait=0.3) is None
    assert queue.claim(lease=30, wait=0) is None


def test_push_claim_ack(queue: Queue) -> None:
    queue.push("key-1", b"payload")
    assert queue.stats() == {"queued": 1, "running": 0, "dead": 0}
    claim = claim_now(queue)
    assert claim is not None
    assert (claim.key, claim.payload) == ("key-1", b"payload")
    assert queue.namespace in queue.namespaces()
    assert queue.stats() == {"queued": 0, "running": 1, "dead": 0}
    assert claim_now(queue) is None  # leased: nobody else gets it
    queue.ack(claim)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}
    assert claim_now(queue) is None


@pytest.mark.one_shard
def test_jobs_come_out_oldest_first(queue: Queue) -> None:
    for number in range(5):
        queue.push(f"key-{number}", str(number).encode())
    claims = [claim_now(queue) for _ in range(5)]
    assert [claim.key if claim else None for claim in claims] == [f"key-{number}" for number in range(5)]
    assert len({claim.job_id for claim in claims if claim}) == 5


def test_the_same_key_may_be_queued_twice(queue: Queue) -> None:
    queue.push("key", b"1")
    queue.push("key", b"2")
    assert queue.stats()["queued"] == 2


def test_release_hands_the_job_back_at_once(queue: Queue) -> None:
    queue.push("key", b"payload")
    first = claim_now(queue, lease=600)
    assert first is not None
    queue.release(first)
    assert queue.stats() == {"queued": 1, "running": 0, "dead": 0}
    again = queue.claim(lease=600, wait=5)
    assert again is not None
    assert (again.key, again.payload) == ("key", b"payload")
    assert queue.extend(first, 600) is False  # the released claim is no longer the owner
    queue.release(first)  # nor can it hand the job back again
    assert queue.stats() == {"queued": 0, "running": 1, "dead": 0}
    queue.ack(again)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}


@pytest.mark.one_shard
def test_a_released_job_goes_to_the_back_of_the_queue(queue: Queue) -> None:
    queue.push("first", b"1")
    queue.push("second", b"2")
    claim = claim_now(queue)
    assert claim is not None and claim.key == "first"
    queue.release(claim)
    order = []
    while (job := claim_now(queue)) is not None:
        order.append(job.key)
        queue.ack(job)
    assert order == ["second", "first"]


def test_release_with_a_delay_holds_the_job_back(queue: Queue) -> None:
    queue.push("key", b"payload")
    claim = claim_now(queue)
    assert claim is not None
    queue.release(claim, delay=1.5)
    assert queue.claim(lease=30, wait=0.5) is None
    again = queue.claim(lease=30, wait=15)
    assert again is not None and (again.key, again.payload) == ("key", b"payload")


@pytest.mark.one_shard
def test_bury_keeps_a_dead_letter_out_of_the_queue(queue: Queue) -> None:
    queue.push("doomed", b"payload")
    queue.push("fine", b"other")
    claim = claim_now(queue)
    assert claim is not None and claim.key == "doomed"
    queue.bury(claim, "delivered 5 times without finishing")
    assert queue.stats() == {"queued": 1, "running": 0, "dead": 1}
    [dead] = queue.dead()
    assert (dead.key, dead.payload, dead.error) == ("doomed", b"payload", "delivered 5 times without finishing")
    assert abs(dead.buried - time.time()) < 60
    job = claim_now(queue)
    assert job is not None and job.key == "fine"
    queue.ack(job)
    assert claim_now(queue) is None
    assert queue.extend(claim, 30) is False


def test_revive_puts_a_dead_letter_back(queue: Queue) -> None:
    for key in ("a", "b", "c"):
        queue.push(key, key.encode())
        claim = claim_now(queue)
        assert claim is not None
        queue.bury(claim, f"error {key}")
    assert [dead.key for dead in queue.dead()] == ["c", "b", "a"]  # newest first
    assert [dead.key for dead in queue.dead(limit=2)] == ["c", "b"]
    target = next(dead for dead in queue.dead() if dead.key == "b")
    assert queue.revive(target.job_id) is True
    assert queue.revive(target.job_id) is False
    assert queue.revive("no-such-job") is False
    assert queue.stats() == {"queued": 1, "running": 0, "dead": 2}
    claim = claim_now(queue)
    assert claim is not None and (claim.key, claim.payload) == ("b", b"b")


def test_namespaces_do_not_share_jobs(spec: BackendSpec) -> None:
    shop, blog = spec.open_queue("shop"), spec.open_queue("blog")
    try:
        shop.push("key", b"shop job")
        assert blog.claim(lease=30, wait=0.3) is None
        assert blog.stats() == {"queued": 0, "running": 0, "dead": 0}
        claim = shop.claim(lease=30, wait=1)
        assert claim is not None and claim.payload == b"shop job"
        shop.bury(claim, "x")
        assert blog.dead() == [] and blog.stats()["dead"] == 0
        assert "shop" in blog.namespaces()
    finally:
        shop.close()
        blog.close()


def test_a_job_whose_lease_ran_out_is_claimable_again(queue: Queue) -> None:
    queue.push("key", b"payload")
    lost = claim_now(queue, lease=0.3)
    assert lost is not None
    again = queue.claim(lease=30, wait=15)
    assert again is not None
    assert (again.job_id, again.key, again.payload) == (lost.job_id, "key", b"payload")
    assert queue.extend(lost, 30) is False
    queue.ack(lost)  # a stale ack removes nothing
    assert queue.stats() == {"queued": 0, "running": 1, "dead": 0}
    assert queue.extend(again, 30) is True
    queue.ack(again)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}
    assert claim_now(queue) is None


def test_extend_keeps_a_long_job(queue: Queue) -> None:
    queue.push("key", b"payload")
    claim = claim_now(queue, lease=2)
    assert claim is not None
    assert queue.extend(claim, 60) is True
    time.sleep(2.5)  # past the first lease
    assert queue.claim(lease=2, wait=0.5) is None
    assert queue.stats() == {"queued": 0, "running": 1, "dead": 0}
    queue.ack(claim)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}


@pytest.mark.one_shard
def test_push_with_limit_refuses_past_the_cap(queue: Queue) -> None:
    queue.push("a", b"1", limit=2)
    queue.push("b", b"2", limit=2)
    with pytest.raises(QueueFull):
        queue.push("c", b"3", limit=2)
    assert queue.stats()["queued"] == 2
    claim = claim_now(queue)
    assert claim is not None
    queue.push("c", b"3", limit=2)  # a running job does not count as waiting
    with pytest.raises(QueueFull):
        queue.push("d", b"4", limit=2)
    queue.push("d", b"4")  # no limit, no cap
    assert queue.stats() == {"queued": 3, "running": 1, "dead": 0}


@pytest.mark.one_shard
def test_push_with_limit_is_atomic_across_threads(queue: Queue) -> None:
    barrier = threading.Barrier(8)
    refused: list[int] = []

    def push() -> None:
        barrier.wait(timeout=30)
        for number in range(5):
            try:
                queue.push(f"key-{number}", b"x", limit=10)
            except QueueFull:
                refused.append(number)

    threads = [threading.Thread(target=push) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert queue.stats()["queued"] == 10
    assert len(refused) == 30


@pytest.mark.parametrize("payload", POISON, ids=range(len(POISON)))
def test_payloads_are_opaque_bytes(queue: Queue, payload: bytes) -> None:
    queue.push("key with spaces/é", payload)
    claim = claim_now(queue)
    assert claim is not None
    assert (claim.key, claim.payload) == ("key with spaces/é", payload)
    queue.ack(claim)


def test_claim_wakes_up_on_a_push_from_another_thread(queue: Queue) -> None:
    pusher = threading.Timer(0.5, queue.push, args=("key", b"late"))
    pusher.start()
    try:
        claim = queue.claim(lease=30, wait=30)
    finally:
        pusher.join()
    assert claim is not None and claim.payload == b"late"


@pytest.mark.shared_backend
def test_claim_wakes_up_on_a_push_from_another_process(spec: BackendSpec, queue: Queue) -> None:
    queue.stats()  # connect before the other process starts
    context = multiprocessing.get_context("spawn")
    pusher = context.Process(target=push_later, args=(spec, 1.0, "key", b"from afar"))
    pusher.start()
    try:
        claim = queue.claim(lease=30, wait=60)
    finally:
        pusher.join(60)
    assert pusher.exitcode == 0
    assert claim is not None and (claim.key, claim.payload) == ("key", b"from afar")


@pytest.mark.parametrize("batch", [None, 7], ids=["claim", "claim_many"])
def test_each_job_is_claimed_once_across_threads(queue: Queue, batch: int | None) -> None:
    keys = [f"key-{number}" for number in range(40)]
    for key in keys:
        queue.push(key, b"x")
    barrier = threading.Barrier(8)
    claimed: list[str] = []

    def take() -> list[Claim]:
        if batch is not None:
            return queue.claim_many(lease=60, wait=0.5, limit=batch)
        claim = queue.claim(lease=60, wait=0.5)
        return [] if claim is None else [claim]

    def work() -> None:
        barrier.wait(timeout=30)
        while claims := take():
            for claim in claims:
                claimed.append(claim.key)
                queue.ack(claim)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(claimed) == sorted(keys)


def test_waiting_claimers_each_get_a_job_of_a_burst(queue: Queue) -> None:
    """Six workers wait on an empty queue; six pushes in a row reach six of them, none twice, none lost."""
    got: list[list[str]] = []
    lock = threading.Lock()

    def wait_for_one() -> None:
        claim = queue.claim(lease=60, wait=60)
        with lock:
            got.append([] if claim is None else [claim.key])

    waiters = [threading.Thread(target=wait_for_one) for _ in range(6)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.5)  # let them all wait (a push before that is claimed at once, which proves less)
    for number in range(6):
        queue.push(f"burst-{number}", b"x")
    for waiter in waiters:
        waiter.join(120)
    assert sorted(key for keys in got for key in keys) == [f"burst-{number}" for number in range(6)]


@pytest.mark.shared_backend
def test_each_job_is_claimed_once_across_processes(spec: BackendSpec, queue: Queue) -> None:
    keys = [f"key-{number}" for number in range(40)]
    for key in keys:
        queue.push(key, b"x")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    processes = [context.Process(target=drain, args=(spec, barrier, results)) for _ in range(4)]
    for process in processes:
        process.start()
    claimed = [key for _ in processes for key in results.get(timeout=120)]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert sorted(claimed) == sorted(keys)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}


def test_stats_after_lease_expiry(queue: Queue) -> None:
    queue.push("a", b"1")
    queue.push("b", b"2")
    assert claim_now(queue, lease=0.3) is not None
    assert claim_now(queue, lease=600) is not None
    assert queue.stats() == {"queued": 0, "running": 2, "dead": 0}
    assert eventually(lambda: queue.stats() == {"queued": 1, "running": 1, "dead": 0})


def test_close_then_use_again(queue: Queue) -> None:
    queue.push("key", b"x")
    queue.close()
    claim = claim_now(queue)
    assert claim is not None and claim.payload == b"x"


@pytest.mark.native_coroutines
@pytest.mark.one_shard
def test_native_push_keeps_the_contract(queue: Queue) -> None:
    """A backend's optional ``apush`` (awaited by the ASGI middleware) pushes, and refuses past the cap."""
    native: Any = queue

    async def scenario() -> None:
        await native.apush("a", b"1", limit=1)
        with pytest.raises(QueueFull):
            await native.apush("b", b"2", limit=1)
        await native.aclose()

    asyncio.run(scenario())
    claim = claim_now(queue)
    assert claim is not None and (claim.key, claim.payload) == ("a", b"1")


# -- batches: claim_many and extend_many ------------------------------------------------------


def push_keys(queue: Queue, count: int) -> None:
    """Push jobs ``key-0`` to ``key-<count - 1>``, in that order."""
    for number in range(count):
        queue.push(f"key-{number}", b"x")


@pytest.mark.one_shard
def test_claim_many_takes_up_to_the_limit_oldest_first(queue: Queue) -> None:
    for number in range(5):
        queue.push(f"key-{number}", str(number).encode())
    first = queue.claim_many(lease=30, wait=0.2, limit=3)
    assert [(claim.key, claim.payload) for claim in first] == [("key-0", b"0"), ("key-1", b"1"), ("key-2", b"2")]
    assert queue.stats() == {"queued": 2, "running": 3, "dead": 0}
    rest = queue.claim_many(lease=30, wait=0.2, limit=10)  # fewer waiting than asked: what is there, at once
    assert [claim.key for claim in rest] == ["key-3", "key-4"]
    assert len({claim.job_id for claim in first + rest}) == 5
    assert queue.claim_many(lease=30, wait=0, limit=10) == []
    for claim in first + rest:
        queue.ack(claim)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}


def test_claim_many_waits_for_the_first_job(queue: Queue) -> None:
    started = time.monotonic()
    assert queue.claim_many(lease=30, wait=0.3, limit=4) == []
    assert time.monotonic() - started >= 0.25
    pusher = threading.Timer(0.3, queue.push, args=("late", b"payload"))
    pusher.start()
    try:
        claims = queue.claim_many(lease=30, wait=15, limit=4)
    finally:
        pusher.join()
    assert [claim.key for claim in claims] == ["late"]
    queue.ack(claims[0])


@pytest.mark.one_shard
def test_each_claim_of_a_batch_owns_only_its_own_job(queue: Queue) -> None:
    push_keys(queue, 3)
    a, b, c = queue.claim_many(lease=30, wait=0.2, limit=3)
    queue.ack(a)
    queue.release(b)
    assert queue.stats() == {"queued": 1, "running": 1, "dead": 0}
    again = claim_now(queue)
    assert again is not None and again.key == "key-1"
    assert queue.extend_many([a, b, c, again], 30) == [False, False, True, True]
    queue.bury(c, "boom")
    queue.ack(again)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 1}


def test_extend_many_keeps_every_job_of_a_batch(queue: Queue) -> None:
    push_keys(queue, 3)
    claims = queue.claim_many(lease=2, wait=0.2, limit=3)
    assert len(claims) == 3
    assert queue.extend_many(claims, 60) == [True, True, True]
    assert queue.extend_many([], 60) == []
    time.sleep(2.5)  # past the first lease
    assert queue.claim_many(lease=2, wait=0.5, limit=3) == []
    assert queue.stats() == {"queued": 0, "running": 3, "dead": 0}
    queue.ack_many(claims)


def test_a_lapsed_batch_is_claimable_again(queue: Queue) -> None:
    push_keys(queue, 2)
    lost = queue.claim_many(lease=0.3, wait=0.2, limit=2)
    assert len(lost) == 2
    time.sleep(0.5)
    again = queue.claim_many(lease=30, wait=15, limit=5)
    assert sorted(claim.job_id for claim in again) == sorted(claim.job_id for claim in lost)
    assert queue.extend_many(lost, 30) == [False, False]
    assert queue.extend_many(again, 30) == [True, True]
    queue.ack_many(again)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}


@pytest.mark.one_shard
def test_ack_many_removes_the_jobs_its_claims_still_own(queue: Queue) -> None:
    push_keys(queue, 4)
    lost = queue.claim_many(lease=0.3, wait=0.2, limit=1)
    time.sleep(0.5)
    claims = queue.claim_many(lease=30, wait=15, limit=4)
    assert [claim.key for claim in claims] == ["key-0", "key-1", "key-2", "key-3"]
    queue.ack_many(lost)  # a stale claim removes nothing
    assert queue.stats() == {"queued": 0, "running": 4, "dead": 0}
    queue.ack_many(claims[:3])
    queue.ack_many([])
    assert queue.stats() == {"queued": 0, "running": 1, "dead": 0}
    assert queue.extend_many(claims, 30) == [False, False, False, True]
    queue.ack_many(claims)
    assert queue.stats() == {"queued": 0, "running": 0, "dead": 0}
