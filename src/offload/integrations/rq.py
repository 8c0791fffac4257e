"""offload's jobs on an RQ queue, run by a plain ``rq worker``.

Pass the queue as it is::

    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    queue = Queue("offload", connection=Redis(), serializer=JSONSerializer)
    app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app, cache="redis://localhost/0", queue=queue)

and run the workers with the same serializer, telling them the app::

    OFFLOAD_APP=myapp:app rq worker offload --serializer rq.serializers.JSONSerializer

Each job calls :func:`offload.jobs.perform` with the stored request as a
string, so with ``JSONSerializer`` nothing in the queue is pickled (RQ's
default serializer pickles; the worker must use the queue's serializer either
way). The worker imports ``OFFLOAD_APP``, the module the web process runs, and
finds the cache through its middleware.

One job per key: besides offload's pending marker, the job id is derived from
the key and enqueued with ``unique=True`` (RQ's atomic check-and-push), so a
second push while a job waits is refused by Redis itself. Jobs are enqueued
with ``result_ttl=0`` so a finished job leaves nothing that would refuse the
next push for its key once the answer expires.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from offload.errors import MissingDependency, QueueFull, install_hint
from offload.jobs import PushOnlyQueue

#: The function ``rq worker`` runs, named rather than imported: the worker imports it when it runs a job.
JOB_FUNCTION = "offload.jobs.perform"

#: Job states in which a job with the key's id will still run: a push is redundant.
_WAITING = {"queued", "scheduled", "deferred", "created", "ready_to_enqueue", "rate_limited"}


def _rq() -> Any:
    try:
        import rq
        import rq.exceptions
    except ImportError as error:
        raise MissingDependency(f"queue=rq.Queue(...) needs rq: {install_hint('rq')}") from error
    return rq


class RQQueue(PushOnlyQueue):
    """The queue contract over an ``rq.Queue``: offload pushes, ``rq worker`` runs :func:`offload.jobs.perform`.

    :param queue: the ``rq.Queue`` to push to; its serializer is used.
    :param app: a ``MODULE:ATTR`` import path carried by each job, for
        workers that do not set ``OFFLOAD_APP``.
    """

    def __init__(self, queue: Any, *, app: str | None = None) -> None:
        rq = _rq()
        self.queue = queue
        self.app = app
        self._duplicate: type[Exception] | None = getattr(rq.exceptions, "DuplicateJobError", None)

    def _job_id(self, key: str) -> str:
        return f"offload-{key}"

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        if limit is not None and self.queue.count >= limit:
            raise QueueFull()
        job_id = self._job_id(key)
        if self._duplicate is None:  # an RQ without unique enqueue: the pending marker alone dedupes
            self._enqueue(payload, job_id, unique=False)
            return
        try:
            self._enqueue(payload, job_id, unique=True)
            return
        except self._duplicate:
            pass
        status = self._status(job_id)
        if status in _WAITING:
            return  # the job for this key has not run yet: it will compute the answer
        if status == "started":
            # offload pushes again only when the key's markers lapsed: that run died
            # (a killed work horse stays "started" until RQ's cleanup). Queue a fresh copy;
            # if the old run is alive after all, the running marker makes the copy a no-op.
            self._enqueue(payload, f"{job_id}-{uuid.uuid4().hex[:8]}", unique=False)
            return
        self._forget(job_id)  # finished, failed, stopped or canceled: make room for a new run
        with contextlib.suppress(self._duplicate):  # another process may push between cleanup and here
            self._enqueue(payload, job_id, unique=True)

    def _enqueue(self, payload: bytes, job_id: str, unique: bool) -> None:
        args = (payload.decode("latin-1"),) if self.app is None else (payload.decode("latin-1"), self.app)
        options: dict[str, Any] = {"job_id": job_id, "result_ttl": 0, "description": "offload: compute a cached answer"}
        if unique:
            options["unique"] = True
        self.queue.enqueue(JOB_FUNCTION, *args, **options)

    def _status(self, job_id: str) -> str | None:
        """The job's status, read from its hash without deserializing any of it."""
        raw = self.queue.connection.hget(self.queue.job_class.key_for(job_id), "status")
        return raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw

    def _forget(self, job_id: str) -> None:
        """Remove a finished job's hash and registry entries (by id: nothing is deserialized)."""
        for registry in (
            self.queue.failed_job_registry,
            self.queue.finished_job_registry,
            self.queue.canceled_job_registry,
        ):
            registry.remove(job_id)
        self.queue.connection.delete(self.queue.job_class.key_for(job_id))

    def stats(self) -> dict[str, int]:
        """Jobs waiting in the RQ queue and running from it (offload's and any others)."""
        return {"queued": int(self.queue.count), "running": int(self.queue.started_job_registry.count)}
