"""Stores for the poisoned-store tests: every backend offload has, on real servers.

The servers come from the fixtures of ``tests/conftest.py`` (see
``tests/servers.py`` for where they are found): Redis flushed around each test,
PostgreSQL in a schema of each test's own, a memcached of the module's own. A
missing server or driver skips its tests with the reason, or fails them when
``OFFLOAD_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import with_query

STORES = ("memory", "sqlite", "redis", "postgresql", "memcached")


@dataclass
class Store:
    """A backend under test: the middleware options that select it, and a way to write past offload."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


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
        url = with_query(request.getfixturevalue("redis_url"), prefix=namespace)
        yield Store(name, {"url": url, "namespace": namespace})
    elif name == "postgresql":
        yield Store(name, {"url": request.getfixturevalue("postgres_url"), "namespace": namespace})
    else:
        memcached = request.getfixturevalue("memcached")
        yield Store(name, {"cache": memcached.url, "queue": sqlite_url, "namespace": namespace})
