"""The in-process tier of answers: fast hits, and never an answer that expire() removed elsewhere.

Each web process keeps recent answers decoded in memory while the backend's
generation is unchanged. These tests expire from *another process*, as
``offload expire`` on an operator's shell does, and require the web process
to stop serving the old answer: at once on SQLite (a shared counter), within
a moment on Redis (a pub/sub message to a listener thread).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests import servers
from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness


def expire_elsewhere(url: str, path: str) -> None:
    command = [sys.executable, "-m", "offload", "expire", path, "--url", url]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def warm(harness: WSGIHarness, path: str) -> None:
    """Compute the answer, then hit it until it is kept in memory."""
    assert harness.get_after_work(path).status == 200
    for _ in range(3):
        assert harness.request("GET", path).status == 200
    assert harness.offloader._local, "the backend should offer the in-process tier"


def until(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def redis_harness(redis_url: str) -> Iterator[WSGIHarness]:
    harness = WSGIHarness(apps.wsgi_app, url=redis_url)
    yield harness
    harness.offloader.cache.close()
    harness.offloader.queue.close()


def test_hits_are_served_from_memory(sqlite_url: str) -> None:
    harness = WSGIHarness(apps.wsgi_app, url=sqlite_url)
    warm(harness, "/hello")
    harness.offloader.cache.delete(harness.offloader.response_key(next(iter(harness.offloader._keys.values()))))
    assert harness.request("GET", "/hello").status == 200, "a kept answer needs no backend read"


def test_sqlite_expire_in_another_process_drops_the_answer_at_once(sqlite_url: str) -> None:
    harness = WSGIHarness(apps.wsgi_app, url=sqlite_url)
    warm(harness, "/hello")
    expire_elsewhere(sqlite_url, "/hello")
    assert harness.request("GET", "/hello").status == 202


def test_redis_expire_in_another_process_drops_the_answer(redis_harness: WSGIHarness, redis_url: str) -> None:
    warm(redis_harness, "/hello")
    warm(redis_harness, "/binary")
    expire_elsewhere(redis_url, "/hello")
    # A bound for a pub/sub message between two local processes, not a speed requirement:
    # without the listener the old answer would be served for local_ttl (60 s).
    assert until(lambda: redis_harness.request("GET", "/hello").status == 202, 10)
    assert redis_harness.request("GET", "/binary").status == 200


def test_redis_keeps_nothing_in_memory_while_its_channel_is_down() -> None:
    with servers.throwaway_redis() as server:
        harness = WSGIHarness(apps.wsgi_app, url=server.url)
        try:
            warm(harness, "/hello")
            server.stop()
            # The answer was kept in memory, but with the channel gone an expire() could go unseen:
            # offload answers as for any outage instead of serving what may be stale.
            assert until(lambda: harness.request("GET", "/hello").status == 503, 10)
            server.start()  # empty: this server keeps nothing across a restart
            assert until(lambda: harness.request("GET", "/hello").status == 202, 20)
            warm(harness, "/hello")
            expire_elsewhere(server.url, "/hello")
            assert until(lambda: harness.request("GET", "/hello").status == 202, 10)
        finally:
            harness.offloader.cache.close()
            harness.offloader.queue.close()
