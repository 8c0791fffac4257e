"""A process that dies between marking a key pending and queueing its job blocks that key for seconds only.

The decision is a generator: abandoning it right before its ``push`` is what
a web process killed at that instant leaves behind (the marker, no job).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from wsgiref.util import setup_testing_defaults

import pytest

import offload.core
from offload.core import Offloader
from offload.wsgi import incoming_from_environ


def incoming(offloader: Offloader, path: str) -> offload.core.Incoming:
    environ: dict[str, object] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    return incoming_from_environ(environ, "GET", (path,))  # type: ignore[arg-type]


def die_before_push(offloader: Offloader, path: str) -> None:
    """Run one miss's decision up to its push, against the real backend, and stop there."""
    steps = offloader.decide(incoming(offloader, path))
    operation = next(steps)
    while operation[0] != "push":
        operation = steps.send(offloader._call(operation))
    steps.close()


def status(offloader: Offloader, path: str) -> int:
    answer = offloader.decide_sync(incoming(offloader, path))
    assert answer is not None
    return answer.status


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def offloader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Offloader]:
    monkeypatch.setattr(offload.core, "CLAIM_WINDOW", 1.5)
    url = request.getfixturevalue(f"{request.param}_url")
    made = Offloader(url=url, namespace="orphans", ttl=60, pending_ttl=600)
    yield made
    made.cache.close()
    made.queue.close()


def test_a_marker_left_without_its_job_lapses_and_the_next_miss_queues_one(offloader: Offloader) -> None:
    die_before_push(offloader, "/report")
    assert offloader.queue.stats().get("queued", 0) == 0
    assert status(offloader, "/report") == 202  # the marker still holds the key...
    assert offloader.queue.stats().get("queued", 0) == 0  # ...though no job was queued
    time.sleep(2.0)
    assert status(offloader, "/report") == 202
    assert offloader.queue.stats().get("queued", 0) == 1  # the marker lapsed: this miss queued the job


def test_a_queued_job_holds_its_key_for_pending_ttl(offloader: Offloader) -> None:
    assert status(offloader, "/export") == 202
    assert offloader.queue.stats().get("queued", 0) == 1
    time.sleep(2.0)  # past the window: the marker was made to last once the job was queued
    assert status(offloader, "/export") == 202
    assert offloader.queue.stats().get("queued", 0) == 1
