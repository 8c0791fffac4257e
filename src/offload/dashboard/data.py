"""What the dashboard shows, read from the backend (and from the metrics when this process has them).

Every figure comes from the backend contract (``Queue.stats``, ``waiting``,
``running``, ``dead``; ``Cache.stats``), so the page is right whichever
process or machine serves it. Hit ratios and fill times exist only as
metrics: they come from this process's Prometheus registry when
:mod:`offload.metrics` is installed or ``PROMETHEUS_MULTIPROC_DIR`` is set,
or from a ``/metrics`` URL the dashboard scrapes; otherwise the page charts
what the backend can tell (queue depth and running jobs over time) and says so.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from offload.backends import DEFAULT_NAMESPACE, open_backend
from offload.core import Offloader
from offload.errors import CorruptRecord, OffloadError
from offload.records import PendingMarker, StoredRequest
from offload.settings import Settings

#: Rows per list on the page: an overview, not an export.
ROWS = 50


@dataclass
class Source:
    """Where the dashboard reads: one offloader (an app's), or every namespace of a store by URL."""

    offloader: Offloader | None = None
    url: str | None = None
    only: str | None = None  # one namespace of the store
    metrics_url: str | None = None

    def __post_init__(self) -> None:
        self._offloaders: dict[str, Offloader] = {}
        if self.offloader is not None:
            self._offloaders[self.offloader.namespace] = self.offloader

    def namespaces(self) -> list[str]:
        if self.offloader is not None:
            return [self.offloader.namespace]
        if self.only:
            return [self.only]
        backend = open_backend(self.url)
        found: set[str] = set()
        for part in (backend.cache, backend.queue):
            if part is not None:
                found.update(part.namespaces())
                part.close()
        return sorted(found) or [DEFAULT_NAMESPACE]

    def offloader_for(self, namespace: str) -> Offloader:
        """The offloader of a namespace: the app's own, or one opened on the store's URL with default settings."""
        found = self._offloaders.get(namespace)
        if found is None:
            if self.offloader is not None or namespace not in self.namespaces():
                raise KeyError(namespace)
            found = self._offloaders[namespace] = Offloader(url=self.url, settings=Settings(namespace=namespace))
        return found


def describe(payload: bytes) -> tuple[str, float | None]:
    """The path and query a job's payload asks for, and when its request was made (None if unreadable)."""
    try:
        request = StoredRequest.decode(payload)
    except CorruptRecord:
        return "(not in offload's format)", None
    target = request.target
    query = f"?{target.query.decode('latin-1')}" if target.query else ""
    return target.full_path.decode("latin-1") + query, request.enqueued


def namespace_overview(offloader: Offloader, now: float) -> dict[str, Any]:
    """Counts, waiting, running and dead jobs of one namespace; ``up`` False when the backend failed."""
    try:
        queue, cache = offloader.queue, offloader.cache
        result: dict[str, Any] = {"name": offloader.namespace, "up": True}
        result.update(queue.stats())
        result.update(cache.stats())
        waiting = []
        for job in queue.waiting(ROWS):
            path, enqueued = describe(job.payload)
            waiting.append({"job_id": job.job_id, "path": path, "age": None if enqueued is None else now - enqueued})
        running = []
        for job in queue.running(ROWS):
            path, enqueued = describe(job.payload)
            since = _running_since(offloader, job.key)
            running.append(
                {
                    "job_id": job.job_id,
                    "path": path,
                    "age": None if since is None else max(0.0, now - since),
                    "lease_left": None if job.leased_until is None else job.leased_until - now,
                }
            )
        dead = []
        for letter in queue.dead(ROWS):
            path, _ = describe(letter.payload)
            dead.append({"job_id": letter.job_id, "path": path, "error": letter.error, "buried": letter.buried})
        result.update(
            waiting=waiting,
            running_jobs=running,
            dead_letters=dead,
            oldest_age=waiting[0]["age"] if waiting else None,
        )
        return result
    except (OffloadError, OSError) as error:
        return {"name": offloader.namespace, "up": False, "error": str(error)}


def _running_since(offloader: Offloader, key: str) -> float | None:
    """When the job running for ``key`` started: its running marker's time."""
    data = offloader.cache.get(offloader.running_key(key))
    if data is None:
        return None
    try:
        return PendingMarker.decode(data).since
    except CorruptRecord:
        return None


def overview(source: Source) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data."""
    now = time.time()
    namespaces = [namespace_overview(source.offloader_for(name), now) for name in source.namespaces()]
    figures = metric_figures(source.metrics_url)
    return {
        "generated": now,
        "source": "metrics" if figures is not None else "backend",
        "namespaces": namespaces,
        "metrics": figures,
    }


Samples = Iterable[tuple[str, dict[str, str], float]]


def _local_samples() -> Samples | None:
    """This process's metric samples, if it has metrics (installed here, or a multiprocess directory)."""
    from offload import metrics

    if metrics._metrics is None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    try:
        registry = metrics.registry()
    except OffloadError:
        return None
    return [
        (sample.name, sample.labels, sample.value)
        for family in registry.collect()
        if family.name.startswith(("offload_requests", "offload_fill", "offload_job_duration"))
        for sample in family.samples
    ]


def _scraped_samples(url: str) -> Samples | None:
    """The samples of a Prometheus exposition at ``url``; None when it cannot be read."""
    try:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(url, timeout=5) as answer:  # an operator's own URL
            text = answer.read().decode("utf-8", "replace")
        return [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except (OSError, ValueError, ImportError):
        return None


def metric_figures(metrics_url: str | None = None, samples: Callable[[], Samples | None] | None = None) -> Any:
    """Cumulative request outcomes, fill times and job durations by pattern; None without metrics.

    The page turns two readings into rates: the hit ratio and the mean fill
    time over the last interval.
    """
    found = samples() if samples is not None else (_scraped_samples(metrics_url) if metrics_url else _local_samples())
    if found is None:
        return None
    outcomes: dict[str, float] = {}
    fill_sum = fill_count = 0.0
    durations: dict[str, list[float]] = {}
    for name, labels, value in found:
        if name == "offload_requests_total":
            outcome = labels.get("outcome", "")
            outcomes[outcome] = outcomes.get(outcome, 0.0) + value
        elif name == "offload_fill_seconds_sum":
            fill_sum += value
        elif name == "offload_fill_seconds_count":
            fill_count += value
        elif name in ("offload_job_duration_seconds_sum", "offload_job_duration_seconds_count"):
            pair = durations.setdefault(labels.get("pattern", "other"), [0.0, 0.0])
            pair[0 if name.endswith("_sum") else 1] += value
    rows = [(total / count, pattern, count) for pattern, (total, count) in durations.items() if count]
    ranked = sorted(rows, reverse=True)
    slowest = [{"pattern": pattern, "mean": mean, "count": count} for mean, pattern, count in ranked]
    return {"requests": outcomes, "fill_sum": fill_sum, "fill_count": fill_count, "slowest": slowest[:10]}


def retry_dead_letter(offloader: Offloader, job_id: str) -> bool:
    """Put a dead letter back in its queue so that it runs again; False if there is no such dead letter.

    The failure stored when the job was buried is dropped first: a worker
    takes an answer stored after a job was queued for that job's own answer,
    and would acknowledge the revived job without running it.
    """
    from offload.records import CachedResponse

    letter = next((dead for dead in offloader.queue.dead(10_000) if dead.job_id == job_id), None)
    if letter is None:
        return False
    answer_key = offloader.response_key(letter.key)
    stored = offloader.cache.get(answer_key)
    if stored is not None:
        try:
            failed = CachedResponse.decode(stored).failed
        except CorruptRecord:
            failed = True
        if failed:
            offloader.cache.delete(answer_key)
    # As a miss does: the marker says a job is queued, so requests meanwhile queue no second one.
    marker = PendingMarker("queued", time.time()).encode()
    offloader.cache.add(offloader.pending_key(letter.key), marker, offloader.settings.pending_ttl)
    return offloader.queue.revive(job_id)
