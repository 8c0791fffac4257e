"""PostgreSQL's waiting workers take turns: one listens for pushes, the others wait for its advisory lock.

A ``NOTIFY`` reaches every listening session, so a push would otherwise wake
every idle worker of the farm to race for one job. These tests read the turn
in ``pg_locks`` of a real server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from backend_contract import eventually

from offload.backends import open_backend
from offload.backends.postgres import PostgresQueue, turn_key
from offload.errors import BackendUnavailable


@pytest.fixture
def queue(postgres_url: str) -> Iterator[PostgresQueue]:
    opened = open_backend(postgres_url).queue
    assert isinstance(opened, PostgresQueue)
    yield opened
    opened.close()


def turn_sessions(queue: PostgresQueue) -> tuple[list[int], list[int]]:
    """The sessions holding the queue's turn, and those waiting for it (their pids)."""
    with psycopg.connect(queue.db.conninfo, autocommit=True) as conn:
        unsigned = turn_key(queue.turn) & 0xFFFFFFFFFFFFFFFF
        rows = conn.execute(
            "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
            "AND classid::bigint = %s AND objid::bigint = %s",
            (unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchall()
    return [pid for pid, granted in rows if granted], [pid for pid, granted in rows if not granted]


def waiting(queue: PostgresQueue, count: int, wait: float, results: list[Any]) -> list[threading.Thread]:
    """``count`` threads that each claim one job, waiting up to ``wait`` seconds; what each got goes to ``results``."""

    def claim() -> None:
        try:
            results.append(queue.claim(lease=60, wait=wait))
        except BackendUnavailable as error:
            results.append(error)

    threads = [threading.Thread(target=claim) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_one_waiting_worker_listens_while_the_others_wait_for_the_turn(queue: PostgresQueue) -> None:
    results: list[Any] = []
    threads = waiting(queue, 4, 60, results)
    assert eventually(lambda: tuple(map(len, turn_sessions(queue))) == (1, 3), within=20)
    for number in range(4):  # each push is passed from one turn to the next until every waiter has a job
        queue.push(f"job-{number}", b"x")
    for thread in threads:
        thread.join(120)
    assert sorted(claim.key for claim in results) == ["job-0", "job-1", "job-2", "job-3"]
    assert eventually(lambda: turn_sessions(queue) == ([], []), within=10)  # no pooled session kept the turn


def test_the_turn_passes_on_when_its_session_dies(queue: PostgresQueue) -> None:
    results: list[Any] = []
    threads = waiting(queue, 2, 8, results)
    assert eventually(lambda: tuple(map(len, turn_sessions(queue))) == (1, 1), within=20)
    (holder,), _ = turn_sessions(queue)
    with psycopg.connect(queue.db.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
    assert eventually(lambda: len(turn_sessions(queue)[0]) == 1 and turn_sessions(queue)[0] != [holder], within=20)
    queue.push("after", b"x")
    queue.push("after-2", b"x")
    for thread in threads:
        thread.join(60)
    claimed = [result.key for result in results if result is not None and not isinstance(result, Exception)]
    assert "after" in claimed
    assert len(claimed) == len(set(claimed))
