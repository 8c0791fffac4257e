"""Fixtures shared by the whole suite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import servers
from tests.behaviour import apps
from tests.behaviour.harness import Harness, WSGIHarness

#: Protocols the behaviour suite runs against; each maps to a harness factory.
HARNESSES: dict[str, Any] = {"wsgi": lambda **options: WSGIHarness(apps.wsgi_app, **options)}

try:  # the ASGI harness lives beside the ASGI tests
    from tests.asgi.harness import ASGI_HARNESS

    HARNESSES["asgi"] = ASGI_HARNESS
except ImportError:  # pragma: no cover - only while the ASGI side is absent
    pass


@pytest.fixture(autouse=True)
def _reset_app_counters() -> Iterator[None]:
    apps.calls.clear()
    apps.closed.clear()
    yield


@pytest.fixture(params=sorted(HARNESSES))
def make_harness(request: pytest.FixtureRequest) -> Any:
    """Build a harness for one protocol around the behaviour app, on a fresh in-memory backend."""
    factory = HARNESSES[request.param]

    def make(**options: Any) -> Harness:
        options.setdefault("url", f"memory://{uuid.uuid4().hex}")
        harness: Harness = factory(**options)
        return harness

    return make


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    h: Harness = make_harness()
    return h


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'offload.sqlite3'}"


@pytest.fixture(autouse=True)
def _no_ambient_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their backend; an OFFLOAD_URL in the caller's shell must not leak in."""
    monkeypatch.delenv("OFFLOAD_URL", raising=False)
    monkeypatch.delenv("OFFLOAD_APP", raising=False)


# The servers of tests/servers.py: a missing one skips the tests that need it (see that module).


@pytest.fixture(scope="session")
def redis_database() -> Iterator[str]:
    """The Redis database of this session: named by OFFLOAD_TEST_REDIS_URL, else an empty one, locked."""
    with servers.locked_redis_database() as url:
        yield url


@pytest.fixture
def redis_url(redis_database: str) -> Iterator[str]:
    """The session's Redis database, flushed before and after the test."""
    with servers.flushed_redis(redis_database) as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[servers.RedisCluster]:
    """A Redis Cluster of the session's own (three masters, three replicas), started on first use."""
    with servers.throwaway_redis_cluster() as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster_server: servers.RedisCluster) -> str:
    """The session's Redis Cluster (``redis+cluster://``), emptied for the test."""
    redis_cluster_server.flush()
    return redis_cluster_server.url


@pytest.fixture(scope="session")
def postgres_database() -> str:
    """The PostgreSQL database of OFFLOAD_TEST_POSTGRES_URL, where tests may create and drop schemas."""
    return servers.postgres_database()


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """The PostgreSQL database with a schema of the test's own (``?schema=``), dropped afterwards."""
    with servers.postgres_schema(postgres_database) as url:
        yield url


@pytest.fixture(scope="module")
def memcached_server() -> Iterator[servers.MemcachedServer]:
    """A memcached of the test module's own, which its tests may stop and start."""
    with servers.throwaway_memcached() as server:
        yield server


@pytest.fixture
def memcached(memcached_server: servers.MemcachedServer) -> servers.MemcachedServer:
    """The module's memcached, running and emptied for this test."""
    if memcached_server.process is None:
        memcached_server.start()
    memcached_server.flush()
    return memcached_server


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The Celery broker of OFFLOAD_TEST_AMQP_URL."""
    return servers.amqp_url()


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _plugin_installed() -> bool:
    """Whether offload is installed with its pytest plugin's entry point (else it is loaded here)."""
    from importlib.metadata import entry_points

    return any(point.value == "offload.testing.pytest_plugin" for point in entry_points(group="pytest11"))


# offload.testing's fixtures (offload_eager, offload_recording), also where offload runs from a checkout.
pytest_plugins = [] if _plugin_installed() else ["offload.testing.pytest_plugin"]
