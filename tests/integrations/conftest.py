"""Real servers for the integration tests: a throwaway memcached, Redis, RabbitMQ.

The servers are found at the usual local ports, or through these environment
variables:

``OFFLOAD_TEST_REDIS_URL``
    Redis (default ``redis://127.0.0.1:6379``). Without a database number the
    tests take the first empty one from 1 up, and flush it around each test.
``OFFLOAD_TEST_AMQP_URL``
    The Celery broker (default ``amqp://guest:guest@127.0.0.1:5672//``);
    ``redis://`` works too.
``OFFLOAD_TEST_MEMCACHED``
    The ``memcached`` binary (default: found on ``PATH``). Each test module
    starts its own server on a free port, so tests can stop it.
``OFFLOAD_REQUIRE_SERVERS=1``
    A missing server fails its tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server is missing, or fail it when servers are required."""
    if os.environ.get("OFFLOAD_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (OFFLOAD_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        return False
    return True


class MemcachedServer:
    """A memcached process of our own on a free port, which a test may stop and start again."""

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
        deadline = time.monotonic() + 15
        while not reachable("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"memcached did not start: {error}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None


@pytest.fixture(scope="module")
def memcached_server() -> Iterator[MemcachedServer]:
    binary = os.environ.get("OFFLOAD_TEST_MEMCACHED") or shutil.which("memcached")
    if not binary:
        unavailable("memcached is not installed (apt-get install memcached)")
    server = MemcachedServer(binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def memcached(memcached_server: MemcachedServer) -> Iterator[MemcachedServer]:
    """The module's memcached, running and emptied for this test."""
    if memcached_server.process is None:
        memcached_server.start()
    with socket.create_connection(("127.0.0.1", memcached_server.port), 5) as connection:
        connection.sendall(b"flush_all\r\n")
        connection.recv(64)
    yield memcached_server


def _redis_client(url: str) -> Any:
    try:
        import redis
    except ImportError:
        unavailable('redis is not installed: pip install "offload[redis]"')
    return redis.Redis.from_url(url, socket_connect_timeout=2)


@pytest.fixture(scope="session")
def redis_base_url() -> str:
    url = os.environ.get("OFFLOAD_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    parts = urlsplit(url)
    if not reachable(parts.hostname or "127.0.0.1", parts.port or 6379):
        unavailable(f"no Redis server at {url}")
    if parts.path.strip("/"):
        return url
    for db in range(1, 16):
        candidate = f"{url.rstrip('/')}/{db}"
        client = _redis_client(candidate)
        try:
            if client.dbsize() == 0:
                return candidate
        finally:
            client.close()
    unavailable(f"no empty Redis database at {url}: set OFFLOAD_TEST_REDIS_URL=redis://host:port/N")


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A Redis database of the tests' own, flushed before and after each test."""
    client = _redis_client(redis_base_url)
    client.flushdb()
    yield redis_base_url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def broker_url() -> str:
    url = os.environ.get("OFFLOAD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    parts = urlsplit(url)
    default_port = 6379 if parts.scheme.startswith("redis") else 5672
    if not reachable(parts.hostname or "127.0.0.1", parts.port or default_port):
        unavailable(f"no Celery broker at {url}")
    return url


@pytest.fixture
def count_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where handlers count their executions, for this process and the workers it starts."""
    monkeypatch.setenv("OFFLOAD_TEST_COUNT_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def make_app() -> Iterator[Any]:
    """Build the Flask app for a stack; its connections are closed after the test."""
    from tests.integrations import flask_app

    built: list[Any] = []

    def make(stack: dict[str, str]) -> Any:
        app, _ = flask_app.create_app(stack)
        built.append(app)
        return app

    yield make
    for app in built:
        flask_app.shutdown(app)
