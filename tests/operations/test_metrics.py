"""Metrics in one process: labels by pattern, installing is idempotent, the exposition apps answer."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import offload.metrics
from offload.errors import ConfigurationError
from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness
from tests.operations.conftest import scrape, total


def exposition() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"] = status

    body = b"".join(offload.metrics.wsgi_app()({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, start_response))
    assert captured["status"].startswith("200")
    return scrape(body.decode())


def test_counts_by_pattern_with_bounded_labels() -> None:
    namespace = f"m{uuid.uuid4().hex[:10]}"
    harness = WSGIHarness(apps.wsgi_app, url=f"memory://{namespace}", namespace=namespace)
    stop = offload.metrics.install(harness.middleware, patterns={"/hel*": "hello"})
    try:
        assert offload.metrics.install(harness.middleware) is not None  # again: not counted twice
        harness.request("GET", "/hello", "a=1")
        harness.request("GET", "/hello", "a=1")
        harness.request("GET", "/elsewhere")
        harness.work()
        harness.request("GET", "/hello", "a=1")
        seen = exposition()
    finally:
        stop()
    assert total(seen, "offload_requests_total", namespace=namespace, pattern="hello", outcome="miss") == 1
    assert total(seen, "offload_requests_total", namespace=namespace, pattern="hello", outcome="collapsed") == 1
    assert total(seen, "offload_requests_total", namespace=namespace, pattern="hello", outcome="hit") == 1
    assert total(seen, "offload_requests_total", namespace=namespace, pattern="other", outcome="miss") == 1
    assert total(seen, "offload_requests_total", namespace=namespace, outcome="limited") == 0
    assert total(seen, "offload_jobs_succeeded_total", namespace=namespace) == 2
    assert total(seen, "offload_cached_answers", namespace=namespace) == 2
    labels = {value for (_, label_set) in seen for _, value in label_set}
    assert "/hello" not in labels and "/elsewhere" not in labels
    harness.request("GET", "/hello", "a=2")
    after = exposition()
    assert total(after, "offload_requests_total", namespace=namespace, outcome="miss") == 2  # stopped counting
    assert total(after, "offload_queue_depth", namespace=namespace) == -1  # and reading its backend


def test_a_pattern_needs_a_name_and_the_target_an_offloader() -> None:
    with pytest.raises(ConfigurationError):
        offload.metrics.Patterns({"/x": ""})
    with pytest.raises(ConfigurationError):
        offload.metrics.install(object())


def test_the_asgi_exposition_answers() -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    asyncio.run(offload.metrics.asgi_app()(scope, receive, send))
    assert sent[0]["status"] == 200
    assert b"offload_backend_up" in b"".join(message.get("body", b"") for message in sent)
