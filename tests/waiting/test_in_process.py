"""Waiting, admission and client preferences, in process on the memory backend: the rules, quickly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

import offload
from offload.replay import replayer_for
from offload.worker import Worker
from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness


@pytest.fixture
def running() -> Iterator[WSGIHarness]:
    """A harness whose worker runs in a thread, as a worker process would."""
    harness = WSGIHarness(apps.wsgi_app, url=f"memory://waiting-{time.time()}", max_new_keys_per_minute=2)
    worker = Worker(harness.offloader, replayer_for(harness.middleware), claim_wait=0.05)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    yield harness
    worker.stop()
    thread.join(10)


def test_a_request_past_the_waiters_cap_gets_its_202_at_once(running: WSGIHarness) -> None:
    running.offloader.waiters.max_waiters = 0
    started = time.monotonic()
    answer = running.request("GET", "/slow", "s=1", [("Prefer", "wait=5")])
    assert answer.status == 202 and time.monotonic() - started < 0.5


def test_client_no_cache_serves_the_answer_and_asks_one_refresh(running: WSGIHarness) -> None:
    assert running.request("GET", "/hello", "x=1", [("Prefer", "wait=5")]).status == 200
    time.sleep(1.1)  # the answer is over a second old: a no-cache may ask its refresh
    before = apps.calls["/hello"]
    served = [running.request("GET", "/hello", "x=1", [("Cache-Control", "no-cache")]) for _ in range(5)]
    assert [answer.status for answer in served] == [200] * 5, "no-cache never makes a client wait"
    deadline = time.monotonic() + 5
    while apps.calls["/hello"] == before and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert apps.calls["/hello"] == before + 1, "five no-cache requests asked one refresh"


def test_admission_counts_new_keys_per_client(running: WSGIHarness) -> None:
    statuses = [running.request("GET", "/hello", f"n={n}").status for n in range(4)]
    assert statuses == [202, 202, 429, 429]
    assert running.request("GET", "/hello", "n=0").status in (200, 202), "a known key is not counted again"


def tagging_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    offload.tag("report", f"customer-{parse_qs(environ['QUERY_STRING'])['c'][0]}")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"tagged"]


def test_offload_tag_labels_the_answer_being_computed() -> None:
    harness = WSGIHarness(tagging_app, url=f"memory://tags-{time.time()}")
    for customer in ("7", "8"):
        assert harness.get_after_work("/report", f"c={customer}").status == 200
    assert harness.middleware.expire(tag="customer-7") == 1
    assert harness.request("GET", "/report", "c=7").status == 202
    assert harness.request("GET", "/report", "c=8").status == 200
    offload.tag("outside-a-replay")  # outside a worker's replay it does nothing
