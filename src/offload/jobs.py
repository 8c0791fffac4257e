"""The job function external queues run: ``offload.jobs.perform(payload)``.

When offload pushes to a queue of your own (``queue=rq.Queue(...)``, a Celery
app), that queue's workers call :func:`perform` with the stored request as a
string: JSON-safe, so the queue can use a JSON serializer. The worker process
finds the app from the ``OFFLOAD_APP`` environment variable (``MODULE:ATTR``,
the app wrapped in offload's middleware) unless the job names it, and finds
the cache and the settings through that middleware: the worker imports the
same module the web process runs, so both build the same cache.

While the job runs, a heartbeat renews its running and pending markers, as
``offload worker`` does, so a job longer than the lease is neither started
again by a second delivery nor enqueued again by a later miss.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from offload.backends import Claim, DeadJob, Queue
from offload.errors import BackendUnavailable, ConfigurationError, CorruptRecord
from offload.importer import find_offloader, import_app
from offload.records import StoredRequest
from offload.replay import replayer_for
from offload.worker import Worker

log = logging.getLogger("offload.jobs")

_workers: dict[str, Worker] = {}
_lock = threading.Lock()


def perform(payload: str | bytes, app: str | None = None) -> None:
    """Run one job pushed by offload: replay the request and store the answer.

    ``payload`` is the stored request, as latin-1 text; ``app`` is a
    ``MODULE:ATTR`` import path, by default ``OFFLOAD_APP``.
    """
    worker = worker_for(app)
    data = payload.encode("latin-1") if isinstance(payload, str) else bytes(payload)
    try:
        key = StoredRequest.decode(data).key
    except CorruptRecord:
        key = ""  # process() logs and drops it
    with _heartbeat(worker, key):
        worker.process(Claim(job_id=f"external:{key[:16]}", key=key, payload=data))


def worker_for(app: str | None = None) -> Worker:
    """The worker for an app import path (default ``OFFLOAD_APP``), built once per process."""
    spec = app or os.environ.get("OFFLOAD_APP")
    if not spec:
        raise ConfigurationError(
            "set OFFLOAD_APP=module:app in the worker's environment so that offload's jobs can find the app"
        )
    with _lock:
        worker = _workers.get(spec)
        if worker is None:
            wrapped = import_app(spec)
            offloader = find_offloader(wrapped)
            if offloader is None:
                raise ConfigurationError(f"{spec} is not wrapped in offload's middleware")
            worker = _workers[spec] = Worker(offloader, replayer_for(wrapped))
        return worker


@contextmanager
def _heartbeat(worker: Worker, key: str) -> Iterator[None]:
    """Renew the job's running and pending markers every third of a lease until the block ends."""
    done = threading.Event()
    offloader = worker.offloader

    def beat() -> None:
        while not done.wait(worker.settings.lease / 3):
            try:
                offloader.cache.touch(offloader.running_key(key), worker.settings.lease)
                offloader.cache.touch(offloader.pending_key(key), worker.settings.lease)
            except BackendUnavailable as error:
                log.error("cannot renew the lease of the job for %s (%s)", key, error)

    thread = threading.Thread(target=beat, name="offload-job-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class PushOnlyQueue(Queue):
    """A queue whose own workers run the jobs (RQ, Celery, any ``enqueue``): offload only pushes to it.

    The job function its workers call is :func:`offload.jobs.perform`.
    Claims, leases and dead letters are the task queue's own business.
    """

    claimable = False

    def claim(self, lease: float, wait: float) -> Claim | None:
        raise ConfigurationError(f"jobs pushed to {type(self).__name__} are run by its own workers")

    def extend(self, claim: Claim, lease: float) -> bool:
        return True  # the task queue keeps the job; offload's markers are renewed by offload.jobs

    def ack(self, claim: Claim) -> None:
        """Nothing to do: the task queue removes the job when it ends."""

    def release(self, claim: Claim, delay: float = 0.0) -> None:
        """Nothing to do: an unfinished run's markers lapse and the next miss pushes again."""

    def bury(self, claim: Claim, error: str) -> None:
        """Nothing to do: the failure offload stored ends the polling; the task queue keeps its own records."""

    def dead(self, limit: int = 100) -> list[DeadJob]:
        return []

    def revive(self, job_id: str) -> bool:
        return False

    def stats(self) -> dict[str, int]:
        return {}

    def namespaces(self) -> list[str]:
        return []


class EnqueueQueue(PushOnlyQueue):
    """A queue object with ``enqueue(func, *args)``: offload only pushes; its own workers run the jobs.

    Its workers need ``OFFLOAD_APP=module:app`` in their environment, so
    :func:`offload.jobs.perform` can find the app and, through its middleware,
    the cache.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        self.client.enqueue(perform, payload.decode("latin-1"))
