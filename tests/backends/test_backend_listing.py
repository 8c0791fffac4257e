"""The listings operators read (``Queue.waiting``, ``Queue.running``), run against every backend."""

from __future__ import annotations

import time

import pytest

from offload.backends import Queue


@pytest.mark.one_shard
def test_waiting_lists_the_jobs_a_claim_takes_next_without_taking_them(queue: Queue) -> None:
    assert queue.waiting() == [] and queue.running() == []
    for number in range(3):
        queue.push(f"key-{number}", f"payload-{number}".encode())
    listed = queue.waiting()
    assert [(job.key, job.payload, job.leased_until) for job in listed] == [
        ("key-0", b"payload-0", None),
        ("key-1", b"payload-1", None),
        ("key-2", b"payload-2", None),
    ]
    assert [job.key for job in queue.waiting(limit=1)] == ["key-0"]
    assert queue.stats()["queued"] == 3  # listing took nothing
    claim = queue.claim(lease=30, wait=0.2)
    assert claim is not None and claim.job_id == listed[0].job_id


def test_running_lists_leased_jobs_with_the_end_of_their_lease(queue: Queue) -> None:
    queue.push("first", b"1")
    queue.push("second", b"2")
    short = queue.claim(lease=20, wait=0.2)
    long = queue.claim(lease=60, wait=0.2)
    assert short is not None and long is not None
    running = queue.running()
    assert [(job.job_id, job.key, job.payload) for job in running] == [
        (short.job_id, "first", b"1"),
        (long.job_id, "second", b"2"),
    ]
    now = time.time()
    assert running[0].leased_until is not None and abs(running[0].leased_until - (now + 20)) < 3
    assert running[1].leased_until is not None and abs(running[1].leased_until - (now + 60)) < 3
    assert [job.job_id for job in queue.running(limit=1)] == [short.job_id]
    assert queue.waiting() == []
    queue.ack(short)
    queue.release(long)
    assert queue.running() == []
    assert [job.key for job in queue.waiting()] == ["second"]


def test_a_lapsed_lease_is_waiting_again(queue: Queue) -> None:
    queue.push("key", b"payload")
    assert queue.claim(lease=0.3, wait=0.2) is not None
    deadline = time.monotonic() + 10
    while queue.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queue.running() == []
    assert [job.key for job in queue.waiting()] == ["key"]


def test_listings_stay_in_their_namespace(spec: object, queue: Queue) -> None:
    other = spec.open_queue("elsewhere")  # type: ignore[attr-defined]
    try:
        other.push("theirs", b"x")
        assert queue.waiting() == []
        assert [job.key for job in other.waiting()] == ["theirs"]
    finally:
        other.close()
