"""Fixtures that run one backend contract suite against every backend.

A test that takes ``spec``, ``cache`` or ``queue`` runs once per entry of
:data:`BACKENDS` that can take it: a test marked ``shared_backend`` only on
backends whose cache or queue several processes share, one marked
``native_coroutines`` only on those with native coroutines, one marked
``one_shard`` only on those whose queue is not spread over shards (a Redis
Cluster's is: see ``tests/test_redis_cluster.py``). Adding a backend is
one line there plus a fixture that returns its
:class:`~backend_contract.BackendSpec`.

The servers come from the fixtures of ``tests/conftest.py`` (see
``tests/servers.py`` for where they are found): Redis and PostgreSQL empty for
each test, a memcached of each test's own.
"""

from __future__ import annotations

import importlib
import inspect
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from backend_contract import BackendSpec
from tests.servers import throwaway_memcached, unavailable

from offload.backends import Cache, Queue
from offload.errors import MissingDependency


@dataclass(frozen=True)
class Backend:
    """A backend of the contract suite: the fixture returning its spec, and its classes as ``module:Class``."""

    fixture: str
    cache: str | None
    queue: str | None
    #: Whether its queue is spread over shards: each shard in order, claimed in turn, each capped at its part.
    sharded: bool = False

    def part(self, name: str) -> type | None:
        """The class of the backend's ``cache`` or ``queue``, None when it has no such part."""
        target = self.cache if name == "cache" else self.queue
        if target is None:
            return None
        module, attribute = target.split(":")
        found: type = getattr(importlib.import_module(module), attribute)
        return found


#: Every backend the contract suite runs against.
BACKENDS: dict[str, Backend] = {
    "memory": Backend("memory_spec", "offload.backends.memory:MemoryCache", "offload.backends.memory:MemoryQueue"),
    "sqlite": Backend("sqlite_spec", "offload.backends.sqlite:SQLiteCache", "offload.backends.sqlite:SQLiteQueue"),
    "redis": Backend("redis_spec", "offload.backends.redis:RedisCache", "offload.backends.redis_queue:RedisQueue"),
    "redis-cluster": Backend(
        "redis_cluster_spec", "offload.backends.redis:RedisCache", "offload.backends.redis_queue:RedisQueue", True
    ),
    "memcached+redis": Backend(
        "memcached_spec", "offload.backends.memcached:MemcachedCache", "offload.backends.redis_queue:RedisQueue"
    ),
    "postgres": Backend(
        "postgres_spec", "offload.backends.postgres:PostgresCache", "offload.backends.postgres:PostgresQueue"
    ),
}

#: The native coroutine that tells a part has them.
NATIVE = {"cache": "aget", "queue": "apush"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared_backend: runs on the backends that several processes share")
    config.addinivalue_line("markers", "native_coroutines: runs on the backends with native coroutines")
    config.addinivalue_line("markers", "notifies: runs on the backends whose cache tells of stored answers")
    config.addinivalue_line(
        "markers", "one_shard: runs on the backends whose queue is one shard: one order for all jobs, an exact cap"
    )


def takes(part: type | None, name: str, definition: pytest.Function) -> bool:
    """Whether a test can run on a backend's ``cache`` or ``queue`` class."""
    if part is None:
        return False
    if definition.get_closest_marker("shared_backend") and not part.shared:  # type: ignore[attr-defined]
        return False
    if definition.get_closest_marker("notifies") and not getattr(part, "notifies", False):
        return False
    native = definition.get_closest_marker("native_coroutines")
    return not native or inspect.iscoroutinefunction(getattr(part, NATIVE[name], None))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``spec`` with the backends the test can run on, instead of skipping on the others."""
    if "spec" not in metafunc.fixturenames:
        return
    parts = [name for name in NATIVE if name in metafunc.fixturenames]
    one_shard = metafunc.definition.get_closest_marker("one_shard") is not None
    names = [
        name
        for name, backend in BACKENDS.items()
        if all(takes(backend.part(part), part, metafunc.definition) for part in parts)
        and not (one_shard and backend.sharded)
    ]
    metafunc.parametrize("spec", names, indirect=True)


@pytest.fixture
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """The backend under test, once per entry of BACKENDS."""
    result: BackendSpec = request.getfixturevalue(BACKENDS[request.param].fixture)
    return result


def opened(spec: BackendSpec, part: str) -> Iterator[Any]:
    """The backend's ``cache`` or ``queue``, opened from its URL, closed after the test."""
    try:
        found = spec.open_cache() if part == "cache" else spec.open_queue()
    except MissingDependency as error:
        unavailable(str(error))
    assert isinstance(found, BACKENDS[spec.name].part(part) or ()), f"{spec.name} opened {found!r} as its {part}"
    yield found
    found.close()


@pytest.fixture
def cache(spec: BackendSpec) -> Iterator[Cache]:
    yield from opened(spec, "cache")


@pytest.fixture
def queue(spec: BackendSpec) -> Iterator[Queue]:
    yield from opened(spec, "queue")


@pytest.fixture
def memory_spec() -> BackendSpec:
    url = f"memory://test-{uuid.uuid4().hex}"  # one store per test
    return BackendSpec("memory", url, url)


@pytest.fixture
def sqlite_spec(tmp_path: Path) -> BackendSpec:
    url = f"sqlite:///{tmp_path / 'offload.sqlite3'}"
    return BackendSpec("sqlite", url, url)


@pytest.fixture
def redis_spec(redis_url: str) -> BackendSpec:
    return BackendSpec("redis", redis_url, redis_url)


@pytest.fixture
def redis_cluster_spec(redis_cluster_url: str) -> BackendSpec:
    return BackendSpec("redis-cluster", redis_cluster_url, redis_cluster_url)


@pytest.fixture
def memcached_spec(redis_url: str) -> Iterator[BackendSpec]:
    """memcached as the cache, on a server started for this test; Redis as the queue.

    Not the module's ``memcached``: memcached's clock ticks in whole seconds
    from its start, and the expiry tests with sub-second TTLs hold only while
    that tick is about a second away, as it is on a fresh server.
    """
    with throwaway_memcached() as server:
        yield BackendSpec("memcached+redis", server.url, redis_url)


@pytest.fixture
def postgres_spec(postgres_url: str) -> BackendSpec:
    return BackendSpec("postgres", postgres_url, postgres_url)
