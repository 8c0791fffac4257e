"""Helpers shared by the security tests: harnesses per protocol, running jobs, telling answers apart."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from offload.replay import close_replay_loop, replayer_for
from offload.worker import Worker
from tests.asgi.harness import ASGIHarness
from tests.behaviour.harness import Harness, Result, WSGIHarness
from tests.security import apps

PROTOCOLS = ("wsgi", "asgi")

#: The only statuses offload answers by itself; any other status must come from the app.
OWN_STATUSES = frozenset({202, 414, 431, 503})


class LoopASGIHarness(ASGIHarness):
    """The ASGI harness on one event loop for all its requests, as a server runs, closed by :func:`close`.

    A backend with native coroutines keeps connections per loop, to be closed
    (``aclose``) before that loop ends: a loop per request would leave them open.
    """

    loop: asyncio.AbstractEventLoop | None = None

    def request(
        self, method: str, path: str, query: str = "", headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Result:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(self.arequest(method, path, query, headers, body))

    def close(self) -> None:
        if self.loop is None:
            return
        for part in (self.offloader.cache, self.offloader.queue):
            aclose = getattr(part, "aclose", None)
            if inspect.iscoroutinefunction(aclose):
                self.loop.run_until_complete(aclose())
        self.loop.close()


def make(protocol: str, **options: Any) -> Harness:
    """The security app behind offload's middleware for ``protocol``, on a fresh in-memory store by default."""
    if "cache" not in options and "queue" not in options:
        options.setdefault("url", f"memory://security-{uuid.uuid4().hex}")
    options.setdefault("worker_threads", 0)
    if protocol == "wsgi":
        return WSGIHarness(apps.wsgi_app, **options)
    return LoopASGIHarness(apps.asgi_app, **options)


def close(harness: Harness) -> None:
    """Close what a harness opened: its event loop, then the backend's connections."""
    if isinstance(harness, LoopASGIHarness):
        harness.close()
    harness.offloader.cache.close()
    harness.offloader.queue.close()


@contextmanager
def opened(protocol: str, **options: Any) -> Iterator[Harness]:
    """:func:`make`, closed at the end of the block."""
    harness = make(protocol, **options)
    try:
        yield harness
    finally:
        close(harness)


def drain(harness: Harness) -> int:
    """Run every queued job in this thread, as a worker would; return how many answers were stored.

    Claims are made without waiting, so an empty queue ends the run at once.
    """
    worker = Worker(harness.offloader, replayer_for(harness.middleware))
    lease = harness.offloader.settings.lease
    try:
        while (claim := harness.offloader.queue.claim(lease, 0)) is not None:
            worker.process(claim)
    finally:
        close_replay_loop()
    return worker.jobs_done


def from_app(result: Result) -> bool:
    """Whether the app produced this answer (every answer of the security apps says so)."""
    return (apps.FROM_APP[0], apps.FROM_APP[1]) in [(n.title(), v) for n, v in result.headers]


def check_origin(result: Result) -> None:
    """An answer is the app's, or one of offload's own: never a 500 (or anything else) of offload's making."""
    if from_app(result):
        return
    assert result.status in OWN_STATUSES, f"offload answered {result.status} by itself: {result}"
    if result.status in (202, 503):
        assert result.header("Retry-After") is not None
    assert result.header("Cache-Control") == "no-store"


def key_of(harness: Harness, path: str, query: str = "", headers: dict[str, str] | None = None) -> str:
    """The request key offload gives the harness's GET for ``path`` and ``query`` (on host ``testserver``)."""
    return str(harness.middleware.key_for(f"http://testserver{path}?{query}", headers))
