"""The events offload emits for metrics, logs and the dashboard: one per answer, one per step of a job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness


def recorder(harness: WSGIHarness) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def listen(name: str, fields: Mapping[str, Any]) -> None:
        seen.append((name, dict(fields)))

    harness.offloader.events.subscribe(listen)
    return seen


def test_every_answer_and_every_step_of_a_job_is_told() -> None:
    harness = WSGIHarness(apps.wsgi_app, url="memory://events", max_attempts=2, retry_backoff=0.01)
    seen = recorder(harness)
    harness.request("GET", "/hello", "a=1")
    harness.request("GET", "/hello", "a=1")
    harness.work()
    harness.request("GET", "/hello", "a=1")
    harness.request("GET", "/hello", "a=1", [("If-None-Match", "*")])
    harness.request("POST", "/form", body=b"x")
    outcomes = [fields["outcome"] for name, fields in seen if name == "request"]
    assert outcomes == ["miss", "collapsed", "hit", "not-modified"]
    names = [name for name, _ in seen]
    assert names.count("job.queued") == 1
    for step in ("job.started", "job.succeeded", "job.stored"):
        assert step in names
    stored = next(fields for name, fields in seen if name == "job.stored")
    assert stored["path"] == "/hello" and stored["shared"] is True and stored["waited"] >= 0
    assert ("pass", {"reason": "method", "path": "/form"}) in seen


def test_failures_and_retries_are_told() -> None:
    harness = WSGIHarness(apps.wsgi_app, url="memory://events-failures", max_attempts=2, retry_backoff=0.01)
    seen = recorder(harness)
    harness.request("GET", "/boom")
    harness.work()
    names = [name for name, _ in seen]
    assert names.count("job.failed") == 2 and names.count("job.retried") == 1
    assert next(fields for name, fields in seen if name == "job.stored")["status"] == 500


def test_a_listener_that_raises_is_dropped_and_offload_goes_on() -> None:
    harness = WSGIHarness(apps.wsgi_app, url="memory://events-broken")

    def broken(name: str, fields: Mapping[str, Any]) -> None:
        raise RuntimeError("a broken listener")

    harness.offloader.events.subscribe(broken)
    assert harness.request("GET", "/hello").status == 202
    assert harness.offloader.events.listeners == ()
