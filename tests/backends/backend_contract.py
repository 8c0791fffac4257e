"""Helpers of the backend contract suite: a module of their own, so ``spawn``-ed processes can import them.

A :class:`BackendSpec` travels to those processes instead of a backend
object: each process opens its own connections from the URLs, as separate web
and worker processes do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from offload.backends import DEFAULT_NAMESPACE, Cache, Queue, open_backend

#: Values and payloads a backend must hand back byte for byte: it never looks inside them.
POISON = [
    b"",
    b"\x00\xff\xfe\x80 not utf-8",
    b'offload/1\n{"kind": "response", truncated',
    b"cos\nsystem\n(S'echo pwned'\ntR.",  # a pickle that would run a command if unpickled
    b"\r\n*3\r\n$3\r\nSET\r\n",  # Redis protocol inside a value
    b"'); DROP TABLE offload_cache; --",
    bytes(range(256)) * 4096,  # 1 MiB of every byte
]


def eventually(check: Callable[[], bool], within: float = 15.0) -> bool:
    """Poll ``check`` until it holds: a generous bound for expiry, not a speed requirement."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@dataclass(frozen=True)
class BackendSpec:
    """How to open the cache and the queue under test; None when the backend has no such part."""

    name: str
    cache_url: str | None
    queue_url: str | None

    def open_cache(self, namespace: str = DEFAULT_NAMESPACE) -> Cache:
        assert self.cache_url is not None
        cache = open_backend(self.cache_url, namespace).cache
        assert cache is not None, f"{self.cache_url} opened no cache"
        return cache

    def open_queue(self, namespace: str = DEFAULT_NAMESPACE) -> Queue:
        assert self.queue_url is not None
        queue = open_backend(self.queue_url, namespace).queue
        assert queue is not None, f"{self.queue_url} opened no queue"
        return queue


def add_race(spec: BackendSpec, keys: list[str], barrier: Any, results: Any) -> None:
    """Try to add every key at the same moment as the other processes; report the keys won."""
    cache = spec.open_cache()
    cache.get("warm-up")  # connect before the race starts
    barrier.wait(timeout=60)
    results.put([key for key in keys if cache.add(key, b"marker", 30)])
    cache.close()


def push_later(spec: BackendSpec, delay: float, key: str, payload: bytes) -> None:
    """Push one job after ``delay`` seconds, from a process of its own."""
    queue = spec.open_queue()
    queue.stats()  # connect first, so the delay is not spent connecting
    time.sleep(delay)
    queue.push(key, payload)
    queue.close()


def drain(spec: BackendSpec, barrier: Any, results: Any) -> None:
    """Claim and ack jobs until none comes for a while; report the keys claimed."""
    queue = spec.open_queue()
    queue.stats()
    barrier.wait(timeout=60)
    claimed = []
    while (claim := queue.claim(lease=60, wait=1.0)) is not None:
        claimed.append(claim.key)
        queue.ack(claim)
    results.put(claimed)
    queue.close()
