"""OpenTelemetry spans for requests and jobs, linked from the request that queued a job to the job.

``offload.tracing.install(middleware)`` (with ``opentelemetry-api``
installed: the ``otel`` extra, ``pip install -e "/path/to/offload[otel]"``
from a checkout) records, through the tracer provider you configured (or the
one given):

``offload.request``
    each GET or HEAD a middleware answers, with ``offload.outcome``; a child
    of the current span (your server instrumentation's, if any).
``offload.enqueue``
    a miss or a refresh that queues a job (``offload.key``), child of
    ``offload.request``. Its ``traceparent`` travels inside the stored job
    (:attr:`offload.records.StoredRequest.trace`, never part of the key).
``offload.job``
    a job run by a worker: a new trace, with a **span link** to the
    ``offload.enqueue`` span of the request that queued it, since one job
    serves many requests and runs long after the first one was answered.
``offload.replay``, ``offload.store``
    children of ``offload.job``: each attempt through the app (errors
    recorded), then storing the answer.

The spans are built from the events (:mod:`offload.events`); the only hook
into a request is :attr:`offload.core.Offloader.trace_context`, called when a
job is about to be queued. Install it in the module that builds the app, so
that ``offload worker`` (which imports that module) traces jobs too.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from offload.errors import MissingDependency, install_hint
from offload.importer import offloader_of

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

#: The spans a request began when it queued a job: (request, enqueue), ended by its ``request`` event.
_begun: contextvars.ContextVar[tuple[Span, Span] | None] = contextvars.ContextVar("offload_spans", default=None)


def _api() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise MissingDependency(f"tracing needs opentelemetry-api: {install_hint('otel')}") from None
    return trace


@dataclass
class _Job:
    span: Span
    mark: int = field(default_factory=time.time_ns)  # when the last step ended: the next one starts there


class Spans:
    """The listener :func:`install` subscribes, and the offloader's ``trace_context``."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace = _api()
        self.tracer = tracer
        self.propagator = TraceContextTextMapPropagator()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    # -- the web side ---------------------------------------------------------

    def trace_context(self) -> str:
        """Begin this request's span and its enqueue span; return the enqueue span's ``traceparent``."""
        kinds = self.trace.SpanKind
        begun = _begun.get()
        if begun is None:
            request = self.tracer.start_span("offload.request", kind=self._request_kind())
            context = self.trace.set_span_in_context(request)
            enqueue = self.tracer.start_span("offload.enqueue", context=context, kind=kinds.PRODUCER)
            begun = (request, enqueue)
            _begun.set(begun)
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=self.trace.set_span_in_context(begun[1]))
        return carrier.get("traceparent", "")

    def _request_kind(self) -> Any:
        """SERVER, unless a server span is current already (the app's instrumentation): then INTERNAL."""
        current = self.trace.get_current_span().get_span_context()
        return self.trace.SpanKind.INTERNAL if current.is_valid else self.trace.SpanKind.SERVER

    def _request(self, name: str, fields: Mapping[str, Any]) -> None:
        begun = _begun.get()
        _begun.set(None)
        outcome = fields.get("outcome") if name == "request" else f"pass-{fields.get('reason')}"
        if begun is None:
            if name == "pass":
                return
            seconds = float(fields.get("seconds", 0.0))
            request = self.tracer.start_span(
                "offload.request", kind=self._request_kind(), start_time=time.time_ns() - int(seconds * 1e9)
            )
        else:
            request, enqueue = begun
            if enqueue.is_recording():  # not queued after all (a full queue, an outage)
                enqueue.set_status(self.trace.Status(self.trace.StatusCode.ERROR, str(outcome)))
                enqueue.end()
        request.set_attribute("offload.outcome", str(outcome))
        request.set_attribute("url.path", str(fields.get("path", "")))
        request.end()

    def _queued(self, fields: Mapping[str, Any]) -> None:
        begun = _begun.get()
        if begun is None:
            return
        enqueue = begun[1]
        enqueue.set_attribute("offload.key", str(fields.get("key", "")))
        enqueue.set_attribute("offload.refresh", bool(fields.get("refresh", False)))
        enqueue.end()

    # -- the worker side ------------------------------------------------------------

    def _link(self, traceparent: str) -> list[Any]:
        if not traceparent:
            return []
        context = self.trace.get_current_span(self.propagator.extract({"traceparent": traceparent})).get_span_context()
        return [self.trace.Link(context)] if context.is_valid else []

    def _start_job(self, fields: Mapping[str, Any]) -> _Job:
        from opentelemetry.context import Context

        span = self.tracer.start_span(
            "offload.job",
            context=Context(),  # a trace of its own, linked to the request that queued it
            kind=self.trace.SpanKind.CONSUMER,
            links=self._link(str(fields.get("trace", ""))),
            attributes={"offload.key": str(fields.get("key", "")), "url.path": str(fields.get("path", ""))},
        )
        return _Job(span)

    def _step(self, job: _Job, name: str, start: int, attributes: Mapping[str, Any], error: str | None) -> None:
        context = self.trace.set_span_in_context(job.span)
        span = self.tracer.start_span(name, context=context, start_time=start, attributes=dict(attributes))
        if error:
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, error))
        job.mark = time.time_ns()
        span.end(end_time=job.mark)

    def _job(self, name: str, fields: Mapping[str, Any]) -> None:
        key = str(fields.get("key", ""))
        with self._lock:
            if name == "job.started":
                job = self._jobs[key] = self._start_job(fields)
                job.span.set_attribute("offload.attempt", int(fields.get("attempt", 1)))
                return
            job_or_none = self._jobs.get(key)
            if name == "job.dead_lettered" and job_or_none is None:
                job_or_none = self._start_job(fields)
            if job_or_none is None:
                return
            job = job_or_none
            ending = name in ("job.stored", "job.store_failed", "job.dead_lettered")
            if ending:
                self._jobs.pop(key, None)
        now = time.time_ns()
        status = fields.get("status")
        if name in ("job.succeeded", "job.failed"):
            seconds = fields.get("seconds")
            start = now - int(float(seconds) * 1e9) if seconds is not None else job.mark
            attributes = {"offload.attempt": int(fields.get("attempt", 1))}
            if status is not None:
                attributes["http.response.status_code"] = int(status)
            error = (fields.get("error") or f"status {status}") if name == "job.failed" else None
            self._step(job, "offload.replay", start, attributes, error)
        elif name == "job.stored":
            self._step(job, "offload.store", job.mark, {"offload.shared": bool(fields.get("shared", True))}, None)
        elif name in ("job.retried", "job.timed_out", "job.lease_lost"):
            job.span.add_event(name, {"offload.attempt": int(fields.get("attempt", 0) or 0)})
        if not ending:
            return
        if status is not None:
            job.span.set_attribute("http.response.status_code", int(status))
        if name != "job.stored" or (status is not None and int(status) >= 500):
            job.span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, str(fields.get("error") or name)))
        job.span.end()

    def __call__(self, name: str, fields: Mapping[str, Any]) -> None:
        if name == "request" or name == "pass":
            self._request(name, fields)
        elif name == "job.queued":
            self._queued(fields)
        elif name.startswith("job."):
            self._job(name, fields)


def install(target: Any, tracer_provider: TracerProvider | None = None) -> Callable[[], None]:
    """Trace ``target`` (a middleware, an app holding one, an offloader); returns the function that stops it."""
    from offload import __version__

    trace = _api()
    offloader = offloader_of(target)
    spans = Spans(trace.get_tracer("offload", __version__, tracer_provider=tracer_provider))
    offloader.trace_context = spans.trace_context
    unsubscribe = offloader.events.subscribe(spans)

    def uninstall() -> None:
        unsubscribe()
        offloader.trace_context = None

    return uninstall
