"""The embedded default backend (``sqlite:///path``): cache and queue in one SQLite file.

Uses only the standard library's :mod:`sqlite3`, in WAL mode, so several web
processes and several worker processes on one machine share it safely: the
atomic add is an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` whose
row count says who won, and a claim is an ``UPDATE`` inside ``BEGIN
IMMEDIATE``. Workers sleep on a Unix datagram socket beside the database and
are woken by each push, so a job starts within a millisecond or two without
busy polling. ``sqlite:///offload.sqlite3`` is relative to the working
directory, ``sqlite:////var/lib/app/offload.sqlite3`` is absolute.

Schema (created on first use)::

    offload_cache(key TEXT PRIMARY KEY, value BLOB, expires REAL,
                  path TEXT, query TEXT, failed INTEGER)
    offload_jobs(id INTEGER PRIMARY KEY, key TEXT, payload BLOB,
                 leased_until REAL, token TEXT)
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
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from offload.backends.base import Cache, Claim, IndexEntry, Queue
from offload.errors import BackendUnavailable, ConfigurationError, QueueFull
from offload.keys import glob_pattern, params_match

if TYPE_CHECKING:
    from offload.backends import Backend

log = logging.getLogger("offload.sqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offload_cache (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires REAL NOT NULL,
    path TEXT,
    query TEXT,
    failed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS offload_cache_path ON offload_cache (path) WHERE path IS NOT NULL;
CREATE INDEX IF NOT EXISTS offload_cache_expires ON offload_cache (expires);
CREATE TABLE IF NOT EXISTS offload_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    leased_until REAL,
    token TEXT
);
CREATE INDEX IF NOT EXISTS offload_jobs_lease ON offload_jobs (leased_until);
"""


def open_backend(url: str) -> Backend:
    from offload.backends import Backend

    database = SQLiteDatabase(database_path(url))
    return Backend(url, SQLiteCache(database), SQLiteQueue(database))


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
    """One connection per thread and process to one database file, created on first use."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
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
                conn.executescript(_SCHEMA)
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
        """Run one statement in autocommit mode."""
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


#: How many times this process is a forked child of the one that imported this module.
_forks = [0]


def _forked() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_forked)


class SQLiteCache(Cache):
    """Cache entries as rows; expired rows are ignored on read and swept on write."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self.db = database
        self._writes = 0
        self._mapped: mmap.mmap | None = None
        self._mapped_fork = -1  # the fork count when it was mapped: a child maps its own

    def get(self, key: str) -> bytes | None:
        row = self.db.run(
            "SELECT value FROM offload_cache WHERE key = ? AND expires > ?", (key, time.time())
        ).fetchone()
        return None if row is None else bytes(row[0])

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        now = time.time()
        cursor = self.db.run(
            "INSERT INTO offload_cache (key, value, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires, "
            "path = NULL, query = NULL, failed = 0 WHERE offload_cache.expires <= ?",
            (key, value, now + ttl, now),
        )
        return cursor.rowcount == 1

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        now = time.time()
        path, query, failed = (index.path, index.query, index.failed) if index else (None, None, False)
        self.db.run(
            "INSERT OR REPLACE INTO offload_cache (key, value, expires, path, query, failed) VALUES (?, ?, ?, ?, ?, ?)",
            (key, value, now + ttl, path, query, int(failed)),
        )
        self._writes += 1
        if self._writes % 1000 == 0:
            self.db.run("DELETE FROM offload_cache WHERE expires <= ?", (now,))

    def touch(self, key: str, ttl: float) -> bool:
        now = time.time()
        cursor = self.db.run(
            "UPDATE offload_cache SET expires = ? WHERE key = ? AND expires > ?", (now + ttl, key, now)
        )
        return cursor.rowcount == 1

    def delete(self, key: str) -> None:
        self.db.run("DELETE FROM offload_cache WHERE key = ?", (key,))

    def expire(self, pattern: str, params: Sequence[tuple[str, str]] = ()) -> int:
        with self.db.cursor(write=True) as conn:
            rows = conn.execute(
                "SELECT key, query, expires > ? FROM offload_cache WHERE path IS NOT NULL AND path GLOB ?",
                (time.time(), glob_pattern(pattern)),
            ).fetchall()
            doomed = [(key, live) for key, query, live in rows if params_match(query, params)]
            conn.executemany("DELETE FROM offload_cache WHERE key = ?", [(key,) for key, _ in doomed])
        self._bump_generation()  # after the commit, so no one caches a row that is being deleted
        return sum(bool(live) for _, live in doomed)  # an expired answer was gone already

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
            "WHERE path IS NOT NULL AND expires > ?",
            (time.time(),),
        ).fetchone()
        return {"cached": int(row[0]), "failed": int(row[1])}

    def close(self) -> None:
        self.db.forget()


class SQLiteQueue(Queue):
    """Jobs as rows; a claim sets ``leased_until``, and an expired lease makes the row claimable again."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self.db = database
        self.wake_dir = database.path + ".wake"
        self._socket: socket.socket | None = None

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        with self.db.cursor(write=True) as conn:
            if limit is not None:
                (waiting,) = conn.execute(
                    "SELECT COUNT(*) FROM offload_jobs WHERE leased_until IS NULL OR leased_until <= ?", (time.time(),)
                ).fetchone()
                if waiting >= limit:
                    raise QueueFull()
            conn.execute("INSERT INTO offload_jobs (key, payload) VALUES (?, ?)", (key, payload))
        self._wake_workers()

    def claim(self, lease: float, wait: float) -> Claim | None:
        deadline = time.monotonic() + wait
        while True:
            claim = self._claim_now(lease)
            if claim is not None or time.monotonic() >= deadline:
                return claim
            self._sleep(min(deadline - time.monotonic(), 1.0))

    def _claim_now(self, lease: float) -> Claim | None:
        now = time.time()
        token = uuid.uuid4().hex
        with self.db.cursor(write=True) as conn:
            row = conn.execute(
                "SELECT id, key, payload FROM offload_jobs WHERE leased_until IS NULL OR leased_until <= ? "
                "ORDER BY id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE offload_jobs SET leased_until = ?, token = ? WHERE id = ?", (now + lease, token, row[0])
            )
        return Claim(str(row[0]), row[1], bytes(row[2]), token)

    def extend(self, claim: Claim, lease: float) -> bool:
        cursor = self.db.run(
            "UPDATE offload_jobs SET leased_until = ? WHERE id = ? AND token = ?",
            (time.time() + lease, int(claim.job_id), claim.token),
        )
        return cursor.rowcount == 1

    def ack(self, claim: Claim) -> None:
        self.db.run("DELETE FROM offload_jobs WHERE id = ? AND token = ?", (int(claim.job_id), claim.token))

    def release(self, claim: Claim) -> None:
        self.db.run(
            "UPDATE offload_jobs SET leased_until = NULL, token = NULL WHERE id = ? AND token = ?",
            (int(claim.job_id), claim.token),
        )
        self._wake_workers()

    def stats(self) -> dict[str, int]:
        row = self.db.run(
            "SELECT COALESCE(SUM(leased_until IS NULL OR leased_until <= ?1), 0), "
            "COALESCE(SUM(leased_until > ?1), 0) FROM offload_jobs",
            (time.time(),),
        ).fetchone()
        return {"queued": int(row[0]), "running": int(row[1])}

    # Waking workers: each waiting worker binds a datagram socket in wake_dir;
    # a push sends one byte to each. A lost wake-up costs at most one second.

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        sock = self._wake_socket()
        if sock is None:
            time.sleep(min(seconds, 0.05))
            return
        ready, _, _ = select.select([sock], [], [], seconds)
        if ready:
            with contextlib.suppress(OSError):
                while True:
                    sock.recv(64)

    def _wake_socket(self) -> socket.socket | None:
        if self._socket is not None:
            return self._socket
        if not hasattr(socket, "AF_UNIX"):
            return None
        name = os.path.join(self.wake_dir, f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock")
        if len(name.encode()) > 100:  # Unix socket paths are short: poll instead.
            return None
        try:
            os.makedirs(self.wake_dir, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(name)
            sock.setblocking(False)
        except OSError as error:
            log.debug("no wake-up socket (%s); polling instead", error)
            return None
        self._socket = sock
        # Closed and unlinked when the queue is closed, dropped, or the process exits.
        self._socket_finalizer = weakref.finalize(self, _close_wake_socket, sock, name)
        return sock

    def _wake_workers(self) -> None:
        try:
            names = os.listdir(self.wake_dir)
        except OSError:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for name in names:
                path = os.path.join(self.wake_dir, name)
                try:
                    sender.sendto(b"!", path)
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # its worker is gone
                except OSError:
                    pass  # its buffer is full: it is awake already

    def close(self) -> None:
        if self._socket is not None:
            self._socket_finalizer()
            self._socket = None
        self.db.forget()


def _close_wake_socket(sock: socket.socket, name: str) -> None:
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
