"""The servers the tests talk to, and the throwaway ones they start themselves.

The fixtures over these (``redis_url``, ``postgres_url``, ``memcached``,
``broker_url``) are registered in ``tests/conftest.py``. The shared servers are
found at the usual local ports, or through these environment variables:

``OFFLOAD_TEST_REDIS_URL``
    Redis server (default ``redis://127.0.0.1:6379``). With a database number
    in the URL the tests use that database; without one they take the first
    empty one from 15 down to 1 and lock it for the session (the key
    ``offload-test:lock:dbN`` in database 0), so two test runs on one server
    stay out of each other's database. Each test that uses it finds it flushed,
    and it is flushed again afterwards.
``OFFLOAD_TEST_POSTGRES_URL``
    PostgreSQL database (default ``postgresql://127.0.0.1:5432/test``) where the
    tests may create and drop schemas. Each test runs in a schema of its own,
    named by the ``?schema=`` parameter that offload's PostgreSQL backend
    understands, and dropped afterwards.
``OFFLOAD_TEST_AMQP_URL``
    The Celery broker (default ``amqp://guest:guest@127.0.0.1:5672//``);
    ``redis://`` works too.
``OFFLOAD_TEST_MEMCACHED``
    The ``memcached`` binary (default: found on ``PATH``). Each test module
    starts its own server on a free port, so a test may stop and start it; it
    is emptied before each test.
``OFFLOAD_TEST_REDIS_SERVER``
    The ``redis-server`` binary (default: found on ``PATH``) for the throwaway
    Redis of the "backend down and back" tests, and for the throwaway Redis
    Cluster (six nodes, with the ``redis-cli`` beside it or on ``PATH``) that the
    session starts on first use (``redis_cluster_url``).
``OFFLOAD_TEST_POSTGRES_BIN``
    The directory holding ``initdb`` and ``postgres`` (default: found on
    ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``) for the throwaway
    PostgreSQL of those tests. PostgreSQL refuses to run as root, so as root
    the server runs as the ``postgres`` user.
``OFFLOAD_REQUIRE_SERVERS=1``
    A missing server, binary or driver fails its tests instead of skipping
    them, so CI cannot pass by skipping. A skip means a server is missing,
    nothing else.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from offload_bench.cluster import RedisCluster

T = TypeVar("T")

REDIS_URL = "redis://127.0.0.1:6379"
POSTGRES_URL = "postgresql://127.0.0.1:5432/test"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: The key in Redis database 0 that locks database N for one test session.
REDIS_LOCK = "offload-test:lock:db{}"
#: Database numbers a session may lock, tried in this order.
REDIS_DATABASES = range(15, 0, -1)


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server, binary or driver is missing, or fail it when servers are required."""
    if os.environ.get("OFFLOAD_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (OFFLOAD_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Callable[[], T | None], timeout: float = 60.0, what: str = "the condition") -> T:
    """Poll ``condition`` until it returns a true value, and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.3)


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        return False
    return True


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, within: float = 60) -> None:
    """Wait for a server process to be ready; fail with its error output if it exits or takes too long."""
    deadline = time.monotonic() + within
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            exited = process.poll() is not None
            error = process.stderr.read().decode(errors="replace") if exited and process.stderr else ""
            raise RuntimeError(f"{what} did not start (exit code {process.poll()}) {error}".rstrip())
        time.sleep(0.02)


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    added = "&".join(f"{name}={value}" for name, value in params.items())
    return urlunsplit(parts._replace(query=f"{parts.query}&{added}" if parts.query else added))


# Redis, shared


def redis_client(url: str) -> Any:
    """A client of ``url``'s database, with short timeouts."""
    try:
        import redis
    except ImportError:
        unavailable('the redis client is not installed: pip install -e ".[redis]"')
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


def _database(url: str, number: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{number}"))


@contextmanager
def locked_redis_database(url: str | None = None) -> Iterator[str]:
    """The URL of a Redis database the tests may flush: the one ``url`` names, else an empty one, locked meanwhile."""
    url = url or os.environ.get("OFFLOAD_TEST_REDIS_URL", REDIS_URL)
    client = redis_client(url)
    import redis

    try:
        with client:
            client.ping()
    except redis.RedisError as error:
        unavailable(f"no Redis server at {url} ({error}); set OFFLOAD_TEST_REDIS_URL")
    if urlsplit(url).path.strip("/"):
        yield url
        return
    owner = f"{os.getpid()}-{uuid.uuid4().hex}"
    with redis_client(_database(url, 0)) as registry:
        for number in REDIS_DATABASES:
            with redis_client(_database(url, number)) as client:
                if client.dbsize() == 0 and registry.set(REDIS_LOCK.format(number), owner, nx=True, ex=7200):
                    break
        else:
            unavailable(f"no free database on the Redis server at {url}; name one in OFFLOAD_TEST_REDIS_URL")
        try:
            yield _database(url, number)
        finally:
            if registry.get(REDIS_LOCK.format(number)) == owner.encode():
                registry.delete(REDIS_LOCK.format(number))


@contextmanager
def flushed_redis(url: str) -> Iterator[str]:
    """``url``'s database, flushed now and again on the way out."""
    with redis_client(url) as client:
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()


# PostgreSQL, shared


def postgres_database(url: str | None = None) -> str:
    """The URL of a PostgreSQL database where the tests may create and drop schemas, once it answers."""
    url = url or os.environ.get("OFFLOAD_TEST_POSTGRES_URL", POSTGRES_URL)
    try:
        import psycopg
    except ImportError:
        unavailable('psycopg is not installed: pip install -e ".[postgres]"')
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as error:
        unavailable(f"no PostgreSQL at {url} ({str(error).strip()}); set OFFLOAD_TEST_POSTGRES_URL")
    return url


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """``url`` with a ``?schema=`` of its own for offload's PostgreSQL backend; the schema is dropped afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"offload_test_{uuid.uuid4().hex[:12]}"
    try:
        yield with_query(url, schema=schema)
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# The Celery broker, shared


def amqp_url() -> str:
    """The URL of the Celery broker, once it accepts connections."""
    url = os.environ.get("OFFLOAD_TEST_AMQP_URL", AMQP_URL)
    parts = urlsplit(url)
    default_port = 6379 if parts.scheme.startswith("redis") else 5672
    if not reachable(parts.hostname or "127.0.0.1", parts.port or default_port):
        unavailable(f"no Celery broker at {url}; set OFFLOAD_TEST_AMQP_URL")
    return url


# Throwaway servers, started from the installed binaries


class Server(Protocol):
    """A server of the test's own, which it may stop and start again."""

    url: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class MemcachedServer:
    """A memcached process of our own on a free port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"memcached://{self.address}"

    def start(self) -> None:
        command = [self.binary, "-p", str(self.port), "-U", "0", "-l", "127.0.0.1", "-m", "64"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # memcached refuses to run as root without a user
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: reachable("127.0.0.1", self.port), self.process, "memcached", within=15)

    def flush(self) -> None:
        """Empty the server."""
        with socket.create_connection(("127.0.0.1", self.port), 5) as connection:
            connection.sendall(b"flush_all\r\n")
            connection.recv(64)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None


class RedisServer:
    """A redis-server without persistence on a free port: a restart loses its data, as a real crash may."""

    def __init__(self, binary: str, directory: str) -> None:
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", self.directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._ready, self.process, "redis-server")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory on a free port, trust authentication."""

    def __init__(self, bindir: str, directory: str) -> None:
        self.bindir, self.directory = bindir, directory
        self.data = os.path.join(directory, "data")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        initdb = [os.path.join(bindir, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync"]
        subprocess.run(initdb, check=True, user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        command = [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.directory]
        command += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        self.process = subprocess.Popen(command, user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ready, self.process, "postgres")

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends the open sessions
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@contextmanager
def running(server: Server) -> Iterator[Any]:
    """``server`` started, and stopped on the way out."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def throwaway_memcached() -> Iterator[MemcachedServer]:
    """A running memcached of our own (``OFFLOAD_TEST_MEMCACHED`` names the binary, else ``PATH``)."""
    binary = os.environ.get("OFFLOAD_TEST_MEMCACHED") or shutil.which("memcached")
    if not binary:
        unavailable("memcached is not installed (apt-get install memcached)")
    with running(MemcachedServer(binary)) as server:
        yield server


@contextmanager
def throwaway_redis() -> Iterator[RedisServer]:
    """A running redis-server of our own (``OFFLOAD_TEST_REDIS_SERVER`` names the binary, else ``PATH``)."""
    binary = os.environ.get("OFFLOAD_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    with (
        tempfile.TemporaryDirectory(prefix="offload-redis-") as directory,
        running(RedisServer(binary, directory)) as server,
    ):
        yield server


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL of our own (``OFFLOAD_TEST_POSTGRES_BIN`` names the binaries' directory)."""
    bindir = os.environ.get("OFFLOAD_TEST_POSTGRES_BIN")
    if not bindir:
        found = shutil.which("postgres") or shutil.which("initdb")
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(path.split("/")[-2]))
        bindir = os.path.dirname(found) if found else (candidates[-1] if candidates else None)
    if not bindir or not os.path.exists(os.path.join(bindir, "initdb")):
        unavailable("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    directory = tempfile.mkdtemp(prefix="offload-pg-")
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        with running(PostgresServer(bindir, directory)) as server:
            yield server
    finally:
        with suppress(OSError):
            shutil.rmtree(directory)


@contextmanager
def throwaway_redis_cluster() -> Iterator[RedisCluster]:
    """A running Redis Cluster of our own (``redis-server`` and ``redis-cli`` from ``OFFLOAD_TEST_REDIS_SERVER``'s
    directory, else ``PATH``): three masters and three replicas in a temporary directory."""
    binary = os.environ.get("OFFLOAD_TEST_REDIS_SERVER") or shutil.which("redis-server")
    cli = shutil.which("redis-cli", path=os.path.dirname(binary)) if binary else None
    cli = cli or shutil.which("redis-cli")
    if not binary or not cli:
        unavailable("redis-server and redis-cli are not installed (apt-get install redis-server)")
    with (
        tempfile.TemporaryDirectory(prefix="offload-redis-cluster-") as directory,
        running(RedisCluster(binary, cli, directory)) as cluster,
    ):
        yield cluster


# Chromium, from Debian's packages (nothing downloads a browser)

CHROMIUM = os.environ.get("OFFLOAD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OFFLOAD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


@contextmanager
def headless_chromium(profile: Path, *arguments: str) -> Iterator[Any]:
    """A Selenium driver of a headless Chromium with its profile in ``profile``, quit on the way out."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # selenium must not look for a browser or a driver to download
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *arguments,
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
