"""PostgreSQL backend (``postgresql://``, ``postgres://``): cache and queue in two tables.

Uses psycopg 3 (``pip install "offload[postgres]"``). The atomic add is an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` whose row count says who
won; a worker claims the oldest waiting job with ``FOR UPDATE SKIP LOCKED``, so
workers never block each other; a push sends ``NOTIFY`` and waiting workers
sleep in ``LISTEN`` (the design of queue_classic), looking again every second
for leases that ran out. All times are the server's clock. Connections come
from a small pool, safe across threads and renewed after a fork; they fail fast
(``connect_timeout`` 3 s unless the URL sets one), so an outage is a
:class:`~offload.errors.BackendUnavailable`, never a hung request.

``?schema=name`` puts the tables in that schema (created if missing); without
it they go to the first schema of the search path. The tables are created on
first use, under an advisory lock so that concurrent first uses are safe, or
beforehand by :func:`migrate` (``offload migrate``)::

    CREATE UNLOGGED TABLE offload_cache (
        key     text PRIMARY KEY,
        value   bytea NOT NULL,
        expires timestamptz NOT NULL,
        path    text,                 -- canonical path of a cached answer; NULL for markers
        query   text,                 -- its canonical query string
        failed  boolean NOT NULL DEFAULT false
    );
    CREATE INDEX offload_cache_path ON offload_cache (path text_pattern_ops) WHERE path IS NOT NULL;
    CREATE INDEX offload_cache_expires ON offload_cache (expires);

    CREATE TABLE offload_jobs (
        id           bigserial PRIMARY KEY,
        key          text NOT NULL,
        payload      bytea NOT NULL,
        leased_until timestamptz,     -- NULL or past: waiting; future: running
        token        text             -- the claim holding the lease
    );
    CREATE INDEX offload_jobs_leased_until ON offload_jobs (leased_until);

Durability: the cache table is ``UNLOGGED`` and offload's sessions commit with
``synchronous_commit = off``, so no request or job step waits for a disk flush
(a pickup takes a millisecond or two instead of several flushes). What a crash
of the PostgreSQL server can cost is bounded and heals by itself: crash
recovery empties the unlogged cache, pending markers included, and loses at
most the last fraction of a second of queue changes; a lost job's URL has no
marker left, so the next GET queues it again, and a lost claim or acknowledgement
only means a job runs once more. Unlogged tables are not replicated: after a
failover to a standby the cache starts empty.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from offload.backends.base import Cache, Claim, IndexEntry, Queue
from offload.errors import BackendUnavailable, MissingDependency, QueueFull
from offload.keys import canonical_path, params_match

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
except ImportError as error:  # pragma: no cover - depends on the environment
    raise MissingDependency(
        f'the PostgreSQL backend needs psycopg 3: pip install "offload[postgres]" ({error})'
    ) from None

if TYPE_CHECKING:
    from offload.backends import Backend

T = TypeVar("T")

#: How often a waiting worker looks for leases that ran out, NOTIFY or not.
RECHECK = 1.0

#: Idle connections kept per pool; more are opened under load and closed after use.
POOL_SIZE = 8

# Connections inherited through fork(): never used nor closed in the child,
# where closing them would end the parent's sessions.
_INHERITED: list[psycopg.Connection[Any]] = []

_SCHEMA = """
CREATE UNLOGGED TABLE IF NOT EXISTS {cache} (
    key text PRIMARY KEY,
    value bytea NOT NULL,
    expires timestamptz NOT NULL,
    path text,
    query text,
    failed boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS {cache_path} ON {cache} (path text_pattern_ops) WHERE path IS NOT NULL;
CREATE INDEX IF NOT EXISTS {cache_expires} ON {cache} (expires);
CREATE TABLE IF NOT EXISTS {jobs} (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    payload bytea NOT NULL,
    leased_until timestamptz,
    token text
);
CREATE INDEX IF NOT EXISTS {jobs_lease} ON {jobs} (leased_until);
"""


def open_backend(url: str) -> Backend:
    from offload.backends import Backend

    database = PostgresDatabase(url)
    return Backend(url, PostgresCache(database), PostgresQueue(database))


def migrate(url: str) -> None:
    """Create offload's tables (and schema) now, rather than on first use."""
    database = PostgresDatabase(url)
    try:
        with database.connection() as conn:
            database.create_schema(conn)
    finally:
        database.close()


class PostgresDatabase:
    """A pool of autocommit connections to one database, with the table names of one schema."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.schema = options.pop("schema", "") or None
        options.setdefault("connect_timeout", "3")
        self.conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(options)))
        self.display_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))

        def table(name: str) -> sql.Composable:
            return sql.Identifier(self.schema, name) if self.schema else sql.Identifier(name)

        self.cache = table("offload_cache")
        self.jobs = table("offload_jobs")
        self.channel = f"offload_jobs_{self.schema}"[:63] if self.schema else "offload_jobs"
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._listeners: list[psycopg.Connection[Any]] = []
        self._pid = os.getpid()
        self._schema_ready = False

    # -- connections ------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            # UTF8 on the client side even when the database is SQL_ASCII: psycopg
            # would then return text columns (keys) as bytes. offload's text is ASCII.
            conn = psycopg.connect(self.conninfo, autocommit=True, client_encoding="utf8")
            conn.execute("SET synchronous_commit = off")  # see "Durability" in the module docstring
            return conn
        except psycopg.Error as error:
            raise BackendUnavailable(f"PostgreSQL at {self.display_url}: {error}".strip()) from error

    def _take(self, pool: list[psycopg.Connection[Any]]) -> psycopg.Connection[Any] | None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours
                _INHERITED.extend(self._idle + self._listeners)
                self._idle, self._listeners, self._pid = [], [], os.getpid()
            while pool:
                conn = pool.pop()
                if not conn.closed and not conn.broken:
                    return conn
        return None

    def _give(self, pool: list[psycopg.Connection[Any]], conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(pool) < POOL_SIZE and not conn.closed:
                pool.append(conn)
                return
        conn.close()

    @contextlib.contextmanager
    def connection(self, listening: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one operation; an error of the connection drops it and every idle one."""
        pool = self._listeners if listening else self._idle
        conn = self._take(pool)
        if conn is None:
            conn = self._connect()
            try:
                if not self._schema_ready:
                    self.create_schema(conn)
                if listening:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            except BaseException:
                conn.close()
                raise
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            conn.close()
            self.close()  # the others are likely dead too: reconnect on next use
            raise BackendUnavailable(f"PostgreSQL at {self.display_url}: {error}".strip()) from error
        except BaseException:
            self._give(pool, conn)
            raise
        self._give(pool, conn)

    def run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``operation`` on a pooled connection; create the tables again if they were dropped."""
        for attempt in (1, 2):
            try:
                with self.connection() as conn:
                    return operation(conn)
            except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName) as error:
                self._schema_ready = False
                if attempt == 2:
                    raise BackendUnavailable(f"PostgreSQL at {self.display_url}: {error}".strip()) from error
            except psycopg.Error as error:  # anything else the server refuses: an outage for the caller
                raise BackendUnavailable(f"PostgreSQL at {self.display_url}: {error}".strip()) from error
        raise AssertionError("unreachable")

    def create_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create the schema and tables if missing, one process at a time."""
        names = {
            "cache": self.cache,
            "jobs": self.jobs,
            "cache_path": sql.Identifier("offload_cache_path"),
            "cache_expires": sql.Identifier("offload_cache_expires"),
            "jobs_lease": sql.Identifier("offload_jobs_leased_until"),
        }
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('offload.migrate'))")
            if self.schema:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(sql.SQL(statement).format(**names))
        self._schema_ready = True

    def close(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                return
            idle, self._idle, self._listeners = self._idle + self._listeners, [], []
        for conn in idle:
            conn.close()


class PostgresCache(Cache):
    """Cache entries as rows; expired rows are ignored on read and swept now and then."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.db = database
        self._writes = 0

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(cache=self.db.cache)

    def get(self, key: str) -> bytes | None:
        query = self._q("SELECT value FROM {cache} WHERE key = %s AND expires > now()")
        row = self.db.run(lambda conn: conn.execute(query, (key,)).fetchone())
        return None if row is None else bytes(row[0])

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        query = self._q(
            "INSERT INTO {cache} AS c (key, value, expires) VALUES (%s, %s, now() + %s * interval '1 second') "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires, "
            "path = NULL, query = NULL, failed = false WHERE c.expires <= now()"
        )
        return self.db.run(lambda conn: conn.execute(query, (key, value, ttl)).rowcount) == 1

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        path, query_string, failed = (index.path, index.query, index.failed) if index else (None, None, False)
        query = self._q(
            "INSERT INTO {cache} (key, value, expires, path, query, failed) "
            "VALUES (%s, %s, now() + %s * interval '1 second', %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires, "
            "path = excluded.path, query = excluded.query, failed = excluded.failed"
        )
        self.db.run(lambda conn: conn.execute(query, (key, value, ttl, path, query_string, failed)))
        self._writes += 1
        if self._writes % 1000 == 0:
            sweep = self._q("DELETE FROM {cache} WHERE expires <= now()")
            self.db.run(lambda conn: conn.execute(sweep))

    def touch(self, key: str, ttl: float) -> bool:
        query = self._q(
            "UPDATE {cache} SET expires = now() + %s * interval '1 second' WHERE key = %s AND expires > now()"
        )
        return self.db.run(lambda conn: conn.execute(query, (ttl, key)).rowcount) == 1

    def delete(self, key: str) -> None:
        query = self._q("DELETE FROM {cache} WHERE key = %s")
        self.db.run(lambda conn: conn.execute(query, (key,)))

    def expire(self, pattern: str, params: Sequence[tuple[str, str]] = ()) -> int:
        select = self._q(
            "SELECT key, query FROM {cache} WHERE path IS NOT NULL AND path LIKE %s AND expires > now() FOR UPDATE"
        )
        delete = self._q("DELETE FROM {cache} WHERE key = ANY(%s)")

        def drop(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                rows = conn.execute(select, (like_pattern(pattern),)).fetchall()
                doomed = [key for key, query in rows if params_match(query, params)]
                if doomed:
                    conn.execute(delete, (doomed,))
            return len(doomed)

        return self.db.run(drop)

    def stats(self) -> dict[str, int]:
        query = self._q(
            "SELECT count(*) FILTER (WHERE NOT failed), count(*) FILTER (WHERE failed) FROM {cache} "
            "WHERE path IS NOT NULL AND expires > now()"
        )
        cached, failed = self.db.run(lambda conn: conn.execute(query).fetchone()) or (0, 0)
        return {"cached": int(cached), "failed": int(failed)}

    def close(self) -> None:
        self.db.close()


def like_pattern(pattern: str) -> str:
    """The pattern as a ``LIKE`` expression over canonical paths: ``*`` becomes ``%``, the rest is literal.

    >>> like_pattern("/a_b/*")
    '/a\\\\_b/%'
    """
    parts = [canonical_path(part.encode("utf-8", "surrogateescape")) for part in pattern.split("*")]
    return "%".join(part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for part in parts)


class PostgresQueue(Queue):
    """Jobs as rows: a claim leases the oldest waiting row with ``FOR UPDATE SKIP LOCKED``."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.db = database

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(jobs=self.db.jobs)

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        count = self._q("SELECT count(*) FROM {jobs} WHERE leased_until IS NULL OR leased_until <= now()")
        insert = self._q("INSERT INTO {jobs} (key, payload) VALUES (%s, %s)")

        def push(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction():
                if limit is not None:
                    # One capped push at a time per queue, so the count and the insert are one step.
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"offload.push.{self.db.channel}",))
                    row = conn.execute(count).fetchone()
                    if row is not None and row[0] >= limit:
                        return False
                conn.execute(insert, (key, payload))
                conn.execute("SELECT pg_notify(%s, '')", (self.db.channel,))  # delivered on commit
            return True

        if not self.db.run(push):
            raise QueueFull()

    def claim(self, lease: float, wait: float) -> Claim | None:
        deadline = time.monotonic() + wait
        if wait <= 0:
            return self._claim_now(lease)
        try:
            with self.db.connection(listening=True) as listener:  # listening before looking: no lost wake-up
                while True:
                    claim = self._claim_now(lease)
                    remaining = deadline - time.monotonic()
                    if claim is not None or remaining <= 0:
                        return claim
                    for _ in listener.notifies(timeout=min(remaining, RECHECK), stop_after=1):
                        pass
        except psycopg.Error as error:
            raise BackendUnavailable(f"PostgreSQL at {self.db.display_url}: {error}".strip()) from error

    def _claim_now(self, lease: float) -> Claim | None:
        token = uuid.uuid4().hex
        query = self._q(
            "UPDATE {jobs} SET leased_until = now() + %s * interval '1 second', token = %s "
            "WHERE id = (SELECT id FROM {jobs} WHERE leased_until IS NULL OR leased_until <= now() "
            "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, key, payload"
        )
        row = self.db.run(lambda conn: conn.execute(query, (lease, token)).fetchone())
        return None if row is None else Claim(str(row[0]), row[1], bytes(row[2]), token)

    def extend(self, claim: Claim, lease: float) -> bool:
        query = self._q(
            "UPDATE {jobs} SET leased_until = now() + %s * interval '1 second' WHERE id = %s AND token = %s"
        )
        return self.db.run(lambda conn: conn.execute(query, (lease, int(claim.job_id), claim.token)).rowcount) == 1

    def ack(self, claim: Claim) -> None:
        query = self._q("DELETE FROM {jobs} WHERE id = %s AND token = %s")
        self.db.run(lambda conn: conn.execute(query, (int(claim.job_id), claim.token)))

    def release(self, claim: Claim) -> None:
        query = self._q("UPDATE {jobs} SET leased_until = NULL, token = NULL WHERE id = %s AND token = %s")

        def release(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                if conn.execute(query, (int(claim.job_id), claim.token)).rowcount:
                    conn.execute("SELECT pg_notify(%s, '')", (self.db.channel,))

        self.db.run(release)

    def stats(self) -> dict[str, int]:
        query = self._q(
            "SELECT count(*) FILTER (WHERE leased_until IS NULL OR leased_until <= now()), "
            "count(*) FILTER (WHERE leased_until > now()) FROM {jobs}"
        )
        queued, running = self.db.run(lambda conn: conn.execute(query).fetchone()) or (0, 0)
        return {"queued": int(queued), "running": int(running)}

    def close(self) -> None:
        self.db.close()
