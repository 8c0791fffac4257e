"""Stores for the poisoned-store tests: every backend offload has, on real servers.

Redis is found at ``OFFLOAD_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``)
on an empty database number, flushed around each test; PostgreSQL at
``OFFLOAD_TEST_POSTGRES_URL`` (default ``postgresql://127.0.0.1:5432/test``),
each test in a schema of its own; memcached is started from the installed
``memcached`` binary on a free port. A missing server, driver or backend skips
its tests with the reason, or fails them when ``OFFLOAD_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

STORES = ("memory", "sqlite", "redis", "postgresql", "memcached")
#: Database numbers tried for Redis, from the top; the first empty one is used.
REDIS_DATABASES = range(12, 0, -1)
CLAIM_KEY = "offload-tests:security"


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("OFFLOAD_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (OFFLOAD_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Store:
    """A backend under test: the middleware options that select it, and a way to write past offload."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[tuple[str, Any] | str]:
    """(URL of an empty database, client), or the reason there is none."""
    try:
        import redis
    except ImportError:
        yield "the redis client is not installed"
        return
    base = os.environ.get("OFFLOAD_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    for db in REDIS_DATABASES:
        client = redis.Redis.from_url(f"{base}/{db}", socket_connect_timeout=1)
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, "1", nx=True, ex=3600):
                break
        except redis.RedisError as error:
            client.close()
            yield f"no Redis server at {base} ({error})"
            return
        client.close()
    else:
        yield f"no empty Redis database at {base}"
        return
    yield f"{base}/{db}", client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A memcached started for this session on a free port: its URL, or the reason there is none."""
    binary = shutil.which("memcached")
    if binary is None:
        yield "the memcached binary is not installed"
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-u", "root"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    yield "memcached did not start"
                    return
                time.sleep(0.05)
        yield f"memcached://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend in turn, empty, with a namespace of its own."""
    name: str = request.param
    namespace = f"sec-{uuid.uuid4().hex[:12]}"
    sqlite_url = f"sqlite:///{tmp_path / 'offload.sqlite3'}"
    if name == "memory":
        yield Store(name, {"url": f"memory://{namespace}", "namespace": namespace})
    elif name == "sqlite":
        yield Store(name, {"url": sqlite_url, "namespace": namespace})
    elif name == "redis":
        found = request.getfixturevalue("redis_server")
        if isinstance(found, str):
            unavailable(found)
        url, client = found
        client.flushdb()
        client.set(CLAIM_KEY, "1", ex=3600)
        yield Store(name, {"url": f"{url}?prefix={namespace}", "namespace": namespace})
        client.flushdb()
        client.set(CLAIM_KEY, "1", ex=3600)
    elif name == "postgresql":
        yield from _postgres(namespace)
    else:
        url = request.getfixturevalue("memcached_server")
        if not url.startswith("memcached://"):
            unavailable(url)
        yield Store(name, {"cache": url, "queue": sqlite_url, "namespace": namespace})


def _postgres(namespace: str) -> Iterator[Store]:
    try:
        importlib.import_module("offload.backends.postgres")
        import psycopg
    except ImportError as error:
        unavailable(f"the PostgreSQL backend cannot be imported ({error})")
    url = os.environ.get("OFFLOAD_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error as error:
        unavailable(f"no PostgreSQL server at {url} ({error})")
    schema = namespace.replace("-", "_")
    separator = "&" if "?" in url else "?"
    yield Store("postgresql", {"url": f"{url}{separator}schema={schema}", "namespace": namespace})
    with psycopg.connect(url, autocommit=True, connect_timeout=2) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
