"""An answer the store refuses or silently drops is never reported as stored, and never loops.

Django's memcached cache drops a value over memcached's 1 MiB item size
without a word (pymemcache with ``noreply``). offload reads every write to
such a duck-typed cache back: the dropped answer is a store failure, the job
goes to the back of the queue with a backoff, and past ``max_deliveries`` a
502 is stored and the job becomes a dead letter, instead of 202 forever.
Runs against a real memcached, through Django's own cache backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from offload import WSGIMiddleware
from offload.backends.memory import MemoryQueue
from offload.replay import replayer_for
from offload.worker import Worker
from tests.behaviour.harness import WSGIHarness
from tests.servers import MemcachedServer


def big_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    size = 2 * 1024 * 1024 if environ["PATH_INFO"] == "/big" else 10
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [b"x" * size]


class FireAndForgetCache:
    """A cache around a memcached client that drops what memcached could not hold, as python-memcached does.

    python-memcached (the client of Django's old ``MemcachedCache``) checks a
    value's size itself and, over memcached's 1 MiB item size, returns
    without sending it and without a word.
    """

    LIMIT = 1024 * 1024

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, key: str) -> Any:
        return self.client.get(key)

    def add(self, key: str, value: Any, timeout: int) -> bool:
        return bool(self.client.add(key, value, timeout, noreply=False))

    def set(self, key: str, value: Any, timeout: int) -> None:
        if len(value) > self.LIMIT:
            return
        self.client.set(key, value, timeout, noreply=False)

    def delete(self, key: str) -> None:
        self.client.delete(key, noreply=False)

    def incr(self, key: str) -> int:
        return int(self.client.incr(key, 1, noreply=False))


@pytest.fixture(params=["fire-and-forget", "django"])
def cache(request: pytest.FixtureRequest, memcached: MemcachedServer) -> Iterator[Any]:
    """A duck-typed cache on a real memcached that cannot hold a 2 MiB answer.

    ``fire-and-forget`` drops the write without a word; ``django`` is Django's
    own ``PyMemcacheCache``, whose client raises.
    """
    if request.param == "fire-and-forget":
        from pymemcache.client.base import PooledClient  # type: ignore[import-untyped]

        client = PooledClient(("127.0.0.1", memcached.port))
        yield FireAndForgetCache(client)
        client.close()
        return
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.memcached import PyMemcacheCache

    django_cache = PyMemcacheCache(memcached.address, {})
    yield django_cache
    django_cache.close()


def test_the_fire_and_forget_cache_really_drops_a_large_value(memcached: MemcachedServer) -> None:
    """The premise: the write 'succeeds' and nothing is there."""
    from pymemcache.client.base import PooledClient

    client = PooledClient(("127.0.0.1", memcached.port))
    cache = FireAndForgetCache(client)
    cache.set("probe", b"x" * 2 * 1024 * 1024, 60)
    assert cache.get("probe") is None
    client.set("probe", b"x" * 2 * 1024 * 1024, 60, noreply=True)  # memcached itself would refuse it too
    assert client.get("probe") is None
    client.close()


def test_a_dropped_answer_ends_in_a_stored_502_and_a_dead_letter(cache: Any) -> None:
    queue = MemoryQueue()
    middleware = WSGIMiddleware(
        big_app, cache=cache, queue=queue, max_deliveries=2, retry_backoff=0.05, worker_threads=0
    )
    harness = WSGIHarness.around(middleware)
    assert harness.request("GET", "/big").status == 202
    worker = Worker(middleware.offloader, replayer_for(middleware), claim_wait=0.05)
    runner = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    runner.start()
    try:
        for _ in range(400):  # polls, as a client would, until the worker gives up on storing it
            answer = harness.request("GET", "/big")
            if answer.status != 202:
                break
            threading.Event().wait(0.05)
    finally:
        worker.stop()
        runner.join(30)
    assert answer.status == 502 and b"could not be stored" in answer.body
    assert [dead.key for dead in queue.dead()] == [middleware.key_for("http://testserver/big")]
    assert harness.request("GET", "/small").status == 202, "other URLs are served as usual"


def test_a_cache_whose_add_cannot_tell_who_won_is_refused(memcached: MemcachedServer, caplog: Any) -> None:
    """With ``default_noreply``, Django's memcached cache answers True to every add: one job per key is lost."""
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.memcached import PyMemcacheCache

    django_cache = PyMemcacheCache(memcached.address, {"OPTIONS": {"default_noreply": True}})
    middleware = WSGIMiddleware(big_app, cache=django_cache, queue=MemoryQueue(), worker_threads=0)
    with caplog.at_level("ERROR", logger="offload"):
        assert WSGIHarness.around(middleware).request("GET", "/small").status == 503
    assert any("does not report whether it stored" in record.getMessage() for record in caplog.records)
    django_cache.close()
