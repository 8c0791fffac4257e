"""PostgreSQL backend (``postgresql://``, ``postgres://``): cache and queue in a few tables, for many machines.

Uses psycopg 3 (the ``postgres`` extra). The atomic add is an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` whose row count says who
won; a worker claims the oldest waiting job of its namespace with ``FOR UPDATE
SKIP LOCKED``, so workers never block each other; a push sends ``NOTIFY``, and
the waiting worker whose turn it is sleeps in ``LISTEN`` (the design of
queue_classic, without its herd: the others wait for the turn, an advisory
lock), looking again every second for leases that ran out. All times are the server's clock.
Connections come from a small pool, safe across threads and renewed after a
fork; they fail fast (``connect_timeout`` 3 s unless the URL sets one), so an
outage is a :class:`~offload.errors.BackendUnavailable`, never a hung request.

``?schema=name`` puts the tables in that schema (created if missing); without
it they go to the first schema of the search path. The tables are created on
first use, under an advisory lock so that concurrent first uses are safe, or
beforehand by :func:`migrate` (``offload migrate``)::

    CREATE UNLOGGED TABLE offload_cache (
        key       text PRIMARY KEY,
        value     bytea NOT NULL,
        expires   timestamptz NOT NULL,
        path      text,               -- canonical path of a cached answer; NULL for markers and counters
        query     text,               -- its canonical query string
        failed    boolean NOT NULL DEFAULT false,
        namespace text NOT NULL,
        tags      text[]              -- NULL when untagged
    );  -- indexed by (namespace, path) for answers, GIN on tags, and expires for the sweep
    CREATE TABLE offload_jobs (
        id bigserial PRIMARY KEY,     -- queue order: a release takes a new id, the back of the queue
        key text NOT NULL, payload bytea NOT NULL,
        leased_until timestamptz,     -- NULL or past: claimable; future: running, or held back by a release
        token text,                   -- the claim holding the lease; NULL while waiting
        namespace text NOT NULL
    );  -- indexed by (namespace, id)
    CREATE TABLE offload_dead (id, namespace, key, payload, error, buried timestamptz);   -- dead letters
    CREATE TABLE offload_epochs (namespace text PRIMARY KEY, epoch bigint);   -- the last expiry's number
    CREATE TABLE offload_expiries (namespace, epoch, logged, rule,            -- the expiry log, an hour at least
                                   path_like, tag);                           -- for the check in SQL, see below

Namespaces: values are found by key, and keys already start with the
namespace, so only what is searched by something else carries a
``namespace`` column, first in its index. Channels are per namespace too
(``offload.jobs.<schema>.<namespace>`` and ``offload.stored...``, hashed
when longer than PostgreSQL's 63 bytes).

An expiry races finishing jobs without a table lock: ``expire()`` bumps its
namespace's row in ``offload_epochs`` (``ON CONFLICT DO UPDATE``), logs the
rule, then looks for answers in later statements of the same transaction;
``finish_job()`` reads that row ``FOR SHARE`` in the statement that stores
the answer (the row exists from the namespace's first ``start_job()`` or
``epoch()`` on). Whichever locks the row first, the other waits for its
commit: an expiry then sees the stored answer, or the job reads the new epoch
(a locked read returns the newest version, whatever the statement's
snapshot). The log keeps each rule's ``LIKE`` pattern and tag, so the common
case (nothing logged since the job began, or nothing that can match) is
decided in that one statement; otherwise the rules are read again and matched
exactly in Python.

Upgrades: the first process to open a database from before namespaces
upgrades it under the advisory lock. ``offload_jobs`` gets its ``namespace``
column (``ALTER TABLE ... ADD COLUMN ... DEFAULT 'offload'``, no rewrite):
its jobs are kept and go to the default namespace, as old jobs carried none
(an app that set another namespace should let its queue drain first, or move
them with one ``UPDATE``). The unlogged cache is dropped and created again,
as a crash would: answers are computed again on the next request. The
``namespace`` columns default to ``offload``, so processes of the previous
version keep working during a rolling restart. A process that finds the
schema current does no DDL, only a catalog query.

Durability: the cache table is ``UNLOGGED`` and offload's sessions commit with
``synchronous_commit = off``, so no request or job step waits for a disk flush
(a pickup takes a millisecond or two instead of several flushes). What a crash
of the PostgreSQL server can cost is bounded and heals by itself: crash
recovery empties the unlogged cache, pending markers included, and loses at
most the last fraction of a second of queue changes; a lost job's URL has no
marker left, so the next GET queues it again, and a lost claim or acknowledgement
only means a job runs once more. Unlogged tables are not replicated: after a
failover to a standby the cache starts empty. The epochs and the log are
logged tables: an epoch that went backwards would hide later expiries.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from offload.backends import DEFAULT_NAMESPACE, Cache, Claim, DeadJob, ExpiryRule, IndexEntry, Queue
from offload.backends.base import JobFinish, JobStart, QueuedJob, Restamp, as_bytes
from offload.backends.sql_common import (
    LOG_SECONDS,
    claimed,
    dead_letter,
    expiry_after,
    plan_expiry,
    queued_job,
    restamped,
)
from offload.errors import BackendUnavailable, MissingDependency, QueueFull, install_hint
from offload.keys import canonical_path

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
except ImportError as error:  # pragma: no cover - depends on the environment
    raise MissingDependency(f"the PostgreSQL backend needs psycopg 3: {install_hint('postgres')} ({error})") from None

if TYPE_CHECKING:
    from offload.backends import Backend

T = TypeVar("T")

log = logging.getLogger("offload.postgres")

#: How often a waiting worker looks for leases that ran out, NOTIFY or not.
RECHECK = 1.0

#: Idle connections kept per pool; more are opened under load and closed after use.
POOL_SIZE = 8

#: The longest NOTIFY payload PostgreSQL takes, in bytes (a longer key is not announced).
NOTIFY_PAYLOAD = 7999

# Connections inherited through fork(): never used nor closed in the child,
# where closing them would end the parent's sessions.
_INHERITED: list[psycopg.Connection[Any]] = []

_TABLES = """
CREATE UNLOGGED TABLE IF NOT EXISTS {cache} (
    key text PRIMARY KEY,
    value bytea NOT NULL,
    expires timestamptz NOT NULL,
    path text,
    query text,
    failed boolean NOT NULL DEFAULT false,
    namespace text NOT NULL DEFAULT {default},
    tags text[]
);
CREATE INDEX IF NOT EXISTS {cache_answers} ON {cache} (namespace, path text_pattern_ops)
    INCLUDE (expires, failed) WHERE path IS NOT NULL;
CREATE INDEX IF NOT EXISTS {cache_tags} ON {cache} USING gin (tags) WHERE tags IS NOT NULL;
CREATE INDEX IF NOT EXISTS {cache_expires} ON {cache} (expires);
CREATE TABLE IF NOT EXISTS {jobs} (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    payload bytea NOT NULL,
    leased_until timestamptz,
    token text,
    namespace text NOT NULL DEFAULT {default}
);
CREATE INDEX IF NOT EXISTS {jobs_queue} ON {jobs} (namespace, id);
DROP INDEX IF EXISTS {old_jobs_index};
CREATE TABLE IF NOT EXISTS {dead} (
    id bigint PRIMARY KEY,
    namespace text NOT NULL,
    key text NOT NULL,
    payload bytea NOT NULL,
    error text NOT NULL,
    buried timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS {dead_newest} ON {dead} (namespace, buried, id);
CREATE TABLE IF NOT EXISTS {epochs} (
    namespace text PRIMARY KEY,
    epoch bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {expiries} (
    namespace text NOT NULL,
    epoch bigint NOT NULL,
    logged timestamptz NOT NULL,
    rule text NOT NULL,
    path_like text,
    tag text,
    PRIMARY KEY (namespace, epoch)
);
CREATE INDEX IF NOT EXISTS {expiries_logged} ON {expiries} (logged)
"""

#: The columns of the current schema: a database that has them all needs no DDL.
COLUMNS = {
    "offload_cache": {"key", "value", "expires", "path", "query", "failed", "namespace", "tags"},
    "offload_jobs": {"id", "key", "payload", "leased_until", "token", "namespace"},
    "offload_dead": {"id", "namespace", "key", "payload", "error", "buried"},
    "offload_epochs": {"namespace", "epoch"},
    "offload_expiries": {"namespace", "epoch", "logged", "rule", "path_like", "tag"},
}

_SECONDS = "* interval '1 second'"


def _store(source: str = "") -> str:
    """The upsert of a value (a ``FROM`` clause in ``source`` may order it after another part of a statement).

    Every write of a row resets what the row was: a marker never keeps an answer's index or tags.
    """
    return f"""
    INSERT INTO {{cache}} (key, value, expires, namespace, path, query, failed, tags)
    SELECT %(key)s, %(value)s, now() + %(ttl)s {_SECONDS}, %(ns)s, %(path)s, %(query)s, %(failed)s, %(tags)s::text[]
    {source}
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires, namespace = excluded.namespace,
        path = excluded.path, query = excluded.query, failed = excluded.failed, tags = excluded.tags
    """


_STORE = _store()

_ADD = f"""
INSERT INTO {{cache}} AS c (key, value, expires, namespace) VALUES (%s, %s, now() + %s {_SECONDS}, %s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires, namespace = excluded.namespace,
    path = NULL, query = NULL, failed = false, tags = NULL
WHERE c.expires <= now()
"""

# A live count is ASCII digits; anything else (expired, foreign) starts again at 1.
_COUNTING = "c.expires > now() AND length(c.value) BETWEEN 1 AND 18 AND encode(c.value, 'escape') ~ '^[0-9]+$'"
_INCR = f"""
INSERT INTO {{cache}} AS c (key, value, expires, namespace) VALUES (%s, '1', now() + %s {_SECONDS}, %s)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN {_COUNTING} THEN convert_to((encode(c.value, 'escape')::bigint + 1)::text, 'UTF8')
        ELSE excluded.value END,
    expires = CASE WHEN {_COUNTING} THEN c.expires ELSE excluded.expires END,
    namespace = excluded.namespace, path = NULL, query = NULL, failed = false, tags = NULL
RETURNING value
"""

# The namespace's epoch as a row whose rule is NULL, beside the rules logged after an epoch (see expiry_after).
_LOG_AFTER = """
SELECT epoch, rule FROM {expiries} WHERE namespace = %(ns)s AND epoch > %(since)s
UNION ALL SELECT epoch, NULL FROM {epochs} WHERE namespace = %(ns)s
"""

# A namespace's epoch row exists from its first job on: it is where expiries and finishing jobs meet.
_EPOCH = """
WITH created AS (
    INSERT INTO {epochs} (namespace, epoch) VALUES (%(ns)s, 0) ON CONFLICT (namespace) DO NOTHING RETURNING epoch
)
SELECT epoch FROM created UNION ALL SELECT epoch FROM {epochs} WHERE namespace = %(ns)s
"""

# Takes the lock, and only if taken marks the key running (the part both starts share).
_START_CTES = f"""
WITH created AS (
    INSERT INTO {{epochs}} (namespace, epoch) VALUES (%(ns)s, 0) ON CONFLICT (namespace) DO NOTHING
), locked AS (
    INSERT INTO {{cache}} AS c (key, value, expires, namespace)
    VALUES (%(running)s, %(marker)s, now() + %(lease)s {_SECONDS}, %(ns)s)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires,
        namespace = excluded.namespace, path = NULL, query = NULL, failed = false, tags = NULL
    WHERE c.expires <= now()
    RETURNING 1
), pending AS (
    INSERT INTO {{cache}} (key, value, expires, namespace)
    SELECT %(pending)s, %(marker)s, now() + %(lease)s {_SECONDS}, %(ns)s FROM locked
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires,
        namespace = excluded.namespace, path = NULL, query = NULL, failed = false, tags = NULL
)"""

_STARTED = """
SELECT EXISTS (SELECT 1 FROM locked),
    (SELECT value FROM {cache} WHERE key = %(answer)s AND expires > now()),
    COALESCE((SELECT epoch FROM {epochs} WHERE namespace = %(ns)s), 0)"""

_START_JOB = _START_CTES + _STARTED

# As _START_JOB, and the start counted as _INCR counts, in the same statement.
_START_COUNTED_JOB = (
    _START_CTES
    + f""", counted AS (
    INSERT INTO {{cache}} AS c (key, value, expires, namespace)
    SELECT %(counter)s, '1'::bytea, now() + %(counter_ttl)s {_SECONDS}, %(ns)s FROM locked
    ON CONFLICT (key) DO UPDATE SET
        value = CASE WHEN {_COUNTING} THEN convert_to((encode(c.value, 'escape')::bigint + 1)::text, 'UTF8')
            ELSE excluded.value END,
        expires = CASE WHEN {_COUNTING} THEN c.expires ELSE excluded.expires END,
        namespace = excluded.namespace, path = NULL, query = NULL, failed = false, tags = NULL
    RETURNING value
)"""
    + _STARTED
    + ", (SELECT value FROM counted)"
)

# Store, and drop the markers unless an expiry logged since the job began may select the answer:
# "clear" is false when a logged rule's path pattern and tag fit, or when the log does not hold
# every epoch up to the one just read (pruned, or committed after this statement's snapshot).
_FINISH_JOB = f"""
WITH epoch AS MATERIALIZED (
    SELECT epoch FROM {{epochs}} WHERE namespace = %(ns)s FOR SHARE
), seen AS MATERIALIZED (
    SELECT (path_like IS NULL OR %(path)s LIKE path_like) AND (tag IS NULL OR tag = ANY(%(tagged)s::text[])) AS near
    FROM {{expiries}} WHERE namespace = %(ns)s AND epoch > %(since)s
), clear AS MATERIALIZED (
    SELECT COALESCE((SELECT max(epoch) FROM epoch), 0) - %(since)s <= (SELECT count(*) FROM seen)
        AND NOT EXISTS (SELECT 1 FROM seen WHERE near) AS ok
), stored AS (
    {_store("FROM clear")}
), done AS (
    DELETE FROM {{cache}} WHERE key = ANY(%(done)s::text[]) AND (SELECT ok FROM clear)
)
SELECT (SELECT ok FROM clear), (SELECT pg_notify(%(channel)s, %(key)s) WHERE %(announce)s)
"""

_STORE_AND_DROP = f"""
WITH stored AS ({_STORE}), done AS (DELETE FROM {{cache}} WHERE key = ANY(%(done)s::text[]))
SELECT (SELECT pg_notify(%(channel)s, %(key)s) WHERE %(announce)s)
"""

# One index seek per namespace instead of reading every answer.
_NAMESPACES = """
WITH RECURSIVE found(name) AS (
    SELECT (SELECT namespace FROM {cache} WHERE path IS NOT NULL AND expires > now() ORDER BY namespace LIMIT 1)
    UNION ALL
    SELECT (SELECT namespace FROM {cache} WHERE path IS NOT NULL AND expires > now() AND namespace > found.name
            ORDER BY namespace LIMIT 1)
    FROM found WHERE found.name IS NOT NULL
)
SELECT name FROM found WHERE name IS NOT NULL
UNION SELECT namespace FROM {expiries}
"""


def open_backend(url: str, namespace: str = DEFAULT_NAMESPACE) -> Backend:
    from offload.backends import Backend

    database = PostgresDatabase(url)
    return Backend(url, PostgresCache(database, namespace), PostgresQueue(database, namespace))


def migrate(url: str) -> None:
    """Create offload's tables (and schema), or upgrade them, now rather than on first use."""
    database = PostgresDatabase(url)
    try:
        with database.connection() as conn:
            database.create_schema(conn)
    finally:
        database.close()


def channel_name(kind: str, schema: str | None, namespace: str) -> str:
    """The ``LISTEN`` channel of one kind of event in one schema and namespace, at most 63 bytes.

    >>> channel_name("jobs", None, "offload")
    'offload.jobs..offload'
    >>> len(channel_name("stored", "s" * 63, "n" * 64))
    63
    """
    name = f"offload.{kind}.{schema or ''}.{namespace}"
    if len(name.encode()) <= 63:
        return name
    return f"offload.{kind}.{hashlib.sha256(name.encode()).hexdigest()}"[:63]


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

        self.names: dict[str, sql.Composable] = {
            "cache": table("offload_cache"),
            "jobs": table("offload_jobs"),
            "dead": table("offload_dead"),
            "epochs": table("offload_epochs"),
            "expiries": table("offload_expiries"),
        }
        self._statements: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._listeners: dict[str, list[psycopg.Connection[Any]]] = {}
        self._pid = os.getpid()
        self._schema_ready = False

    def sql(self, text: str) -> bytes:
        """A statement with the table names of this schema filled in (``{cache}``, ``{jobs}``, ...).

        As bytes, composed once: psycopg would compose a :class:`~psycopg.sql.Composed` again on each
        execute (7% of a worker's time with trivial jobs). The connections' client encoding is UTF-8.
        """
        statement = self._statements.get(text)
        if statement is None:
            statement = self._statements[text] = sql.SQL(text).format(**self.names).as_bytes(None)
        return statement

    # -- connections ------------------------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
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
                _INHERITED.extend(self._idle + [conn for pool in self._listeners.values() for conn in pool])
                self._idle, self._listeners, self._pid = [], {}, os.getpid()
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
    def connection(self, listen: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one operation (listening on channel ``listen``); an error of it drops every idle one."""
        pool = self._idle if listen is None else self._listeners.setdefault(listen, [])
        conn = self._take(pool)
        if conn is None:
            conn = self.connect()
            try:
                if not self._schema_ready:
                    self.create_schema(conn)
                if listen is not None:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(listen)))
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
            except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName, pg_errors.UndefinedColumn) as error:
                self._schema_ready = False
                if attempt == 2:
                    raise BackendUnavailable(f"PostgreSQL at {self.display_url}: {error}".strip()) from error
            except psycopg.Error as error:  # anything else the server refuses: an outage for the caller
                raise BackendUnavailable(f"PostgreSQL at {self.display_url}: {error}".strip()) from error
        raise AssertionError("unreachable")

    def create_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create the schema and tables if missing, or upgrade older ones, one process at a time."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('offload.migrate'))")
            if self.schema:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            found: dict[str, set[str]] = {}
            for table, column in conn.execute(
                "SELECT c.relname, a.attname FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
                "WHERE n.nspname = COALESCE(%s, current_schema()) AND c.relname = ANY(%s) AND c.relkind = 'r'",
                (self.schema, list(COLUMNS)),
            ):
                found.setdefault(table, set()).add(column)
            if any(not columns <= found.get(table, set()) for table, columns in COLUMNS.items()):
                self._upgrade(conn, found)
        self._schema_ready = True

    def _upgrade(self, conn: psycopg.Connection[Any], found: dict[str, set[str]]) -> None:
        """Bring the tables to the current schema (see "Upgrades" in the module docstring)."""
        if "offload_cache" in found and not COLUMNS["offload_cache"] <= found["offload_cache"]:
            conn.execute(self.sql("DROP TABLE {cache}"))
        if "offload_jobs" in found and "namespace" not in found["offload_jobs"]:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN namespace text NOT NULL DEFAULT {}").format(
                    self.names["jobs"], sql.Literal(DEFAULT_NAMESPACE)
                )
            )
        names = {
            **self.names,
            "default": sql.Literal(DEFAULT_NAMESPACE),
            "old_jobs_index": sql.Identifier(*filter(None, [self.schema, "offload_jobs_leased_until"])),
        }
        for index in ("cache_answers", "cache_tags", "cache_expires", "jobs_queue", "dead_newest", "expiries_logged"):
            names[index] = sql.Identifier(f"offload_{index}")
        for statement in filter(str.strip, _TABLES.split(";")):
            conn.execute(sql.SQL(statement).format(**names))

    def close(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                return
            idle = self._idle + [conn for pool in self._listeners.values() for conn in pool]
            self._idle, self._listeners = [], {}
        for conn in idle:
            conn.close()


class PostgresCache(Cache):
    """Cache entries as rows; expired rows are ignored on read and swept now and then."""

    notifies = True

    def __init__(self, database: PostgresDatabase, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.db = database
        self.namespace = namespace
        self.channel = channel_name("stored", database.schema, namespace)
        self._writes = 0

    def get(self, key: str) -> bytes | None:
        query = self.db.sql("SELECT value FROM {cache} WHERE key = %s AND expires > now()")
        row = self.db.run(lambda conn: conn.execute(query, (key,)).fetchone())
        return None if row is None else as_bytes(row[0])

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        query = self.db.sql(_ADD)
        return self.db.run(lambda conn: conn.execute(query, (key, value, ttl, self.namespace)).rowcount) == 1

    def _row(self, key: str, value: bytes, ttl: float, index: IndexEntry | None) -> dict[str, object]:
        row: dict[str, object] = {"key": key, "value": value, "ttl": ttl, "ns": self.namespace}
        if index is None:
            return {**row, "path": None, "query": None, "failed": False, "tags": None}
        tags = list(index.tags) or None
        return {**row, "path": index.path, "query": index.query, "failed": index.failed, "tags": tags}

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        query = self.db.sql(_STORE)
        self.db.run(lambda conn: conn.execute(query, self._row(key, value, ttl, index)))
        self._wrote()

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % 1000 == 0:
            sweep = self.db.sql("DELETE FROM {cache} WHERE expires <= now()")
            self.db.run(lambda conn: conn.execute(sweep))

    def touch(self, key: str, ttl: float) -> bool:
        query = self.db.sql(f"UPDATE {{cache}} SET expires = now() + %s {_SECONDS} WHERE key = %s AND expires > now()")
        return self.db.run(lambda conn: conn.execute(query, (ttl, key)).rowcount) == 1

    def delete(self, key: str) -> None:
        query = self.db.sql("DELETE FROM {cache} WHERE key = %s")
        self.db.run(lambda conn: conn.execute(query, (key,)))

    def take(self, key: str) -> bytes | None:
        query = self.db.sql("DELETE FROM {cache} WHERE key = %s AND expires > now() RETURNING value")
        row = self.db.run(lambda conn: conn.execute(query, (key,)).fetchone())
        return None if row is None else as_bytes(row[0])

    def incr(self, key: str, ttl: float) -> int:
        query = self.db.sql(_INCR)
        rows = self.db.run(lambda conn: conn.execute(query, (key, ttl, self.namespace)).fetchall())
        return int(bytes(rows[0][0]))  # an upsert with RETURNING always returns its row

    # -- expiry: log first, then remove -----------------------------------------------

    def expire(self, rule: ExpiryRule, restamp: Restamp | None = None) -> int:
        logged = self.db.sql(
            """
            WITH epoch AS (
                INSERT INTO {epochs} AS e (namespace, epoch) VALUES (%(ns)s, 1)
                ON CONFLICT (namespace) DO UPDATE SET epoch = e.epoch + 1 RETURNING epoch
            ), pruned AS (
                DELETE FROM {expiries} WHERE logged < now() - %(keep)s * interval '1 second'
            )
            INSERT INTO {expiries} (namespace, epoch, logged, rule, path_like, tag)
            SELECT %(ns)s, epoch, now(), %(rule)s, %(like)s, %(tag)s FROM epoch
            """
        )
        candidates = self.db.sql(
            "SELECT key, expires > now(), path, query, failed, tags, "
            + ("value" if restamp is not None else "NULL")
            + " FROM {cache} WHERE namespace = %(ns)s AND path IS NOT NULL"
            + (" AND path LIKE %(like)s" if rule.pattern is not None else "")
            + (" AND tags @> ARRAY[%(tag)s::text]" if rule.tag is not None else "")
            + " FOR UPDATE"
        )
        remove = self.db.sql("DELETE FROM {cache} WHERE key = ANY(%s::text[])")
        rewrite = self.db.sql(
            "UPDATE {cache} AS c SET value = u.value FROM unnest(%s::text[], %s::bytea[]) AS u(key, value) "
            "WHERE c.key = u.key"
        )
        like = None if rule.pattern is None else like_pattern(rule.pattern)
        params = {"ns": self.namespace, "keep": LOG_SECONDS, "rule": rule.encode(), "like": like, "tag": rule.tag}

        def run(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                conn.execute(logged, params)  # waits for the finishing jobs that read the epoch: see the docstring
                rows = conn.execute(candidates, params).fetchall()
                entries = [
                    (row[0], row[1], IndexEntry(row[2], row[3] or "", row[4], tuple(row[5] or ())), row[6])
                    for row in rows
                ]
                plan = plan_expiry(rule, restamp, entries)
                if plan.removed:
                    conn.execute(remove, (plan.removed,))
                if plan.rewritten:
                    conn.execute(rewrite, ([key for key, _ in plan.rewritten], [value for _, value in plan.rewritten]))
            return plan.touched

        return self.db.run(run)

    def epoch(self) -> int:
        query = self.db.sql(_EPOCH)
        row = self.db.run(lambda conn: conn.execute(query, {"ns": self.namespace}).fetchone())
        return 0 if row is None else int(row[0])

    def expired_since(self, epoch: int, entry: IndexEntry) -> ExpiryRule | None:
        query = self.db.sql(_LOG_AFTER)
        rows = self.db.run(lambda conn: conn.execute(query, {"ns": self.namespace, "since": epoch}).fetchall())
        return expiry_after(epoch, rows, entry)

    # -- jobs: one statement each in the common case -----------------------------------------

    def start_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float
    ) -> tuple[bool, bytes | None, int]:
        query = self.db.sql(_START_JOB)
        params = {"ns": self.namespace, "running": running, "pending": pending, "answer": answer}
        row = self.db.run(lambda conn: conn.execute(query, {**params, "marker": marker, "lease": lease}).fetchone())
        if row is None or not row[0]:
            return False, None, 0
        return True, as_bytes(row[1]), int(row[2])

    def start_counted_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float, counter: str, counter_ttl: float
    ) -> tuple[bool, bytes | None, int, int]:
        """One statement: the lock, the marker, the answer, the epoch and the count."""
        return self.start_counted_jobs([JobStart(running, pending, answer, marker, lease, counter, counter_ttl)])[0]

    def start_counted_jobs(self, starts: Sequence[JobStart]) -> list[tuple[bool, bytes | None, int, int]]:
        """The statement of :meth:`start_counted_job` once per start, in one pipeline: one round trip.

        The pipeline is one transaction; its starts run in the order of their
        lock keys (two of one key in the order given), so two workers that
        begin the same keys at once lock them in the same order.
        """
        if not starts:
            return []
        query = self.db.sql(_START_COUNTED_JOB)
        params = [
            {
                "ns": self.namespace,
                "running": s.running,
                "pending": s.pending,
                "answer": s.answer,
                "marker": s.marker,
                "lease": s.lease,
                "counter": s.counter,
                "counter_ttl": s.counter_ttl,
            }
            for s in starts
        ]
        rows = self.db.run(lambda conn: _pipelined(conn, query, params, [s.running for s in starts]))
        return [
            (True, as_bytes(row[1]), int(row[2]), int(bytes(row[3])))
            if row is not None and row[0]
            else (False, None, 0, 0)
            for row in rows
        ]

    def touch_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
        """One statement renews every live key."""
        if not keys:
            return []
        query = self.db.sql(
            f"UPDATE {{cache}} SET expires = now() + %s {_SECONDS} WHERE key = ANY(%s::text[]) AND expires > now() "
            "RETURNING key"
        )
        found = {row[0] for row in self.db.run(lambda conn: conn.execute(query, (ttl, list(keys))).fetchall())}
        return [key in found for key in keys]

    def finish_job(
        self,
        answer: str,
        value: bytes | None,
        ttl: float,
        index: IndexEntry | None,
        done: Sequence[str],
        since: int,
        restamp: Restamp | None = None,
    ) -> bool:
        return self.finish_jobs([JobFinish(answer, value, ttl, index, tuple(done), since, restamp)])[0]

    def finish_jobs(self, finishes: Sequence[JobFinish]) -> list[bool]:
        """The statement of each finish in one pipeline (one transaction, in the order of the answers' keys).

        A finish an expiry may have overtook is settled after, a round trip of its own.
        """
        if not finishes:
            return []
        if len(finishes) == 1:  # one statement, no pipeline
            query, params = self._finishing(finishes[0])
            reads = finishes[0].index is not None and finishes[0].value is not None
            rows = [self.db.run(lambda conn: _fetched(conn.execute(query, params), reads))]
        else:
            rows = self.db.run(lambda conn: self._finish_all(conn, finishes))
        survived = []
        for finish, row in zip(finishes, rows, strict=True):
            if finish.value is not None:
                self._wrote()
            if finish.value is None or finish.index is None or (row is not None and row[0]):
                survived.append(True)
            else:
                survived.append(
                    self._settle(finish.answer, finish.value, finish.index, finish.done, finish.since, finish.restamp)
                )
        return survived

    def _finish_all(self, conn: psycopg.Connection[Any], finishes: Sequence[JobFinish]) -> list[Any]:
        order = sorted(range(len(finishes)), key=lambda i: finishes[i].answer)
        cursors: dict[int, psycopg.Cursor[Any]] = {}
        with conn.pipeline():
            for i in order:
                query, params = self._finishing(finishes[i])
                cursors[i] = conn.execute(query, params)
        return [
            _fetched(cursors[i], finishes[i].index is not None and finishes[i].value is not None)
            for i in range(len(finishes))
        ]

    def _finishing(self, finish: JobFinish) -> tuple[bytes, dict[str, Any]]:
        """The statement that ends a job, and its parameters."""
        answer, value, index, done = finish.answer, finish.value, finish.index, list(finish.done)
        if value is None:
            return self.db.sql("DELETE FROM {cache} WHERE key = ANY(%(done)s::text[])"), {"done": done}
        params = {
            **self._row(answer, value, finish.ttl, index),
            "done": done,
            "since": finish.since,
            "channel": self.channel,
            "announce": len(answer.encode()) <= NOTIFY_PAYLOAD,
        }
        if index is None:
            return self.db.sql(_STORE_AND_DROP), params
        return self.db.sql(_FINISH_JOB), {**params, "tagged": list(index.tags)}

    def _settle(
        self, answer: str, value: bytes, index: IndexEntry, done: Sequence[str], since: int, restamp: Restamp | None
    ) -> bool:
        """Match the expiries logged since the job began exactly, drop or rewrite its answer, then drop the markers."""
        rule = self.expired_since(since, index)  # a statement of its own: it sees every committed expiry
        rewritten = None if rule is None else restamped(rule, restamp, value)
        markers = "DELETE FROM {cache} WHERE key = ANY(%(done)s::text[])"
        if rule is None:
            query = self.db.sql(markers)
        elif rewritten is None:
            query = self.db.sql(f"WITH gone AS (DELETE FROM {{cache}} WHERE key = %(key)s) {markers}")
        else:  # keeping the answer's expiry
            query = self.db.sql(f"WITH soft AS (UPDATE {{cache}} SET value = %(value)s WHERE key = %(key)s) {markers}")
        params = {"key": answer, "value": rewritten, "done": list(done)}
        self.db.run(lambda conn: conn.execute(query, params))
        return rule is None

    def watch(self, on_stored: Callable[[str], None]) -> Callable[[], None] | None:
        watcher = Watcher(self.db, self.channel, on_stored)
        watcher.start()
        return watcher.stop

    def stats(self) -> dict[str, int]:
        query = self.db.sql(
            "SELECT count(*) FILTER (WHERE NOT failed), count(*) FILTER (WHERE failed) FROM {cache} "
            "WHERE namespace = %s AND path IS NOT NULL AND expires > now()"
        )
        cached, failed = self.db.run(lambda conn: conn.execute(query, (self.namespace,)).fetchone()) or (0, 0)
        return {"cached": int(cached), "failed": int(failed)}

    def namespaces(self) -> list[str]:
        query = self.db.sql(_NAMESPACES)
        return sorted(row[0] for row in self.db.run(lambda conn: conn.execute(query).fetchall()))

    def close(self) -> None:
        self.db.close()


def _pipelined(
    conn: psycopg.Connection[Any], query: bytes, params: Sequence[dict[str, Any]], keys: Sequence[str]
) -> list[Any]:
    """``query`` once per ``params``, in the order of ``keys``, in one pipeline; each one's row, in the given order."""
    if len(params) == 1:
        return [conn.execute(query, params[0]).fetchone()]
    cursors: dict[int, psycopg.Cursor[Any]] = {}
    with conn.pipeline():
        for i in sorted(range(len(params)), key=keys.__getitem__):
            cursors[i] = conn.execute(query, params[i])
    return [cursors[i].fetchone() for i in range(len(params))]


def _fetched(cursor: psycopg.Cursor[Any], reads: bool) -> Any:
    """The row of a finishing statement that reads one back (the check for expiries), else None."""
    return cursor.fetchone() if reads else None


class Watcher:
    """A listener of one channel on a connection of its own, in a daemon thread; it reconnects after an outage."""

    def __init__(self, database: PostgresDatabase, channel: str, on_stored: Callable[[str], None]) -> None:
        self.db, self.channel, self.on_stored = database, channel, on_stored
        self.stopped = threading.Event()
        self.listening = threading.Event()

    def start(self) -> None:
        """Start listening; wait a moment for the first ``LISTEN``, so stores from now on are heard."""
        threading.Thread(target=self._run, name="offload-postgres-watch", daemon=True).start()
        self.listening.wait(5)

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        pause = 0.1
        while not self.stopped.is_set():
            try:
                with contextlib.closing(self.db.connect()) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    pause = 0.1
                    while not self.stopped.is_set():
                        for notification in conn.notifies(timeout=0.5):
                            if self.stopped.is_set():
                                return
                            self._deliver(notification.payload)
            except (psycopg.Error, BackendUnavailable) as error:
                log.debug("watching %s: %s; listening again in %.1f s", self.channel, error, pause)
                self.listening.set()  # nobody waits for a server that is down
                self.stopped.wait(pause)
                pause = min(pause * 2, 5.0)

    def _deliver(self, key: str) -> None:
        try:
            self.on_stored(key)
        except Exception:
            log.exception("a watcher of stored answers failed")


def turn_key(name: str) -> int:
    """The 64-bit advisory lock key of ``name``: stable across processes and versions (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def like_pattern(pattern: str) -> str:
    """The pattern as a ``LIKE`` expression over canonical paths: ``*`` becomes ``%``, the rest is literal.

    >>> like_pattern("/a_b/*")
    '/a\\\\_b/%'
    """
    parts = [canonical_path(part.encode("utf-8", "surrogateescape")) for part in pattern.split("*")]
    return "%".join(part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for part in parts)


class PostgresQueue(Queue):
    """Jobs as rows: a claim leases the oldest claimable row of the namespace with ``FOR UPDATE SKIP LOCKED``."""

    def __init__(self, database: PostgresDatabase, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.db = database
        self.namespace = namespace
        self.channel = channel_name("jobs", database.schema, namespace)
        self.turn = f"offload.claim.{self.channel}"  # the advisory lock that says which waiting worker listens
        self._turn_key = sql.Literal(turn_key(self.turn))

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        params = {"ns": self.namespace, "key": key, "payload": payload, "limit": limit, "channel": self.channel}
        if limit is None:
            insert = self.db.sql(
                "WITH pushed AS (INSERT INTO {jobs} (namespace, key, payload) VALUES (%(ns)s, %(key)s, %(payload)s)) "
                "SELECT pg_notify(%(channel)s, '')"
            )
            self.db.run(lambda conn: conn.execute(insert, params))
            return
        capped = self.db.sql(
            """
            WITH pushed AS (
                INSERT INTO {jobs} (namespace, key, payload) SELECT %(ns)s, %(key)s, %(payload)s
                WHERE (SELECT count(*) FROM (SELECT 1 FROM {jobs} WHERE namespace = %(ns)s
                       AND (token IS NULL OR leased_until <= now()) LIMIT %(limit)s) AS waiting) < %(limit)s
                RETURNING id
            )
            SELECT pg_notify(%(channel)s, '') FROM pushed
            """
        )

        def push(conn: psycopg.Connection[Any]) -> bool:
            # One capped push at a time per queue, so that the count and the insert are one step. Both
            # statements travel in one pipeline, up to a single Sync: one round trip, and one implicit
            # transaction (the protocol's), so the lock is held until the insert commits.
            with conn.pipeline():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"offload.push.{self.channel}",))
                cursor = conn.execute(capped, params)
            return bool(cursor.fetchall())

        if not self.db.run(push):
            raise QueueFull()

    def claim(self, lease: float, wait: float) -> Claim | None:
        claims = self.claim_many(lease, wait, 1)
        return claims[0] if claims else None

    def claim_many(self, lease: float, wait: float, limit: int) -> list[Claim]:
        """One ``UPDATE ... FOR UPDATE SKIP LOCKED LIMIT n`` statement takes up to ``limit`` jobs.

        A push's ``NOTIFY`` reaches every session that listens, so if every
        waiting worker listened, each push would wake them all to race for
        one job. Instead, waiting workers take turns: the one holding the
        queue's advisory lock (the turn) listens, claims, and looks each
        second (``RECHECK``) for leases that ran out and delayed releases;
        the others wait for the lock, which PostgreSQL hands to the next in
        line as soon as the listener leaves with a job. Every call looks
        once before it waits.
        """
        if limit < 1:
            return []
        claims = self._claim_now(lease, limit)
        if claims or wait <= 0:
            return claims
        deadline = time.monotonic() + wait
        try:
            with self.db.connection() as turn:
                if not self._take_turn(turn, deadline - time.monotonic()):
                    return []
                try:
                    return self._listen(lease, limit, deadline)
                finally:
                    self._give_turn(turn)
        except psycopg.Error as error:
            raise BackendUnavailable(f"PostgreSQL at {self.db.display_url}: {error}".strip()) from error

    def _take_turn(self, conn: psycopg.Connection[Any], seconds: float) -> bool:
        """Wait up to ``seconds`` for the queue's turn, a session-level advisory lock ``conn`` then holds.

        One round trip: without parameters the two statements go as one
        simple query, one implicit transaction, so the lock timeout ends
        with it while the lock stays with the session.
        """
        if seconds <= 0:
            return False
        timeout = sql.Literal(f"{max(1, round(seconds * 1000))}ms")
        take = sql.SQL("SET LOCAL lock_timeout = {}; SELECT pg_advisory_lock({})").format(timeout, self._turn_key)
        try:
            conn.execute(take)
        except pg_errors.LockNotAvailable:
            return False
        return True

    def _give_turn(self, conn: psycopg.Connection[Any]) -> None:
        """Hand the turn to the next waiter; a connection that cannot is closed, which hands it on too."""
        try:
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(self._turn_key))
        except psycopg.Error:
            conn.close()

    def _listen(self, lease: float, limit: int, deadline: float) -> list[Claim]:
        """The turn's holder: listen, look, and sleep until a push (or a second) until jobs come or time is up."""
        with self.db.connection(listen=self.channel) as listener:
            for _ in listener.notifies(timeout=0):  # what came while nobody listened: the look below finds it
                pass
            while True:  # listening before looking: no lost wake-up
                claims = self._claim_now(lease, limit)
                remaining = deadline - time.monotonic()
                if claims or remaining <= 0:
                    return claims
                for _ in listener.notifies(timeout=min(remaining, RECHECK), stop_after=1):
                    pass

    def _claim_now(self, lease: float, limit: int) -> list[Claim]:
        token = uuid.uuid4().hex  # one token for the batch: each claim still owns only its own row
        query = self.db.sql(
            f"UPDATE {{jobs}} SET leased_until = now() + %s {_SECONDS}, token = %s "
            "WHERE id IN (SELECT id FROM {jobs} WHERE namespace = %s "
            "AND (leased_until IS NULL OR leased_until <= now()) ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
            "RETURNING id, key, payload"
        )
        rows = self.db.run(lambda conn: conn.execute(query, (lease, token, self.namespace, limit)).fetchall())
        return [claimed(row, token) for row in sorted(rows, key=lambda row: int(row[0]))]

    def extend(self, claim: Claim, lease: float) -> bool:
        query = self.db.sql(f"UPDATE {{jobs}} SET leased_until = now() + %s {_SECONDS} WHERE id = %s AND token = %s")
        return self.db.run(lambda conn: conn.execute(query, (lease, int(claim.job_id), claim.token)).rowcount) == 1

    def extend_many(self, claims: Sequence[Claim], lease: float) -> list[bool]:
        """One statement renews every claim that still owns its row."""
        if not claims:
            return []
        query = self.db.sql(
            f"UPDATE {{jobs}} AS j SET leased_until = now() + %s {_SECONDS} "
            "FROM unnest(%s::bigint[], %s::text[]) AS c(id, token) WHERE j.id = c.id AND j.token = c.token "
            "RETURNING j.id, j.token"
        )
        ids, tokens = [int(claim.job_id) for claim in claims], [claim.token for claim in claims]
        rows = self.db.run(lambda conn: conn.execute(query, (lease, ids, tokens)).fetchall())
        renewed = {(str(row[0]), row[1]) for row in rows}
        return [(claim.job_id, claim.token) in renewed for claim in claims]

    def ack(self, claim: Claim) -> None:
        query = self.db.sql("DELETE FROM {jobs} WHERE id = %s AND token = %s")
        self.db.run(lambda conn: conn.execute(query, (int(claim.job_id), claim.token)))

    def ack_many(self, claims: Sequence[Claim]) -> None:
        """One statement removes every job its claim still owns."""
        if not claims:
            return
        query = self.db.sql(
            "DELETE FROM {jobs} AS j USING unnest(%s::bigint[], %s::text[]) AS c(id, token) "
            "WHERE j.id = c.id AND j.token = c.token"
        )
        ids, tokens = [int(claim.job_id) for claim in claims], [claim.token for claim in claims]
        self.db.run(lambda conn: conn.execute(query, (ids, tokens)))

    def release(self, claim: Claim, delay: float = 0.0) -> None:
        query = self.db.sql(
            f"""
            WITH moved AS (
                UPDATE {{jobs}} SET id = DEFAULT, token = NULL,
                    leased_until = CASE WHEN %(delay)s > 0 THEN now() + %(delay)s {_SECONDS} END
                WHERE id = %(id)s AND token = %(token)s RETURNING id
            )
            SELECT pg_notify(%(channel)s, '') FROM moved WHERE %(delay)s <= 0
            """
        )
        params = {"id": int(claim.job_id), "token": claim.token, "delay": delay, "channel": self.channel}
        self.db.run(lambda conn: conn.execute(query, params))

    def bury(self, claim: Claim, error: str) -> None:
        query = self.db.sql(
            """
            WITH buried AS (DELETE FROM {jobs} WHERE id = %s AND token = %s RETURNING id, namespace, key, payload)
            INSERT INTO {dead} (id, namespace, key, payload, error, buried)
            SELECT id, namespace, key, payload, %s, now() FROM buried
            """
        )
        self.db.run(lambda conn: conn.execute(query, (int(claim.job_id), claim.token, error)))

    def dead(self, limit: int = 100) -> list[DeadJob]:
        query = self.db.sql(
            "SELECT id, key, payload, error, extract(epoch FROM buried) FROM {dead} WHERE namespace = %s "
            "ORDER BY buried DESC, id DESC LIMIT %s"
        )
        rows = self.db.run(lambda conn: conn.execute(query, (self.namespace, limit)).fetchall())
        return [dead_letter(row) for row in rows]

    def revive(self, job_id: str) -> bool:
        if not job_id.isdigit():  # not an id this queue gives
            return False
        number = int(job_id)
        query = self.db.sql(
            """
            WITH revived AS (
                DELETE FROM {dead} WHERE id = %(id)s AND namespace = %(ns)s RETURNING namespace, key, payload
            ), queued AS (
                INSERT INTO {jobs} (namespace, key, payload) SELECT namespace, key, payload FROM revived RETURNING id
            )
            SELECT pg_notify(%(channel)s, '') FROM queued
            """
        )
        params = {"id": number, "ns": self.namespace, "channel": self.channel}
        return bool(self.db.run(lambda conn: conn.execute(query, params).fetchall()))

    def stats(self) -> dict[str, int]:
        query = self.db.sql(
            "SELECT count(*) FILTER (WHERE token IS NULL OR leased_until <= now()), "
            "count(*) FILTER (WHERE token IS NOT NULL AND leased_until > now()), "
            "(SELECT count(*) FROM {dead} WHERE namespace = %(ns)s) FROM {jobs} WHERE namespace = %(ns)s"
        )
        row = self.db.run(lambda conn: conn.execute(query, {"ns": self.namespace}).fetchone())
        queued, running, dead = row or (0, 0, 0)
        return {"queued": int(queued), "running": int(running), "dead": int(dead)}

    def waiting(self, limit: int = 100) -> list[QueuedJob]:
        query = self.db.sql(
            "SELECT id, key, payload FROM {jobs} WHERE namespace = %s AND (leased_until IS NULL OR "
            "(token IS NOT NULL AND leased_until <= now())) ORDER BY id LIMIT %s"
        )
        rows = self.db.run(lambda conn: conn.execute(query, (self.namespace, limit)).fetchall())
        return [queued_job(row) for row in rows]

    def running(self, limit: int = 100) -> list[QueuedJob]:
        query = self.db.sql(
            "SELECT id, key, payload, extract(epoch FROM leased_until) FROM {jobs} WHERE namespace = %s "
            "AND token IS NOT NULL AND leased_until > now() ORDER BY leased_until, id LIMIT %s"
        )
        rows = self.db.run(lambda conn: conn.execute(query, (self.namespace, limit)).fetchall())
        return [queued_job(row) for row in rows]

    def namespaces(self) -> list[str]:
        query = self.db.sql("SELECT namespace FROM {jobs} UNION SELECT namespace FROM {dead}")
        return sorted(row[0] for row in self.db.run(lambda conn: conn.execute(query).fetchall()))

    def close(self) -> None:
        self.db.close()
