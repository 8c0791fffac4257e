"""Fixtures that run one backend contract suite against every backend.

A test that takes ``spec``, ``cache`` or ``queue`` runs once per entry of
:data:`BACKENDS`; adding a backend is one line there plus a fixture that
returns its :class:`~backend_contract.BackendSpec`. The servers are found at the
usual local ports, or through these environment variables:

``OFFLOAD_TEST_REDIS_URL``
    Redis server (default ``redis://127.0.0.1:6379``). Without a database
    number in the URL the suite picks an empty one (15 down to 1); it flushes
    that database around each test.
``OFFLOAD_TEST_POSTGRES_URL``
    PostgreSQL database (default ``postgresql://127.0.0.1:5432/test``). Each
    test runs in a schema of its own, dropped afterwards.
``OFFLOAD_REQUIRE_SERVERS=1``
    A missing server or driver fails its tests instead of skipping them, so CI
    cannot pass by skipping.

The "backend down and back" tests start throwaway servers from the installed
``redis-server`` and ``postgres`` binaries in a temporary directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from backend_contract import BackendSpec, unavailable

from offload.backends import Cache, Queue
from offload.errors import MissingDependency

#: Every backend the contract suite runs against: name -> fixture returning its BackendSpec.
BACKENDS: dict[str, str] = {
    "memory": "memory_spec",
    "sqlite": "sqlite_spec",
    "redis": "redis_spec",
    "memcached+redis": "memcached_spec",
    "postgres": "postgres_spec",
}


@pytest.fixture(params=list(BACKENDS))
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """The backend under test, once per entry of BACKENDS."""
    result: BackendSpec = request.getfixturevalue(BACKENDS[request.param])
    return result


@pytest.fixture
def cache(spec: BackendSpec) -> Iterator[Cache]:
    if spec.cache_url is None:
        pytest.skip(f"{spec.name} has no cache")
    try:
        opened = spec.open_cache()
    except MissingDependency as error:
        unavailable(str(error))
    yield opened
    opened.close()


@pytest.fixture
def queue(spec: BackendSpec) -> Iterator[Queue]:
    if spec.queue_url is None:
        pytest.skip(f"{spec.name} has no queue")
    try:
        opened = spec.open_queue()
    except MissingDependency as error:
        unavailable(str(error))
    yield opened
    opened.close()


@pytest.fixture
def memory_spec() -> BackendSpec:
    url = f"memory://test-{uuid.uuid4().hex}"  # one store per test
    return BackendSpec("memory", url, url)


@pytest.fixture
def sqlite_spec(tmp_path: Path) -> BackendSpec:
    url = f"sqlite:///{tmp_path / 'offload.sqlite3'}"
    return BackendSpec("sqlite", url, url)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database the suite may flush: the one named by the URL, else an empty one it locks for the session.

    The lock (a key in database 0) keeps two test runs on one server from
    flushing each other's database.
    """
    url = os.environ.get("OFFLOAD_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    try:
        import redis
    except ImportError:
        unavailable('the redis client is not installed: pip install "offload[redis]"')
    options = {"socket_connect_timeout": 2, "socket_timeout": 5}
    try:
        with redis.Redis.from_url(url, **options) as client:
            client.ping()
        if urlsplit(url).path.strip("/"):
            yield url
            return
        with redis.Redis.from_url(url, db=0, **options) as registry:
            owner = f"{os.getpid()}-{uuid.uuid4().hex}"
            for number in range(15, 0, -1):
                lock = f"offload-test:lock:db{number}"
                with redis.Redis.from_url(url, db=number, **options) as client:
                    if client.dbsize() != 0 or not registry.set(lock, owner, nx=True, ex=7200):
                        continue
                try:
                    yield urlunsplit(urlsplit(url)._replace(path=f"/{number}"))
                finally:
                    if registry.get(lock) == owner.encode():
                        registry.delete(lock)
                return
    except redis.RedisError as error:
        unavailable(f"no Redis server at {url} ({error}); set OFFLOAD_TEST_REDIS_URL")
    unavailable(f"no free database on the Redis server at {url}; name one in OFFLOAD_TEST_REDIS_URL")


@pytest.fixture
def redis_spec(redis_url: str) -> Iterator[BackendSpec]:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
        yield BackendSpec("redis", redis_url, redis_url)
        client.flushdb()


@pytest.fixture
def memcached_spec(redis_spec: BackendSpec) -> Iterator[BackendSpec]:
    """memcached as the cache (a throwaway server from the installed binary), Redis as the queue."""
    from tests.integrations.servers import throwaway_memcached

    with throwaway_memcached(unavailable) as server:
        yield BackendSpec("memcached+redis", server.url, redis_spec.queue_url)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL database where the suite may create and drop schemas."""
    url = os.environ.get("OFFLOAD_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
    try:
        import psycopg
    except ImportError:
        unavailable('psycopg is not installed: pip install "offload[postgres]"')
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as error:
        unavailable(f"no PostgreSQL at {url} ({str(error).strip()}); set OFFLOAD_TEST_POSTGRES_URL")
    return url


@pytest.fixture
def postgres_spec(postgres_url: str) -> Iterator[BackendSpec]:
    import psycopg
    from psycopg import sql

    schema = f"offload_test_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(postgres_url)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    url = urlunsplit(parts._replace(query=query))
    yield BackendSpec("postgres", url, url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
