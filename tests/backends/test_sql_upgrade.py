"""Databases written before namespaces are upgraded on first use: no job is lost.

The old schemas below are those the previous versions of the two modules
created, written out by hand.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
from backend_contract import BackendSpec
from sql_support import SQL_BACKENDS, Raw, open_at_and_drain

from offload.backends import ExpiryRule, IndexEntry

OLD_SCHEMAS = {
    "sqlite": """
        CREATE TABLE offload_cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL,
                                    path TEXT, query TEXT, failed INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX offload_cache_path ON offload_cache (path) WHERE path IS NOT NULL;
        CREATE INDEX offload_cache_expires ON offload_cache (expires);
        CREATE TABLE offload_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, payload BLOB NOT NULL,
                                   leased_until REAL, token TEXT);
        CREATE INDEX offload_jobs_lease ON offload_jobs (leased_until)
    """,
    "postgres": """
        CREATE UNLOGGED TABLE offload_cache (key text PRIMARY KEY, value bytea NOT NULL, expires timestamptz NOT NULL,
                                             path text, query text, failed boolean NOT NULL DEFAULT false);
        CREATE INDEX offload_cache_path ON offload_cache (path text_pattern_ops) WHERE path IS NOT NULL;
        CREATE INDEX offload_cache_expires ON offload_cache (expires);
        CREATE TABLE offload_jobs (id bigserial PRIMARY KEY, key text NOT NULL, payload bytea NOT NULL,
                                   leased_until timestamptz, token text);
        CREATE INDEX offload_jobs_leased_until ON offload_jobs (leased_until)
    """,
}


@pytest.fixture(params=SQL_BACKENDS)
def old(request: pytest.FixtureRequest) -> Iterator[tuple[BackendSpec, Raw]]:
    """A database as the previous version left it: a waiting job, and a running one whose lease ran out."""
    spec: BackendSpec = request.getfixturevalue(f"{request.param}_spec")
    raw = Raw(spec)
    raw.script(OLD_SCHEMAS[spec.name])
    raw.run("INSERT INTO offload_jobs (key, payload) VALUES (?, ?)", ("waiting", b"one"))
    a_minute_ago = "?" if spec.name == "sqlite" else "now() - interval '1 minute' + ? * interval '0'"
    raw.run(
        f"INSERT INTO offload_jobs (key, payload, leased_until, token) VALUES (?, ?, {a_minute_ago}, ?)",
        ("lost", b"two", time.time() - 60, "t"),
    )
    yield spec, raw
    raw.close()


def test_old_jobs_are_claimable_after_the_upgrade(old: tuple[BackendSpec, Raw]) -> None:
    spec, _ = old
    queue = spec.open_queue()
    try:
        assert queue.stats() == {"queued": 2, "running": 0, "dead": 0}
        claims = [queue.claim(lease=30, wait=0) for _ in range(2)]
        assert [(claim.key, claim.payload) for claim in claims if claim] == [("waiting", b"one"), ("lost", b"two")]
        for claim in claims:
            assert claim is not None
            queue.ack(claim)
        assert queue.claim(lease=30, wait=0) is None
        assert queue.namespaces() == []
    finally:
        queue.close()


def test_old_jobs_go_to_the_default_namespace(old: tuple[BackendSpec, Raw]) -> None:
    spec, _ = old
    shop = spec.open_queue("shop")
    try:
        assert shop.claim(lease=30, wait=0) is None
        assert shop.namespaces() == ["offload"]
    finally:
        shop.close()


def test_several_processes_upgrade_at_once_and_claim_each_old_job_once(old: tuple[BackendSpec, Raw]) -> None:
    spec, raw = old
    for number in range(20):
        raw.run("INSERT INTO offload_jobs (key, payload) VALUES (?, ?)", (f"key-{number}", b"x"))
    moment = time.time() + 3  # every process is started by then, and opens the old database at once
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        claimed = [key for keys in pool.map(open_at_and_drain, [spec] * 4, [moment] * 4) for key in keys]
    assert sorted(claimed) == sorted(["waiting", "lost", *(f"key-{number}" for number in range(20))])


def test_sqlite_keeps_old_answers_in_the_namespace_their_key_names(sqlite_spec: BackendSpec) -> None:
    raw = Raw(sqlite_spec)
    raw.script(OLD_SCHEMAS["sqlite"])
    expires = time.time() + 600
    for key, path in [("shop:r:1", "/a"), ("offload:r:2", "/a"), ("offload:p:3", None)]:
        raw.run(
            "INSERT INTO offload_cache (key, value, expires, path, query) VALUES (?, ?, ?, ?, '')",
            (key, key.encode(), expires, path),
        )
    shop, default = sqlite_spec.open_cache("shop"), sqlite_spec.open_cache()
    try:
        assert shop.stats() == {"cached": 1, "failed": 0} and default.stats() == {"cached": 1, "failed": 0}
        assert default.get("offload:p:3") == b"offload:p:3"  # markers are kept too
        assert shop.expire(ExpiryRule("/a")) == 1
        assert shop.get("shop:r:1") is None and default.get("offload:r:2") == b"offload:r:2"
        assert raw.run("PRAGMA user_version") == [(2,)]
        indexes = {row[0] for row in raw.run("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "offload_cache_answers" in indexes and "offload_cache_path" not in indexes
        assert "offload_jobs_queue" in indexes and "offload_jobs_lease" not in indexes
    finally:
        shop.close()
        default.close()
        raw.close()


def test_postgres_recreates_the_unlogged_cache_and_then_leaves_the_schema_alone(postgres_spec: BackendSpec) -> None:
    from offload.backends.postgres import migrate

    raw = Raw(postgres_spec)
    raw.script(OLD_SCHEMAS["postgres"])
    raw.run(
        "INSERT INTO offload_cache (key, value, expires, path) "
        "VALUES ('offload:r:1', 'x', now() + interval '1 hour', '/a')"
    )
    cache = postgres_spec.open_cache()
    try:
        assert cache.get("offload:r:1") is None  # the cache starts empty, as after a crash
        cache.set("offload:r:1", b"new", 60, IndexEntry("/a", "", tags=("t",)))
        tables = "SELECT c.relname, c.oid FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
        before = dict(raw.run(tables + " AND c.relkind = 'r'"))
        assert postgres_spec.cache_url is not None
        migrate(postgres_spec.cache_url)
        assert dict(raw.run(tables + " AND c.relkind = 'r'")) == before
        assert cache.expire(ExpiryRule(tag="t")) == 1
        indexes = {row[0] for row in raw.run(tables + " AND c.relkind = 'i'")}
        assert "offload_jobs_queue" in indexes and "offload_jobs_leased_until" not in indexes
    finally:
        cache.close()
        raw.close()
