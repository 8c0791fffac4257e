"""Backend servers the harness owns: throwaway Redis and PostgreSQL, and SQLite files.

Redis and PostgreSQL run from the installed binaries on free loopback ports,
with their data in a temporary directory, so stopping them mid-run never
touches a server anyone else uses. PostgreSQL refuses to run as root: when
the harness runs as root it starts the server as the ``postgres`` user. Each
scenario gets a fresh namespace (an empty Redis database, a new PostgreSQL
database, a new SQLite file). :meth:`BackendServer.stop` and
:meth:`BackendServer.start` make the outage of the backend-restart scenario;
for SQLite the outage is the database's directory moved away and back.

``redis-cluster`` (not in the default list: ``--backend redis-cluster``) is a
throwaway Redis Cluster of six nodes (:mod:`offload_bench.cluster`); its
outage is a failover (:meth:`RedisClusterServer.fail_over`), not a restart.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import sqlite3
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TypeVar

from offload_bench.cluster import RedisCluster
from offload_bench.procs import Child, HarnessError, ProcessSet, accepting, child_env, free_port, wait_for

#: The backends a run covers unless told otherwise.
BACKENDS = ("sqlite", "redis", "postgres")
#: Every backend ``--backend`` may name.
ALL_BACKENDS = (*BACKENDS, "redis-cluster")


Server = TypeVar("Server", bound="BackendServer")


class BackendServer(ABC):
    """One backend for a whole harness run."""

    name: str
    #: The scenarios this backend cannot run: a run skips them.
    unsupported: frozenset[str] = frozenset({"failover"})

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def missing() -> str | None:
        """Why this backend cannot run on this machine, or None."""
        return None

    def launch(self) -> None:  # noqa: B027 - nothing to start for some backends
        """Bring the server up for the first time."""

    @abstractmethod
    def url_for(self, scenario: str) -> str:
        """The backend URL of a fresh, empty namespace for ``scenario``."""

    @abstractmethod
    def stop(self) -> None:
        """Make the backend unreachable (the outage of the backend-restart scenario)."""

    @abstractmethod
    def start(self) -> None:
        """Bring the backend back after :meth:`stop`, with the data it had."""

    def close(self) -> None:  # noqa: B027 - nothing to stop for some backends
        """Stop everything this server started."""

    def __enter__(self: Server) -> Server:
        """Launched for a ``with`` block, closed at its end."""
        self.launch()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SQLiteFiles(BackendServer):
    """One SQLite file per scenario.

    The outage moves the database's directory away, so no process can open it,
    and holds a write lock on it, so processes that have it open already
    cannot write to it either (SQLite keeps working on a moved file).
    """

    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self._current: Path | None = None
        self._lock: sqlite3.Connection | None = None

    def url_for(self, scenario: str) -> str:
        folder = self.directory / scenario / "db"
        folder.mkdir(parents=True)
        self._current = folder
        return f"sqlite:///{folder / 'offload.sqlite3'}"

    def stop(self) -> None:
        assert self._current is not None, "url_for() first"
        away = self._current.with_name("db-away")
        self._current.rename(away)
        self._lock = sqlite3.connect(away / "offload.sqlite3", timeout=30, isolation_level=None)
        self._lock.execute("BEGIN EXCLUSIVE")

    def start(self) -> None:
        assert self._current is not None, "url_for() first"
        if self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None
        self._current.with_name("db-away").rename(self._current)


class RedisServer(BackendServer):
    """``redis-server`` on a free port, no persistence: a restart loses every key, as a cache server may."""

    name = "redis"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.port = free_port()
        self.processes = ProcessSet(directory, child_env({}))
        self._server: Child | None = None
        self._databases = 0

    @staticmethod
    def missing() -> str | None:
        if shutil.which("redis-server") is None:
            return "redis-server is not installed"
        if importlib.util.find_spec("redis") is None:
            return 'the redis client is not installed (pip install "offload[redis]")'
        return None

    def launch(self) -> None:
        self.start()

    def start(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.directory), "--databases", "64"]
        self._server = self.processes.start("redis-server", command)
        wait_for(self._pong, 30, f"redis-server on port {self.port}")

    def _pong(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def url_for(self, scenario: str) -> str:
        import redis

        self._databases = (self._databases + 1) % 64
        redis.Redis(port=self.port, db=self._databases).flushdb()
        return f"redis://127.0.0.1:{self.port}/{self._databases}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(10)  # SIGTERM: a clean shutdown, nothing saved
            self.processes.children.remove(self._server)
            self._server = None

    def close(self) -> None:
        self.processes.stop_all(10)


class PostgresServer(BackendServer):
    """A throwaway cluster (``initdb`` + ``postgres``) on a free port, as ``postgres`` when run as root."""

    name = "postgres"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.port = free_port()
        self.data = self.directory / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.processes = ProcessSet(directory, child_env({"LC_ALL": "C"}))
        self._server: Child | None = None
        self._databases = 0

    @staticmethod
    def binary(name: str) -> str | None:
        found = shutil.which(name)
        if found:
            return found
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (folder / name).exists():
                return str(folder / name)
        return None

    @staticmethod
    def missing() -> str | None:
        if PostgresServer.binary("initdb") is None or PostgresServer.binary("postgres") is None:
            return "the PostgreSQL server (initdb, postgres) is not installed"
        if importlib.util.find_spec("psycopg") is None:
            return 'psycopg is not installed (pip install "offload[postgres]")'
        if importlib.util.find_spec("offload.backends.postgres") is None:
            return "this offload has no PostgreSQL backend"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run the server as"
        return None

    def launch(self) -> None:
        if self.user is not None:
            record = pwd.getpwnam(self.user)
            os.chown(self.directory, record.pw_uid, record.pw_gid)
            for parent in self.directory.parents:  # the server must reach its data directory
                if str(parent) in ("/", tempfile.gettempdir()):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
        initdb = self.processes.start(
            "initdb",
            [str(self.binary("initdb")), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"],
            user=self.user,
        )
        if initdb.process.wait(120) != 0:
            raise RuntimeError(f"initdb failed:\n{initdb.text()}")
        self.processes.children.remove(initdb)
        self.start()

    def start(self) -> None:
        command = [str(self.binary("postgres")), "-D", str(self.data), "-p", str(self.port)]
        command += ["-k", str(self.directory), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        command += ["-c", "max_connections=300", "-c", "synchronous_commit=off"]
        self._server = self.processes.start("postgres", command, user=self.user)
        wait_for(self._ready, 60, f"PostgreSQL on port {self.port}")

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self._dsn("postgres"), connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def _dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url_for(self, scenario: str) -> str:
        import psycopg

        self._databases += 1
        name = f"chaos_{self._databases}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self._dsn(name)

    def stop(self) -> None:
        if self._server is not None:
            self._server.signal(signal.SIGINT)  # fast shutdown: sessions are cut, data is kept
            self._server.stop(30)
            self.processes.children.remove(self._server)
            self._server = None
            wait_for(lambda: not accepting(self.port), 10, "PostgreSQL to stop listening")

    def close(self) -> None:
        if self._server is not None:
            self._server.signal(signal.SIGINT)
        self.processes.stop_all(15)


class RedisClusterServer(BackendServer):
    """Three masters and three replicas; a scenario's outage is its master killed and a replica promoted."""

    name = "redis-cluster"
    unsupported = frozenset({"backend-restart"})

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.cluster: RedisCluster | None = None
        self._runs = 0

    @staticmethod
    def missing() -> str | None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            return "redis-server and redis-cli are not installed"
        if importlib.util.find_spec("redis") is None:
            return 'the redis client is not installed (pip install "offload[redis]")'
        return None

    def launch(self) -> None:
        self._runs += 1
        folder = self.directory / f"cluster-{self._runs}"
        folder.mkdir()
        self.cluster = RedisCluster(str(shutil.which("redis-server")), str(shutil.which("redis-cli")), str(folder))
        self.cluster.start()

    def url_for(self, scenario: str) -> str:
        if self.cluster is None or len(self.cluster.live()) < len(self.cluster.ports):  # a failover left it short
            self.close()
            self.launch()
        assert self.cluster is not None
        self.cluster.flush()
        return self.cluster.url

    def fail_over(self) -> int:
        """SIGKILL the master of the cache, ``{offload}``, and of the queue shards it serves; wait for its replica."""
        assert self.cluster is not None, "launch() first"
        return self.cluster.kill_master("{offload}")

    def stop(self) -> None:
        raise HarnessError("a Redis Cluster is not restarted: its outage is a failover")

    def start(self) -> None:
        raise HarnessError("a Redis Cluster is not restarted: its outage is a failover")

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


KINDS: dict[str, type[BackendServer]] = {
    "sqlite": SQLiteFiles,
    "redis": RedisServer,
    "postgres": PostgresServer,
    "redis-cluster": RedisClusterServer,
}


def server_for(name: str, directory: Path) -> BackendServer:
    return KINDS[name](directory / name)


def missing(name: str) -> str | None:
    return KINDS[name].missing()
