"""OpenTelemetry spans through the real worker engine, recorded by the SDK's in-memory exporter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import offload.tracing
from offload.core import keys_of
from offload.records import StoredRequest
from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    yield found
    found.clear()


def traced(exporter: InMemorySpanExporter, **options: object) -> WSGIHarness:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness = WSGIHarness(apps.wsgi_app, url=f"memory://{uuid.uuid4().hex}", **options)  # type: ignore[arg-type]
    offload.tracing.install(harness.middleware, tracer_provider=provider)
    return harness


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_the_job_links_to_the_request_that_queued_it(exporter: InMemorySpanExporter) -> None:
    harness = traced(exporter)
    assert harness.request("GET", "/hello", "a=1").status == 202
    waiting = harness.offloader.queue.waiting()
    request = StoredRequest.decode(waiting[0].payload)
    assert request.trace.startswith("00-")  # the traceparent travels inside the job
    assert keys_of(request) == (request.primary, request.key)  # and is not part of the key
    harness.work()
    assert harness.request("GET", "/hello", "a=1").status == 200

    first, hit = named(exporter, "offload.request")
    (enqueue,) = named(exporter, "offload.enqueue")
    (job,) = named(exporter, "offload.job")
    (replay,) = named(exporter, "offload.replay")
    (store,) = named(exporter, "offload.store")
    assert first.attributes is not None and first.attributes["offload.outcome"] == "miss"
    assert hit.attributes is not None and hit.attributes["offload.outcome"] == "hit"
    assert enqueue.parent is not None and enqueue.parent.span_id == first.context.span_id
    assert job.context.trace_id != first.context.trace_id  # a trace of its own ...
    assert [link.context.span_id for link in job.links] == [enqueue.context.span_id]  # ... linked to the request
    assert replay.parent is not None and replay.parent.span_id == job.context.span_id
    assert store.parent is not None and store.parent.span_id == job.context.span_id
    assert replay.start_time is not None and replay.end_time is not None and store.start_time is not None
    assert replay.start_time <= replay.end_time <= store.start_time
    assert job.status.status_code != StatusCode.ERROR


def test_failed_attempts_are_errors(exporter: InMemorySpanExporter) -> None:
    harness = traced(exporter, max_attempts=2, retry_backoff=0.01)
    harness.request("GET", "/boom")
    harness.work()
    replays = named(exporter, "offload.replay")
    assert len(replays) == 2 and all(span.status.status_code == StatusCode.ERROR for span in replays)
    (job,) = named(exporter, "offload.job")
    assert job.status.status_code == StatusCode.ERROR
    assert [event.name for event in job.events] == ["job.retried"]


def test_old_records_without_a_trace_still_decode() -> None:
    harness = WSGIHarness(apps.wsgi_app, url=f"memory://{uuid.uuid4().hex}")
    harness.request("GET", "/hello")
    payload = harness.offloader.queue.waiting()[0].payload
    assert b'"trace"' not in payload  # encoded only when set
    assert StoredRequest.decode(payload).trace == ""


def test_a_trace_that_is_not_text_is_a_damaged_record() -> None:
    from offload.errors import CorruptRecord

    harness = WSGIHarness(apps.wsgi_app, url=f"memory://{uuid.uuid4().hex}")
    harness.request("GET", "/hello")
    payload = harness.offloader.queue.waiting()[0].payload
    with pytest.raises(CorruptRecord):
        StoredRequest.decode(payload.replace(b'"enqueued":', b'"trace":7,"enqueued":'))
