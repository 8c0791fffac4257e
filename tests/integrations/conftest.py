"""Real servers for the integration tests: a throwaway memcached, Redis, RabbitMQ.

The servers are found at the usual local ports, or through these environment
variables:

``OFFLOAD_TEST_REDIS_URL``
    Redis (default ``redis://127.0.0.1:6379``). Without a database number the
    tests take the first empty, unlocked one from 1 up, lock it for the
    session, and flush it around each test.
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
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

from tests.integrations.servers import MemcachedServer, reachable, throwaway_memcached


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server is missing, or fail it when servers are required."""
    if os.environ.get("OFFLOAD_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (OFFLOAD_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def memcached_server() -> Iterator[MemcachedServer]:
    with throwaway_memcached(unavailable) as server:
        yield server


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
def redis_base_url() -> Iterator[str]:
    """The Redis database these tests may flush: the URL's, else an empty one locked for the session.

    The lock (``offload-test:lock:dbN`` in database 0, the convention of the
    backend suite) keeps two test runs on one server out of each other's database.
    """
    url = os.environ.get("OFFLOAD_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    parts = urlsplit(url)
    if not reachable(parts.hostname or "127.0.0.1", parts.port or 6379):
        unavailable(f"no Redis server at {url}")
    if parts.path.strip("/"):
        yield url
        return
    registry = _redis_client(f"{url.rstrip('/')}/0")
    owner = f"{os.getpid()}-{uuid.uuid4().hex}"
    try:
        for db in range(1, 16):
            lock = f"offload-test:lock:db{db}"
            candidate = f"{url.rstrip('/')}/{db}"
            client = _redis_client(candidate)
            try:
                if client.dbsize() != 0 or not registry.set(lock, owner, nx=True, ex=7200):
                    continue
            finally:
                client.close()
            try:
                yield candidate
            finally:
                if registry.get(lock) == owner.encode():
                    registry.delete(lock)
            return
    finally:
        registry.close()
    unavailable(f"no free Redis database at {url}: set OFFLOAD_TEST_REDIS_URL=redis://host:port/N")


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
