"""Rows another program wrote, with values that are not bytes: misses and empty payloads, never errors.

SQLite stores whatever a writer gives a column, so a TEXT or INTEGER value can
sit where offload keeps BLOBs. PostgreSQL's ``bytea`` columns hold only bytes,
so there the foreign values that can exist are bytes offload did not write:
counters over them start again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from backend_contract import BackendSpec
from sql_support import SQL_BACKENDS, Raw

from offload.backends import Cache, ExpiryRule, IndexEntry, Queue

FOREIGN = ["plain text", 42, 4.5]


@pytest.fixture
def raw(sqlite_spec: BackendSpec) -> Iterator[Raw]:
    opened = sqlite_spec.open_cache()
    opened.stats()  # the tables exist
    opened.close()
    connection = Raw(sqlite_spec)
    yield connection
    connection.close()


@pytest.fixture
def sqlite_cache(sqlite_spec: BackendSpec) -> Iterator[Cache]:
    cache = sqlite_spec.open_cache()
    yield cache
    cache.close()


@pytest.fixture
def sqlite_queue(sqlite_spec: BackendSpec) -> Iterator[Queue]:
    queue = sqlite_spec.open_queue()
    yield queue
    queue.close()


def plant(raw: Raw, key: str, value: object, path: str | None = None) -> None:
    raw.run(
        "INSERT OR REPLACE INTO offload_cache (key, value, expires, path, query, namespace) VALUES (?, ?, ?, ?, '', ?)",
        (key, value, time.time() + 600, path, "offload"),
    )


@pytest.mark.parametrize("value", FOREIGN, ids=["text", "integer", "real"])
def test_sqlite_foreign_values_read_as_misses(raw: Raw, sqlite_cache: Cache, value: object) -> None:
    plant(raw, "answer", value, "/page")
    assert sqlite_cache.get("answer") is None
    assert sqlite_cache.take("answer") is None
    taken, answer, _ = sqlite_cache.start_job("running", "pending", "answer", b"m", 30)
    assert (taken, answer) == (True, None)


@pytest.mark.parametrize("value", FOREIGN, ids=["text", "integer", "real"])
def test_sqlite_foreign_values_count_as_absent_for_add(raw: Raw, sqlite_cache: Cache, value: object) -> None:
    plant(raw, "marker", value)
    assert sqlite_cache.add("marker", b"ours", 30) is True
    assert sqlite_cache.get("marker") == b"ours"
    assert sqlite_cache.add("marker", b"again", 30) is False
    plant(raw, "running", value)  # a job's lock is an add too
    assert sqlite_cache.start_job("running", "pending", "answer", b"m", 30)[0] is True


@pytest.mark.parametrize("value", [*FOREIGN, "12"], ids=["text", "integer", "real", "digits-as-text"])
def test_sqlite_counters_over_foreign_values_start_again(raw: Raw, sqlite_cache: Cache, value: object) -> None:
    plant(raw, "counter", value)
    assert sqlite_cache.incr("counter", 30) == 1
    assert sqlite_cache.incr("counter", 30) == 2


def test_sqlite_soft_expiry_removes_a_foreign_value_instead_of_rewriting_it(raw: Raw, sqlite_cache: Cache) -> None:
    plant(raw, "foreign", "text", "/page/1")
    sqlite_cache.set("ours", b"value", 60, IndexEntry("/page/2", ""))
    assert sqlite_cache.expire(ExpiryRule("/page/*", soft=True), lambda value: value + b" (stale)") == 2
    assert sqlite_cache.get("ours") == b"value (stale)"
    assert raw.run("SELECT count(*) FROM offload_cache WHERE key = 'foreign'") == [(0,)]


@pytest.mark.parametrize("payload", FOREIGN, ids=["text", "integer", "real"])
def test_sqlite_jobs_with_foreign_payloads_are_claimed_empty(raw: Raw, sqlite_queue: Queue, payload: object) -> None:
    raw.run("INSERT INTO offload_jobs (key, payload) VALUES (?, ?)", ("foreign", payload))
    raw.run("INSERT INTO offload_jobs (key, payload) VALUES (?, ?)", (7, payload))
    sqlite_queue.push("ours", b"payload")
    claims = [sqlite_queue.claim(lease=30, wait=0) for _ in range(3)]
    assert [(claim.key, claim.payload) for claim in claims if claim] == [
        ("foreign", b""),
        ("7", b""),
        ("ours", b"payload"),
    ]
    first, second, _ = claims
    assert first is not None and second is not None
    sqlite_queue.ack(first)
    sqlite_queue.bury(second, "not offload's")
    [dead] = sqlite_queue.dead()
    assert (dead.key, dead.payload, dead.error) == ("7", b"", "not offload's")
    assert sqlite_queue.revive(dead.job_id) is True
    again = sqlite_queue.claim(lease=30, wait=0)
    assert again is not None and again.payload == b""


@pytest.mark.parametrize("name", SQL_BACKENDS)
@pytest.mark.parametrize("value", [b"abc", b"\xff\xfe", b"", b"9" * 30], ids=["letters", "not-utf-8", "empty", "huge"])
def test_counters_over_values_that_are_not_counts_start_again(
    request: pytest.FixtureRequest, name: str, value: bytes
) -> None:
    spec: BackendSpec = request.getfixturevalue(f"{name}_spec")
    cache = spec.open_cache()
    try:
        cache.set("counter", value, 30)
        assert cache.incr("counter", 30) == 1
        cache.set("counter", b"41", 30)
        assert cache.incr("counter", 30) == 42
        assert cache.get("counter") == b"42"
    finally:
        cache.close()
