"""Prometheus metrics: what offload answers and what its workers do, counted from its events.

``install(middleware, patterns={"/reports/*": "reports"})`` subscribes one
listener to the offloader's :class:`~offload.events.Events`; nothing is
counted before (with no listener, the hit path does not even build the
event). The counters and histograms carry two labels: ``namespace`` and
``pattern``, the name of the first pattern the path matches, else ``other``:
raw URLs never become labels, so the number of series stays bounded.

Web processes under gunicorn and worker processes each count in their own
process; with ``PROMETHEUS_MULTIPROC_DIR`` set (before the first
``install``), every process writes its values there and any process serving
:func:`wsgi_app` / :func:`asgi_app` exposes the sum over all of them, as
``prometheus_client``'s multiprocess mode does. The queue depth, the age of
the oldest waiting job and the cached counts are gauges read from the backend
when Prometheus scrapes (:class:`BackendCollector`), so they are right
whichever process answers the scrape.

The ``request`` event's outcomes and the status each one answers:

========================  ======  =========================================
outcome (label)           status  meaning
========================  ======  =========================================
``hit``                   app's   served from the cache, fresh
``stale``                 app's   served stale while one refresh runs
``not_modified``          304     the client's validator matched
``miss``                  202     a job was queued
``collapsed``             202     a job was already queued or running
``refused``               503     the queue holds ``max_queued`` jobs
``outage``                503     the backend cannot be reached
``limited``               429     per-client admission refused it
``bypass``                414/431 the URL or the headers are too large
========================  ======  =========================================
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from offload.core import Offloader
from offload.errors import ConfigurationError, MissingDependency, OffloadError, install_hint
from offload.importer import offloader_of

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

#: The ``request`` event's outcomes, as label values, and the status each answers (None: the app's own).
OUTCOMES: dict[str, int | None] = {
    "hit": None,
    "stale": None,
    "not_modified": 304,
    "miss": 202,
    "collapsed": 202,
    "refused": 503,
    "outage": 503,
    "limited": 429,
    "bypass": None,
}

#: Why a request went to the app by itself (the ``pass`` event's ``reason``).
PASS_REASONS = ("method", "outage")

#: Worker events counted, and the counter each one moves.
JOB_COUNTERS = {
    "job.queued": "offload_jobs_queued",
    "job.started": "offload_jobs_started",
    "job.succeeded": "offload_jobs_succeeded",
    "job.failed": "offload_jobs_failed",
    "job.retried": "offload_jobs_retried",
    "job.timed_out": "offload_jobs_timed_out",
    "job.dead_lettered": "offload_jobs_dead_lettered",
    "job.stored": "offload_jobs_stored",
    "job.store_failed": "offload_jobs_store_failed",
    "job.lease_lost": "offload_lease_expiries",
}

_JOB_HELP = {
    "offload_jobs_queued": "Jobs queued by a miss or a refresh.",
    "offload_jobs_started": "Jobs a worker started (a job handed back and started again counts again).",
    "offload_jobs_succeeded": "Attempts that ended in an answer that is not a failure.",
    "offload_jobs_failed": (
        "Attempts that failed (an exception, a failure status); failed - retried = jobs that ended failed."
    ),
    "offload_jobs_retried": "Failed attempts tried again after a backoff.",
    "offload_jobs_timed_out": "Jobs that ran past job_timeout (a 504 is stored).",
    "offload_jobs_dead_lettered": "Jobs started max_deliveries times without finishing, kept as dead letters.",
    "offload_jobs_stored": "Answers stored by workers (successes and failures).",
    "offload_jobs_store_failed": "Answers a worker could not store (the job runs again).",
    "offload_lease_expiries": "Leases a running job lost (its worker stalled past the lease; another may run it).",
}

#: Seconds: from a few milliseconds to the ten minutes of a long report.
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

OTHER = "other"


class Patterns:
    """Names paths by the first pattern they match (``*`` matches anything), else ``other``.

    Results are remembered for up to ``memo`` distinct paths, so a hit costs a
    dictionary lookup; past that the memory is dropped and built again.

    >>> names = Patterns({"/reports/*": "reports", "/export": "export"})
    >>> names("/reports/2024/q3"), names("/export"), names("/elsewhere")
    ('reports', 'export', 'other')
    """

    def __init__(self, patterns: Mapping[str, str] | None = None, memo: int = 10_000) -> None:
        self.names = tuple(dict.fromkeys([*(patterns or {}).values(), OTHER]))
        self._rules = [(_compile(pattern), name) for pattern, name in (patterns or {}).items()]
        for pattern, name in (patterns or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"the pattern {pattern!r} needs a non-empty name")
        self._memo: dict[str, str] = {}
        self._limit = memo

    def __call__(self, path: str) -> str:
        name = self._memo.get(path)
        if name is None:
            name = next((label for matches, label in self._rules if matches(path)), OTHER)
            if len(self._memo) >= self._limit:
                self._memo.clear()
            self._memo[path] = name
        return name


def _compile(pattern: str) -> Callable[[str], Any]:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.compile(regex, re.DOTALL).fullmatch


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MissingDependency(f"metrics need prometheus_client: {install_hint('metrics')}") from None
    return prometheus_client


class Metrics:
    """The metric objects of this process, created once (after ``PROMETHEUS_MULTIPROC_DIR`` is read)."""

    def __init__(self) -> None:
        client = _prometheus()
        labels = ("namespace", "pattern")
        self.requests = client.Counter(
            "offload_requests", "GET and HEAD requests a middleware answered, by outcome.", (*labels, "outcome")
        )
        self.passes = client.Counter(
            "offload_passes",
            "Requests the app answered by itself (other methods, an outage with passthrough).",
            (*labels, "reason"),
        )
        self.jobs = {name: client.Counter(name, _JOB_HELP[name], labels) for name in JOB_COUNTERS.values()}
        self.duration = client.Histogram(
            "offload_job_duration_seconds",
            "Seconds the app took per attempt of a job.",
            labels,
            buckets=DURATION_BUCKETS,
        )
        self.fill = client.Histogram(
            "offload_fill_seconds",
            "Seconds from the request that queued a job to its stored answer (time to first fill).",
            labels,
            buckets=DURATION_BUCKETS,
        )


_metrics: Metrics | None = None
_collected: list[Offloader] = []  # the offloaders whose backends the gauges read


def metrics() -> Metrics:
    """This process's metric objects."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


class Counting:
    """The listener :func:`install` subscribes: one counter or histogram per event, children looked up once."""

    def __init__(self, namespace: str, patterns: Patterns) -> None:
        self.namespace = namespace
        self.patterns = patterns
        self.metrics = metrics()
        self._children: dict[tuple[str, ...], Any] = {}
        m = self.metrics
        for pattern in patterns.names:  # every series exists from the start, at 0
            for outcome in OUTCOMES:
                m.requests.labels(namespace, pattern, outcome)
            for reason in PASS_REASONS:
                m.passes.labels(namespace, pattern, reason)
            for counter in m.jobs.values():
                counter.labels(namespace, pattern)
            m.duration.labels(namespace, pattern)
            m.fill.labels(namespace, pattern)

    def _child(self, kind: str, pattern: str, extra: str = "") -> Any:
        key = (kind, pattern, extra)
        child = self._children.get(key)
        if child is None:
            m = self.metrics
            if kind == "request":
                child = m.requests.labels(self.namespace, pattern, extra)
            elif kind == "pass":
                child = m.passes.labels(self.namespace, pattern, extra)
            elif kind == "duration":
                child = m.duration.labels(self.namespace, pattern)
            elif kind == "fill":
                child = m.fill.labels(self.namespace, pattern)
            else:
                child = m.jobs[kind].labels(self.namespace, pattern)
            self._children[key] = child
        return child

    def __call__(self, name: str, fields: Mapping[str, Any]) -> None:
        pattern = self.patterns(fields.get("path", ""))
        if name == "request":
            self._child("request", pattern, fields["outcome"].replace("-", "_")).inc()
            return
        if name == "pass":
            self._child("pass", pattern, fields.get("reason", "method")).inc()
            return
        counter = JOB_COUNTERS.get(name)
        if counter is None:
            return
        self._child(counter, pattern).inc()
        if name in ("job.succeeded", "job.failed") and fields.get("seconds") is not None:
            self._child("duration", pattern).observe(fields["seconds"])
        elif name == "job.stored" and fields.get("waited") is not None:
            self._child("fill", pattern).observe(max(0.0, fields["waited"]))


def install(target: Any, *, patterns: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Count what ``target`` (a middleware, an app holding one, an offloader) answers and runs.

    ``patterns`` name the paths' labels: ``{"/reports/*": "reports"}``; any
    other path is ``other``. Installing again on one offloader only makes
    its backend the one the gauges read for its namespace (``offload worker
    --metrics-port`` does so). Returns the function that stops the counting.
    """
    offloader = offloader_of(target)
    _collected[:] = [other for other in _collected if other.namespace != offloader.namespace]
    _collected.append(offloader)
    counting = next((known for known in offloader.events.listeners if isinstance(known, Counting)), None)
    unsubscribe: Callable[[], None] = lambda: None  # noqa: E731 - installed before: the first install stops it
    if counting is None:
        unsubscribe = offloader.events.subscribe(Counting(offloader.namespace, Patterns(patterns)))

    def uninstall() -> None:
        unsubscribe()
        if offloader in _collected:
            _collected.remove(offloader)

    return uninstall


class BackendCollector:
    """Gauges read from the backends of the installed offloaders at each scrape.

    ``offload_queue_depth`` (waiting jobs), ``offload_jobs_running``,
    ``offload_dead_letters``, ``offload_queue_oldest_age_seconds`` (how long the
    request of the job a worker takes next has waited: the queue's latency),
    ``offload_cached_answers`` and ``offload_failed_answers``, by namespace;
    ``offload_backend_up`` is 0 for a backend that could not be read.
    """

    def __init__(self, offloaders: Callable[[], Iterable[Offloader]] | None = None) -> None:
        self._offloaders = offloaders or (lambda: list(_collected))

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        families = {
            "queued": GaugeMetricFamily("offload_queue_depth", "Jobs waiting for a worker.", labels=["namespace"]),
            "running": GaugeMetricFamily(
                "offload_jobs_running", "Jobs a worker holds a lease on.", labels=["namespace"]
            ),
            "dead": GaugeMetricFamily("offload_dead_letters", "Jobs kept as dead letters.", labels=["namespace"]),
            "oldest": GaugeMetricFamily(
                "offload_queue_oldest_age_seconds",
                "Seconds the request of the next job to run has waited (0 when none waits).",
                labels=["namespace"],
            ),
            "cached": GaugeMetricFamily("offload_cached_answers", "Answers in the cache.", labels=["namespace"]),
            "failed": GaugeMetricFamily(
                "offload_failed_answers", "Failures kept for error_ttl in the cache.", labels=["namespace"]
            ),
            "up": GaugeMetricFamily("offload_backend_up", "Whether the backend answered.", labels=["namespace"]),
        }
        seen: set[str] = set()
        for offloader in self._offloaders():
            if offloader.namespace in seen:
                continue
            seen.add(offloader.namespace)
            try:
                figures = backend_figures(offloader)
            except (OffloadError, OSError):
                families["up"].add_metric([offloader.namespace], 0)
                continue
            families["up"].add_metric([offloader.namespace], 1)
            for name, value in figures.items():
                families[name].add_metric([offloader.namespace], value)
        yield from families.values()


def backend_figures(offloader: Offloader) -> dict[str, float]:
    """What the backend tells of a namespace now: job and answer counts, the oldest waiting job's age."""
    queue, cache = offloader.queue, offloader.cache
    figures: dict[str, float] = {"queued": 0, "running": 0, "dead": 0, "oldest": 0.0}
    figures.update(queue.stats())
    figures.update(cache.stats())
    head = queue.waiting(1)
    if head:
        figures["oldest"] = oldest_age(head[0].payload)
    return figures


def oldest_age(payload: bytes) -> float:
    """Seconds since the request a queued job holds was made (0 for a payload offload cannot read)."""
    from offload.errors import CorruptRecord
    from offload.records import StoredRequest

    try:
        return max(0.0, time.time() - StoredRequest.decode(payload).enqueued)
    except CorruptRecord:
        return 0.0


_registry: CollectorRegistry | None = None


def registry() -> CollectorRegistry:
    """The registry this process exposes: every process's values in multiprocess mode, plus the gauges."""
    global _registry
    if _registry is None:
        client = _prometheus()
        metrics()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            exposed = client.CollectorRegistry()
            multiprocess.MultiProcessCollector(exposed)  # type: ignore[no-untyped-call]
        else:
            exposed = client.REGISTRY
        exposed.register(BackendCollector())
        _registry = exposed
    return _registry


def wsgi_app() -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering with the metrics in Prometheus' text format; mount it where you like."""
    app: Callable[..., Iterable[bytes]] = _prometheus().make_wsgi_app(registry())
    return app


def asgi_app() -> Callable[..., Any]:
    """An ASGI app answering with the metrics in Prometheus' text format."""
    app: Callable[..., Any] = _prometheus().make_asgi_app(registry())
    return app


def serve(bind: str) -> tuple[str, int]:
    """Serve the metrics over HTTP from a thread, on ``PORT`` or ``HOST:PORT`` (all interfaces by default).

    Returns the address bound (port 0 picks a free port).
    """
    host, _, port = bind.rpartition(":")
    address = host.strip("[]") or "0.0.0.0"
    server, _thread = _prometheus().start_http_server(int(port), addr=address, registry=registry())
    bound = server.server_address
    return str(bound[0]), int(bound[1])
