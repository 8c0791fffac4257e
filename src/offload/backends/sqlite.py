"""The embedded default backend (``sqlite:///path``): cache and queue in one SQLite file.

Uses only the standard library's :mod:`sqlite3` (SQLite 3.35 or newer, for
``RETURNING``), in WAL mode, so several web processes and several worker
processes on one machine share it safely. SQLite lets one writer in at a
time, so every step that must be atomic is one statement or one ``BEGIN
IMMEDIATE`` transaction: the add is an upsert whose row count says who won, a
claim an ``UPDATE ... RETURNING`` of the oldest claimable row, and a finishing
job stores its answer, checks the expiry log and drops its markers in one
transaction that no ``expire()`` can interleave with. Times are this
machine's clock. ``sqlite:///offload.sqlite3`` is relative to the working
directory, ``sqlite:////var/lib/app/offload.sqlite3`` is absolute.

Schema (version 2, in ``PRAGMA user_version``; created on first use)::

    offload_cache(key TEXT PRIMARY KEY, value BLOB, expires REAL,
                  path TEXT, query TEXT, failed INTEGER,   -- path NULL: a marker or counter, not an answer
                  namespace TEXT, tags TEXT)               -- tags: ',a,b,' with ',' and '%' escaped
    offload_tags(namespace, tag, key)          -- which answers may carry a tag: expire(tag=) is an index lookup
    offload_jobs(id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, payload BLOB,
                 leased_until REAL, token TEXT, namespace TEXT)
    offload_dead(id, namespace, key, payload, error, buried REAL)     -- dead letters
    offload_epochs(namespace PRIMARY KEY, epoch)                      -- the last expiry's number
    offload_expiries(namespace, epoch, logged REAL, rule TEXT)        -- the expiry log, an hour at least

Namespaces: values are found by key, and keys already start with the
namespace, so only what is searched by something else carries a
``namespace`` column, first in its index: answers (``expire()``, ``stats()``),
tags, jobs (a claim takes the oldest job of its own namespace), dead
letters, epochs and the log. ``offload_tags`` is a hint that is never
trusted alone: an answer's own ``tags`` column decides, so a tag row left
behind by a replaced or deleted answer is harmless, and is swept later.

A job is waiting while ``token`` is NULL or its lease ran out, running while
``leased_until`` is ahead; a release is a new row (a new id: the back of the
queue) whose ``leased_until`` holds it back for the delay.

Upgrades: a process reads ``PRAGMA user_version`` on its first connection.
A database of version 0 (offload before namespaces) is upgraded by the first
process that opens it, inside ``BEGIN IMMEDIATE`` so that concurrent openers
wait and then find it done: ``ALTER TABLE ... ADD COLUMN`` gives the cache
``namespace`` and ``tags`` and the jobs ``namespace``; old answers take their
namespace from their key (earlier versions wrote ``<namespace>:...``); old
jobs carried no namespace and go to the default one, ``offload`` (an app
that set another should let its queue drain first, or move its jobs with
``UPDATE offload_jobs SET namespace = '...'``). No row is lost. The
``namespace`` columns default to ``offload``, so processes of the previous
version keep working on the upgraded file during a rolling restart.

Notifications: a process waiting for something binds a Unix datagram socket
in a folder beside the database, one folder per namespace and purpose:
workers in ``<db>.wake/<namespace>/`` (each push sends one byte, so a job
starts within a millisecond or two without busy polling), watchers in
``<db>.watch/<namespace>/`` (each stored answer sends its key). Senders
unlink the sockets of processes that are gone. Long paths are reached through
``/proc/self/fd`` where the system has it; elsewhere workers poll every
second and ``watch()`` returns None.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import select
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from offload.backends import DEFAULT_NAMESPACE, Cache, Claim, DeadJob, ExpiryRule, IndexEntry, Queue
from offload.backends.base import QueuedJob, Restamp, as_bytes
from offload.backends.sql_common import (
    LOG_SECONDS,
    claimed,
    dead_letter,
    expiry_after,
    plan_expiry,
    queued_job,
    restamped,
)
from offload.errors import BackendUnavailable, ConfigurationError, QueueFull
from offload.keys import glob_pattern

if TYPE_CHECKING:
    from offload.backends import Backend

log = logging.getLogger("offload.sqlite")

#: The schema this module writes, kept in ``PRAGMA user_version`` (0: before namespaces).
SCHEMA_VERSION = 2

#: Writes between two sweeps of expired rows and stale tag rows.
SWEEP_EVERY = 1000

_TABLES = f"""
CREATE TABLE IF NOT EXISTS offload_cache (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires REAL NOT NULL,
    path TEXT,
    query TEXT,
    failed INTEGER NOT NULL DEFAULT 0,
    namespace TEXT NOT NULL DEFAULT '{DEFAULT_NAMESPACE}',
    tags TEXT
);
CREATE INDEX IF NOT EXISTS offload_cache_answers ON offload_cache (namespace, path) WHERE path IS NOT NULL;
CREATE INDEX IF NOT EXISTS offload_cache_expires ON offload_cache (expires);
DROP INDEX IF EXISTS offload_cache_path;
CREATE TABLE IF NOT EXISTS offload_tags (
    namespace TEXT NOT NULL,
    tag TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (namespace, tag, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offload_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    leased_until REAL,
    token TEXT,
    namespace TEXT NOT NULL DEFAULT '{DEFAULT_NAMESPACE}'
);
CREATE INDEX IF NOT EXISTS offload_jobs_queue ON offload_jobs (namespace, id);
DROP INDEX IF EXISTS offload_jobs_lease;
CREATE TABLE IF NOT EXISTS offload_dead (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    error TEXT NOT NULL,
    buried REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS offload_dead_newest ON offload_dead (namespace, buried, id);
CREATE TABLE IF NOT EXISTS offload_epochs (
    namespace TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS offload_expiries (
    namespace TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    logged REAL NOT NULL,
    rule TEXT NOT NULL,
    PRIMARY KEY (namespace, epoch)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS offload_expiries_logged ON offload_expiries (logged);
"""

# Old answers' namespace is the part of their key before the first ':', when it is one.
_NAMESPACE_FROM_KEY = """
UPDATE offload_cache SET namespace = substr(key, 1, instr(key, ':') - 1)
WHERE path IS NOT NULL AND instr(key, ':') BETWEEN 2 AND 65
  AND substr(key, 1, instr(key, ':') - 1) NOT GLOB '*[^A-Za-z0-9_-]*'
"""

# Every write of a row resets what the row was: a marker never keeps an answer's index or tags.
_STORE = """
INSERT INTO offload_cache (key, value, expires, namespace, path, query, failed, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires, namespace = excluded.namespace,
    path = excluded.path, query = excluded.query, failed = excluded.failed, tags = excluded.tags
"""

# An entry that expired, or holds something that is not bytes, is absent.
_ADD = """
INSERT INTO offload_cache (key, value, expires, namespace) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires, namespace = excluded.namespace,
    path = NULL, query = NULL, failed = 0, tags = NULL
WHERE offload_cache.expires <= ?5 OR typeof(offload_cache.value) <> 'blob'
"""

# A live count is ASCII digits; anything else (expired, foreign) starts again at 1.
_COUNTING = (
    "offload_cache.expires > ?2 AND typeof(offload_cache.value) = 'blob'"
    " AND length(offload_cache.value) BETWEEN 1 AND 18 AND CAST(offload_cache.value AS TEXT) NOT GLOB '*[^0-9]*'"
)
_INCR = f"""
INSERT INTO offload_cache (key, value, expires, namespace) VALUES (?1, CAST('1' AS BLOB), ?2 + ?3, ?4)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN {_COUNTING}
        THEN CAST(CAST(CAST(CAST(offload_cache.value AS TEXT) AS INTEGER) + 1 AS TEXT) AS BLOB)
        ELSE excluded.value END,
    expires = CASE WHEN {_COUNTING} THEN offload_cache.expires ELSE excluded.expires END,
    namespace = excluded.namespace, path = NULL, query = NULL, failed = 0, tags = NULL
RETURNING value
"""

# The namespace's epoch as a row whose rule is NULL, beside the rules logged after an epoch (see expiry_after).
_LOG_AFTER = """
SELECT epoch, rule FROM offload_expiries WHERE namespace = ?1 AND epoch > ?2
UNION ALL SELECT epoch, NULL FROM offload_epochs WHERE namespace = ?1
"""

# One index seek per namespace instead of reading every answer.
_ANSWER_NAMESPACES = """
WITH RECURSIVE found(name) AS (
    SELECT (SELECT namespace FROM offload_cache WHERE path IS NOT NULL AND expires > ?1
            ORDER BY namespace LIMIT 1)
    UNION ALL
    SELECT (SELECT namespace FROM offload_cache WHERE path IS NOT NULL AND expires > ?1 AND namespace > found.name
            ORDER BY namespace LIMIT 1)
    FROM found WHERE found.name IS NOT NULL
)
SELECT name FROM found WHERE name IS NOT NULL
UNION SELECT namespace FROM offload_expiries
"""


def open_backend(url: str, namespace: str = DEFAULT_NAMESPACE) -> Backend:
    from offload.backends import Backend

    database = SQLiteDatabase(database_path(url))
    return Backend(url, SQLiteCache(database, namespace), SQLiteQueue(database, namespace))


def database_path(url: str) -> str:
    """The file a ``sqlite://`` URL names: ``sqlite:///rel/path`` or ``sqlite:////abs/path``."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(f"{url!r}: write sqlite:///relative.db or sqlite:////absolute/path.db")
    path = unquote(parts.path)[1:]
    if not path:
        raise ConfigurationError(f"{url!r} names no file: write for example sqlite:///offload.sqlite3")
    return os.path.abspath(path)


class SQLiteDatabase:
    """One connection per thread and process to one database file, created or upgraded on first use."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise ConfigurationError(
                f"the SQLite backend needs SQLite 3.35 or newer (this Python has {sqlite3.sqlite_version}): "
                "use a Python built with a newer SQLite, or the PostgreSQL or Redis backend"
            )
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._schema_ready = False

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            if not self._schema_ready:
                prepare_schema(conn)
                self._schema_ready = True
        except sqlite3.Error as error:
            raise BackendUnavailable(f"cannot open SQLite database {self.path}: {error}") from error
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def cursor(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection inside a transaction (``BEGIN IMMEDIATE`` when writing)."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            self.forget()
            raise BackendUnavailable(f"SQLite database {self.path} failed: {error}") from error

    def run(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """Run one statement in autocommit mode (fetch all of a ``RETURNING``: it commits when done)."""
        try:
            return self.connection().execute(sql, params)
        except sqlite3.Error as error:
            self.forget()
            raise BackendUnavailable(f"SQLite database {self.path} failed: {error}") from error

    def forget(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        self._schema_ready = False
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def prepare_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, or upgrade an older database (see "Upgrades" in the module docstring)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")  # one process upgrades; the others wait, then find it done
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            cache, jobs = _columns(conn, "offload_cache"), _columns(conn, "offload_jobs")
            if cache and "namespace" not in cache:
                conn.execute(
                    f"ALTER TABLE offload_cache ADD COLUMN namespace TEXT NOT NULL DEFAULT '{DEFAULT_NAMESPACE}'"
                )
                conn.execute(_NAMESPACE_FROM_KEY)
            if cache and "tags" not in cache:
                conn.execute("ALTER TABLE offload_cache ADD COLUMN tags TEXT")
            if jobs and "namespace" not in jobs:
                conn.execute(
                    f"ALTER TABLE offload_jobs ADD COLUMN namespace TEXT NOT NULL DEFAULT '{DEFAULT_NAMESPACE}'"
                )
            for statement in _TABLES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


#: How many times this process is a forked child of the one that imported this module.
_forks = [0]


def _forked() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_forked)


class SQLiteCache(Cache):
    """Cache entries as rows; expired rows are ignored on read and swept on write."""

    notifies = True

    def __init__(self, database: SQLiteDatabase, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.db = database
        self.namespace = namespace
        self.watchers = Mailboxes(os.path.join(database.path + ".watch", namespace))
        self._writes = 0
        self._mapped: mmap.mmap | None = None
        self._mapped_fork = -1  # the fork count when it was mapped: a child maps its own

    def get(self, key: str) -> bytes | None:
        row = self.db.run(
            "SELECT value FROM offload_cache WHERE key = ? AND expires > ?", (key, time.time())
        ).fetchone()
        return None if row is None else as_bytes(row[0])

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        now = time.time()
        return self.db.run(_ADD, (key, value, now + ttl, self.namespace, now)).rowcount == 1

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        now = time.time()
        if index is None or not index.tags:
            self.db.run(_STORE, self._row(key, value, now + ttl, index))
        else:
            with self.db.cursor(write=True) as conn:
                self._store(conn, key, value, now + ttl, index)
        self._wrote(now)

    def _row(self, key: str, value: bytes, expires: float, index: IndexEntry | None) -> tuple[object, ...]:
        if index is None:
            return (key, value, expires, self.namespace, None, None, 0, None)
        return (
            key,
            value,
            expires,
            self.namespace,
            index.path,
            index.query,
            int(index.failed),
            encode_tags(index.tags),
        )

    def _store(
        self, conn: sqlite3.Connection, key: str, value: bytes, expires: float, index: IndexEntry | None
    ) -> None:
        """Store inside a transaction, with a hint row per tag."""
        conn.execute(_STORE, self._row(key, value, expires, index))
        if index is not None and index.tags:
            conn.executemany(
                "INSERT OR IGNORE INTO offload_tags (namespace, tag, key) VALUES (?, ?, ?)",
                [(self.namespace, tag, key) for tag in index.tags],
            )

    def _wrote(self, now: float) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            with self.db.cursor(write=True) as conn:
                conn.execute("DELETE FROM offload_cache WHERE expires <= ?", (now,))
                conn.execute(
                    "DELETE FROM offload_tags WHERE NOT EXISTS (SELECT 1 FROM offload_cache c "
                    "WHERE c.key = offload_tags.key AND c.path IS NOT NULL AND c.tags IS NOT NULL)"
                )

    def touch(self, key: str, ttl: float) -> bool:
        now = time.time()
        cursor = self.db.run(
            "UPDATE offload_cache SET expires = ? WHERE key = ? AND expires > ?", (now + ttl, key, now)
        )
        return cursor.rowcount == 1

    def delete(self, key: str) -> None:
        self.db.run("DELETE FROM offload_cache WHERE key = ?", (key,))

    def take(self, key: str) -> bytes | None:
        rows = self.db.run(
            "DELETE FROM offload_cache WHERE key = ? AND expires > ? AND typeof(value) = 'blob' RETURNING value",
            (key, time.time()),
        ).fetchall()
        return as_bytes(rows[0][0]) if rows else None

    def incr(self, key: str, ttl: float) -> int:
        rows = self.db.run(_INCR, (key, time.time(), ttl, self.namespace)).fetchall()
        return int(rows[0][0])

    # -- expiry: log first, then remove -----------------------------------------------

    def expire(self, rule: ExpiryRule, restamp: Restamp | None = None) -> int:
        now = time.time()
        with self.db.cursor(write=True) as conn:
            (epoch,) = conn.execute(
                "INSERT INTO offload_epochs (namespace, epoch) VALUES (?, 1) "
                "ON CONFLICT (namespace) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
                (self.namespace,),
            ).fetchall()[0]
            conn.execute(
                "INSERT INTO offload_expiries (namespace, epoch, logged, rule) VALUES (?, ?, ?, ?)",
                (self.namespace, epoch, now, rule.encode()),
            )
            conn.execute("DELETE FROM offload_expiries WHERE logged < ?", (now - LOG_SECONDS,))
            plan = plan_expiry(rule, restamp, self._candidates(conn, rule, now, restamp is not None))
            conn.executemany("DELETE FROM offload_cache WHERE key = ?", [(key,) for key in plan.removed])
            conn.executemany("UPDATE offload_cache SET value = ? WHERE key = ?", [(v, k) for k, v in plan.rewritten])
            if rule.tag is not None:
                conn.executemany(
                    "DELETE FROM offload_tags WHERE namespace = ? AND tag = ? AND key = ?",
                    [(self.namespace, rule.tag, key) for key in plan.removed],
                )
        self._bump_generation()  # after the commit, so no one caches a row that is being changed
        return plan.touched

    def _candidates(
        self, conn: sqlite3.Connection, rule: ExpiryRule, now: float, values: bool
    ) -> Iterator[tuple[str, bool, IndexEntry, object]]:
        """The answers of this namespace the rule may select: by tag through the tag rows, else by path prefix."""
        columns = "c.key, c.expires > :now, c.path, c.query, c.failed, c.tags, " + ("c.value" if values else "NULL")
        if rule.tag is None:
            sql = f"SELECT {columns} FROM offload_cache c WHERE c.namespace = :ns AND c.path IS NOT NULL"
        else:
            sql = (
                f"SELECT {columns} FROM offload_tags t JOIN offload_cache c ON c.key = t.key "
                "WHERE t.namespace = :ns AND t.tag = :tag AND c.namespace = :ns AND c.path IS NOT NULL"
            )
        if rule.pattern is not None:
            sql += " AND c.path GLOB :glob"
        params = {"now": now, "ns": self.namespace, "tag": rule.tag, "glob": glob_pattern(rule.pattern or "*")}
        for key, live, path, query, failed, tags, value in conn.execute(sql, params):
            yield key, bool(live), IndexEntry(path, query or "", bool(failed), decode_tags(tags)), value

    def epoch(self) -> int:
        row = self.db.run("SELECT epoch FROM offload_epochs WHERE namespace = ?", (self.namespace,)).fetchone()
        return 0 if row is None else int(row[0])

    def expired_since(self, epoch: int, entry: IndexEntry) -> ExpiryRule | None:
        return expiry_after(epoch, self.db.run(_LOG_AFTER, (self.namespace, epoch)).fetchall(), entry)

    # -- jobs: each one transaction ------------------------------------------------------

    def start_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float
    ) -> tuple[bool, bytes | None, int]:
        now = time.time()
        with self.db.cursor(write=True) as conn:
            if conn.execute(_ADD, (running, marker, now + lease, self.namespace, now)).rowcount != 1:
                return False, None, 0
            conn.execute(_STORE, self._row(pending, marker, now + lease, None))
            row = conn.execute(
                "SELECT value FROM offload_cache WHERE key = ? AND expires > ?", (answer, now)
            ).fetchone()
            epoch = conn.execute("SELECT epoch FROM offload_epochs WHERE namespace = ?", (self.namespace,)).fetchone()
        return True, None if row is None else as_bytes(row[0]), 0 if epoch is None else int(epoch[0])

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
        now = time.time()
        survived = True
        with self.db.cursor(write=True) as conn:
            if value is not None:
                self._store(conn, answer, value, now + ttl, index)
                if index is not None:
                    rule = expiry_after(since, conn.execute(_LOG_AFTER, (self.namespace, since)).fetchall(), index)
                    if rule is not None:
                        survived = False
                        rewritten = restamped(rule, restamp, value)
                        if rewritten is None:
                            conn.execute("DELETE FROM offload_cache WHERE key = ?", (answer,))
                        else:
                            conn.execute("UPDATE offload_cache SET value = ? WHERE key = ?", (rewritten, answer))
            conn.executemany("DELETE FROM offload_cache WHERE key = ?", [(key,) for key in done])
        if value is not None:
            self._wrote(now)
            self.watchers.send(answer.encode())
        return survived

    def watch(self, on_stored: Callable[[str], None]) -> Callable[[], None] | None:
        bound = self.watchers.bind()
        if bound is None:
            return None
        sock, name = bound
        stopped = threading.Event()

        def listen() -> None:
            try:
                while not stopped.is_set():
                    for message in receive(sock, 0.5):
                        if stopped.is_set():
                            return
                        try:
                            on_stored(message.decode("utf-8", "replace"))
                        except Exception:
                            log.exception("a watcher of stored answers failed")
            finally:
                sock.close()

        def stop() -> None:
            stopped.set()
            with contextlib.suppress(OSError):
                os.unlink(name)  # no more datagrams come; the thread closes the socket

        threading.Thread(target=listen, name="offload-sqlite-watch", daemon=True).start()
        return stop

    # -- answers kept in memory: a counter every process on the machine maps -------------------

    def generation(self) -> int | None:
        counter = self._counter()
        return None if counter is None else int.from_bytes(counter[:8], "little")

    def _bump_generation(self) -> None:
        counter = self._counter()
        if counter is None:
            return
        with open(self.db.path + ".generation", "rb") as lock:  # one increment at a time, machine-wide
            fcntl.flock(lock, fcntl.LOCK_EX)
            counter[:8] = ((int.from_bytes(counter[:8], "little") + 1) % 2**64).to_bytes(8, "little")

    def _counter(self) -> mmap.mmap | None:
        """Eight bytes shared by every process on the machine, in a file beside the database."""
        if self._mapped_fork == _forks[0]:  # not os.getpid(): that is a system call on every hit
            return self._mapped
        self._mapped_fork = _forks[0]
        self._mapped = None
        try:
            fd = os.open(self.db.path + ".generation", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size < 8:
                    os.ftruncate(fd, 8)
                self._mapped = mmap.mmap(fd, 8)
            finally:
                os.close(fd)
        except OSError as error:
            log.debug("no shared generation counter (%s): answers are not kept in memory", error)
        return self._mapped

    def stats(self) -> dict[str, int]:
        row = self.db.run(
            "SELECT COALESCE(SUM(1 - failed), 0), COALESCE(SUM(failed), 0) FROM offload_cache "
            "WHERE namespace = ? AND path IS NOT NULL AND expires > ?",
            (self.namespace, time.time()),
        ).fetchone()
        return {"cached": int(row[0]), "failed": int(row[1])}

    def namespaces(self) -> list[str]:
        return sorted(row[0] for row in self.db.run(_ANSWER_NAMESPACES, (time.time(),)))

    def close(self) -> None:
        self.db.forget()


class SQLiteQueue(Queue):
    """Jobs as rows; a claim sets ``leased_until``, and an expired lease makes the row claimable again."""

    def __init__(self, database: SQLiteDatabase, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.db = database
        self.namespace = namespace
        self.workers = Mailboxes(os.path.join(database.path + ".wake", namespace))
        self._socket: socket.socket | None = None
        self._polls = False  # no socket could be bound: poll

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        if limit is None:
            self.db.run(
                "INSERT INTO offload_jobs (namespace, key, payload) VALUES (?, ?, ?)", (self.namespace, key, payload)
            )
        else:  # one statement: SQLite takes the write lock before it counts
            pushed = self.db.run(
                "INSERT INTO offload_jobs (namespace, key, payload) SELECT ?1, ?2, ?3 WHERE (SELECT count(*) FROM "
                "(SELECT 1 FROM offload_jobs WHERE namespace = ?1 AND (token IS NULL OR leased_until <= ?4) LIMIT ?5))"
                " < ?5",
                (self.namespace, key, payload, time.time(), limit),
            ).rowcount
            if not pushed:
                raise QueueFull()
        self.workers.send(b"!")

    def claim(self, lease: float, wait: float) -> Claim | None:
        claims = self.claim_many(lease, wait, 1)
        return claims[0] if claims else None

    def claim_many(self, lease: float, wait: float, limit: int) -> list[Claim]:
        """One ``UPDATE ... WHERE id IN (... LIMIT n)`` statement takes up to ``limit`` jobs."""
        if limit < 1:
            return []
        deadline = time.monotonic() + wait
        while True:
            claims = self._claim_now(lease, limit)
            if claims or time.monotonic() >= deadline:
                return claims
            self._sleep(min(deadline - time.monotonic(), 1.0))

    def _claim_now(self, lease: float, limit: int) -> list[Claim]:
        now = time.time()
        token = uuid.uuid4().hex  # one token for the batch: each claim still owns only its own row
        rows = self.db.run(
            "UPDATE offload_jobs SET leased_until = ?1, token = ?2 WHERE id IN (SELECT id FROM offload_jobs "
            "WHERE namespace = ?3 AND (leased_until IS NULL OR leased_until <= ?4) ORDER BY id LIMIT ?5) "
            "RETURNING id, key, payload",
            (now + lease, token, self.namespace, now, limit),
        ).fetchall()
        return [claimed(row, token) for row in sorted(rows, key=lambda row: int(row[0]))]

    def extend(self, claim: Claim, lease: float) -> bool:
        return self.extend_many([claim], lease)[0]

    def extend_many(self, claims: Sequence[Claim], lease: float) -> list[bool]:
        """One write transaction renews every claim that still owns its row."""
        until = time.time() + lease
        with self.db.cursor(write=True) as conn:
            return [
                conn.execute(
                    "UPDATE offload_jobs SET leased_until = ? WHERE id = ? AND token = ?",
                    (until, int(claim.job_id), claim.token),
                ).rowcount
                == 1
                for claim in claims
            ]

    def ack(self, claim: Claim) -> None:
        self.db.run("DELETE FROM offload_jobs WHERE id = ? AND token = ?", (int(claim.job_id), claim.token))

    def ack_many(self, claims: Sequence[Claim]) -> None:
        """One write transaction removes every job its claim still owns."""
        with self.db.cursor(write=True) as conn:
            conn.executemany(
                "DELETE FROM offload_jobs WHERE id = ? AND token = ?",
                [(int(claim.job_id), claim.token) for claim in claims],
            )

    def release(self, claim: Claim, delay: float = 0.0) -> None:
        with self.db.cursor(write=True) as conn:
            rows = conn.execute(
                "DELETE FROM offload_jobs WHERE id = ? AND token = ? RETURNING namespace, key, payload",
                (int(claim.job_id), claim.token),
            ).fetchall()
            if rows:  # a new row: the back of the queue
                conn.execute(
                    "INSERT INTO offload_jobs (namespace, key, payload, leased_until) VALUES (?, ?, ?, ?)",
                    (*rows[0], time.time() + delay if delay > 0 else None),
                )
        if rows and delay <= 0:
            self.workers.send(b"!")

    def bury(self, claim: Claim, error: str) -> None:
        with self.db.cursor(write=True) as conn:
            conn.execute(
                "INSERT INTO offload_dead (id, namespace, key, payload, error, buried) "
                "SELECT id, namespace, key, payload, ?, ? FROM offload_jobs WHERE id = ? AND token = ?",
                (error, time.time(), int(claim.job_id), claim.token),
            )
            conn.execute("DELETE FROM offload_jobs WHERE id = ? AND token = ?", (int(claim.job_id), claim.token))

    def dead(self, limit: int = 100) -> list[DeadJob]:
        rows = self.db.run(
            "SELECT id, key, payload, error, buried FROM offload_dead WHERE namespace = ? "
            "ORDER BY buried DESC, id DESC LIMIT ?",
            (self.namespace, limit),
        ).fetchall()
        return [dead_letter(row) for row in rows]

    def revive(self, job_id: str) -> bool:
        if not job_id.isdigit():  # not an id this queue gives
            return False
        number = int(job_id)
        with self.db.cursor(write=True) as conn:
            rows = conn.execute(
                "DELETE FROM offload_dead WHERE id = ? AND namespace = ? RETURNING namespace, key, payload",
                (number, self.namespace),
            ).fetchall()
            if rows:
                conn.execute("INSERT INTO offload_jobs (namespace, key, payload) VALUES (?, ?, ?)", rows[0])
        if rows:
            self.workers.send(b"!")
        return bool(rows)

    def stats(self) -> dict[str, int]:
        row = self.db.run(
            "SELECT COALESCE(SUM(token IS NULL OR leased_until <= ?2), 0), "
            "COALESCE(SUM(token IS NOT NULL AND leased_until > ?2), 0), "
            "(SELECT count(*) FROM offload_dead WHERE namespace = ?1) FROM offload_jobs WHERE namespace = ?1",
            (self.namespace, time.time()),
        ).fetchone()
        return {"queued": int(row[0]), "running": int(row[1]), "dead": int(row[2])}

    def waiting(self, limit: int = 100) -> list[QueuedJob]:
        rows = self.db.run(
            "SELECT id, key, payload FROM offload_jobs WHERE namespace = ? AND (leased_until IS NULL OR "
            "(token IS NOT NULL AND leased_until <= ?)) ORDER BY id LIMIT ?",
            (self.namespace, time.time(), limit),
        ).fetchall()
        return [queued_job(row) for row in rows]

    def running(self, limit: int = 100) -> list[QueuedJob]:
        rows = self.db.run(
            "SELECT id, key, payload, leased_until FROM offload_jobs WHERE namespace = ? AND token IS NOT NULL "
            "AND leased_until > ? ORDER BY leased_until, id LIMIT ?",
            (self.namespace, time.time(), limit),
        ).fetchall()
        return [queued_job(row) for row in rows]

    def namespaces(self) -> list[str]:
        rows = self.db.run("SELECT namespace FROM offload_jobs UNION SELECT namespace FROM offload_dead")
        return sorted(row[0] for row in rows)

    def _sleep(self, seconds: float) -> None:
        """Wait for a push's datagram (a lost one costs at most the second claim() waits at most)."""
        if seconds <= 0:
            return
        sock = self._wake_socket()
        if sock is None:
            time.sleep(min(seconds, 0.05))
            return
        for _ in receive(sock, seconds):
            pass

    def _wake_socket(self) -> socket.socket | None:
        if self._socket is None and not self._polls:
            bound = self.workers.bind()
            if bound is None:
                self._polls = True
                return None
            self._socket, name = bound
            # Closed and unlinked when the queue is closed, dropped, or the process exits.
            self._socket_finalizer = weakref.finalize(self, _close_socket, self._socket, name)
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket_finalizer()
            self._socket = None
        self.db.forget()


def encode_tags(tags: Sequence[str]) -> str | None:
    """Tags as one column, ``,a,b,``; a ``,`` or ``%`` inside a tag is percent-escaped, so any tag reads back.

    >>> encode_tags(("report", "a,b")), decode_tags(encode_tags(("report", "a,b")))
    (',report,a%2Cb,', ('report', 'a,b'))
    """
    if not tags:
        return None
    return "," + ",".join(tag.replace("%", "%25").replace(",", "%2C") for tag in tags) + ","


def decode_tags(column: object) -> tuple[str, ...]:
    if not isinstance(column, str):
        return ()
    return tuple(tag.replace("%2C", ",").replace("%25", "%") for tag in column.split(",") if tag)


class Mailboxes:
    """Unix datagram sockets in one folder: each waiting process binds one, and a sender writes to all.

    Socket paths are short (about 100 bytes); a longer folder is reached
    through ``/proc/self/fd/N`` where the system has it.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[str]:
        """The folder as a path short enough for a socket address."""
        if len(self.folder) < 80 or not os.path.isdir("/proc/self/fd"):
            yield self.folder
            return
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)

    def bind(self) -> tuple[socket.socket, str] | None:
        """A new socket in the folder, and its path; None when none can be bound (then callers poll)."""
        if not hasattr(socket, "AF_UNIX"):
            return None
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            os.makedirs(self.folder, exist_ok=True)
            with self._reachable() as folder:
                sock.bind(os.path.join(folder, name))
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            log.debug("no datagram socket in %s (%s)", self.folder, error)
            return None
        return sock, os.path.join(self.folder, name)

    def send(self, message: bytes) -> None:
        """Send ``message`` to every socket in the folder; unlink those nobody listens on any more."""
        try:
            names = os.listdir(self.folder)
            if names:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender, self._reachable() as folder:
                    sender.setblocking(False)
                    for name in names:
                        self._send(sender, message, folder, name)
        except OSError:
            pass  # no folder (nobody waits), or it went away meanwhile

    def _send(self, sender: socket.socket, message: bytes, folder: str, name: str) -> None:
        try:
            sender.sendto(message, os.path.join(folder, name))
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.folder, name))  # its process is gone
        except OSError:
            pass  # its buffer is full: it has plenty to read already


def receive(sock: socket.socket, timeout: float) -> Iterator[bytes]:
    """The datagrams that arrive within ``timeout`` seconds (all that are queued once one came)."""
    ready, _, _ = select.select([sock], [], [], timeout)
    while ready:
        try:
            message = sock.recv(65536)
        except OSError:  # drained, or closed meanwhile
            return
        if message:
            yield message


def _close_socket(sock: socket.socket, name: str) -> None:
    sock.close()
    with contextlib.suppress(OSError):
        os.unlink(name)


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL once; connections opened at the same moment wait for the one that switches it."""
    for _ in range(50):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error):
                raise
            time.sleep(0.02)
    conn.execute("PRAGMA journal_mode=WAL")
