"""Structured logs: one line per job, per refusal and per outage, as JSON with a timestamp."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import offload.logs
from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    offload.logs.configure(json=True, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_line_per_job_with_its_fields(lines: io.StringIO) -> None:
    harness = WSGIHarness(apps.wsgi_app, url=f"memory://{uuid.uuid4().hex}", max_attempts=2, retry_backoff=0.01)
    offload.logs.install(harness.middleware)
    offload.logs.install(harness.middleware)  # once is enough
    harness.request("GET", "/hello")
    harness.request("GET", "/boom")
    harness.work()
    done = [line for line in events(lines) if line["event"] == "job.done"]
    assert len(done) == 2
    by_path = {line["path"]: line for line in done}
    assert by_path["/hello"]["outcome"] == "succeeded" and by_path["/hello"]["status"] == 200
    assert by_path["/boom"]["outcome"] == "failed" and by_path["/boom"]["attempt"] == 2
    for line in done:
        assert line["ts"].endswith("Z") and line["level"] in ("info", "warning")
        assert line["key"] and line["duration"] >= 0 and ":" in line["worker"]
    assert all("ts" in line for line in events(lines))


def test_refusals_are_told_and_a_flood_is_summed(lines: io.StringIO) -> None:
    harness = WSGIHarness(apps.wsgi_app, url=f"memory://{uuid.uuid4().hex}", max_queued=1)
    offload.logs.install(harness.middleware)
    for number in range(offload.logs.REFUSALS_PER_SECOND + 6):
        harness.request("GET", "/hello", f"n={number}")
    refused = [line for line in events(lines) if line["event"] == "request.refused"]
    assert 1 <= len(refused) <= offload.logs.REFUSALS_PER_SECOND + 1
    assert refused[0]["path"] == "/hello"


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(lines: io.StringIO) -> None:
    clock = [100.0]
    log = offload.logs.EventLog(clock=lambda: clock[0])
    for _ in range(3):
        log("request", {"outcome": "outage", "path": "/x"})
    clock[0] = 104.5
    log("request", {"outcome": "hit", "path": "/x"})
    told = [(line["event"], line.get("requests")) for line in events(lines)]
    assert told == [("outage.started", None), ("outage.ended", 3)]


def test_text_lines_are_timestamped_and_carry_the_fields() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    offload.logs.configure(stream=stream)
    try:
        offload.logs.EventLog()("request", {"outcome": "refused", "path": "/full"})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = stream.getvalue().strip()
    assert line[:4].isdigit() and "event=request.refused path=/full" in line
