"""Backend down and back: every operation fails fast with BackendUnavailable, then the same objects recover.

Runs against throwaway servers (see tests/servers.py), since the shared ones
must keep running. Adding a server backend is one line in SERVERS; a backend
without a queue (memcached) goes through the cache's operations only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from backend_contract import eventually
from tests.servers import Server, throwaway_memcached, throwaway_postgres, throwaway_redis

from offload.backends import Claim, ExpiryRule, IndexEntry, Queue, open_backend
from offload.errors import BackendUnavailable

#: Server backends that can be stopped and started again: name -> a context manager giving a running server.
SERVERS: dict[str, Callable[..., Any]] = {
    "redis": throwaway_redis,
    "postgres": throwaway_postgres,
    "memcached": throwaway_memcached,
}

#: Far above any connect or read timeout of a backend: only a hang takes longer.
HANG = 30.0


@pytest.fixture(params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with SERVERS[request.param]() as running:
        yield running


def works(operation: Callable[[], object]) -> bool:
    try:
        operation()
    except BackendUnavailable:
        return False
    return True


def test_backend_down_and_back(server: Server) -> None:
    backend = open_backend(server.url)
    cache, queue = backend.cache, backend.queue
    assert cache is not None
    cache.set("answer", b"v", 60, IndexEntry("/page", ""))
    claim = None
    if queue is not None:
        queue.push("job", b"payload")
        claim = queue.claim(lease=60, wait=5)
        assert claim is not None

    server.stop()
    operations: dict[str, Callable[[], object]] = {
        "get": lambda: cache.get("answer"),
        "add": lambda: cache.add("marker", b"m", 60),
        "set": lambda: cache.set("answer", b"w", 60, IndexEntry("/page", "")),
        "touch": lambda: cache.touch("answer", 60),
        "delete": lambda: cache.delete("answer"),
        "expire": lambda: cache.expire(ExpiryRule("/*")),
        "take": lambda: cache.take("answer"),
        "incr": lambda: cache.incr("counter", 60),
        "epoch": cache.epoch,
        "expired since": lambda: cache.expired_since(0, IndexEntry("/page", "")),
        "start job": lambda: cache.start_job("running", "pending", "answer", b"m", 60),
        "finish job": lambda: cache.finish_job("answer", b"v", 60, IndexEntry("/page", ""), ("pending",), 0),
        "cache stats": cache.stats,
        "cache namespaces": cache.namespaces,
    }
    if queue is not None and claim is not None:
        operations |= queue_operations(queue, claim)
    for name, operation in operations.items():
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            operation()
        assert time.monotonic() - started < HANG, f"{name} hung instead of failing"

    server.start()
    assert eventually(lambda: works(cache.stats), within=30)
    assert cache.add("marker", b"m", 60) is True
    cache.set("answer", b"again", 60, IndexEntry("/page", ""))
    assert cache.get("answer") == b"again"
    assert cache.expire(ExpiryRule("/page")) == 1
    if queue is not None:
        queue_works_again(queue)
    cache.close()


def queue_operations(queue: Queue, claim: Claim) -> dict[str, Callable[[], object]]:
    return {
        "push": lambda: queue.push("job", b"payload", limit=10),
        "claim": lambda: queue.claim(lease=60, wait=1),
        "extend": lambda: queue.extend(claim, 60),
        "ack": lambda: queue.ack(claim),
        "release": lambda: queue.release(claim),
        "bury": lambda: queue.bury(claim, "error"),
        "dead": queue.dead,
        "revive": lambda: queue.revive("1"),
        "queue stats": queue.stats,
        "queue namespaces": queue.namespaces,
    }


def queue_works_again(queue: Queue) -> None:
    assert eventually(lambda: works(queue.stats), within=30)
    queue.push("after", b"restart", limit=10)
    keys = set()
    while (job := queue.claim(lease=60, wait=2)) is not None:
        keys.add(job.key)
        queue.ack(job)
    assert "after" in keys  # (the first job survives only where the server keeps its data)
    queue.close()
