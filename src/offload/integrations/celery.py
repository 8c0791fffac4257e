"""offload's jobs as Celery tasks, run by a normal ``celery worker``.

In the module you give ``celery -A``, next to the Celery app::

    from celery import Celery
    from offload.integrations.celery import CeleryQueue

    celery = Celery("myapp", broker="amqp://localhost//")
    app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app, cache="redis://localhost/0", queue=CeleryQueue(celery))

Then ``OFFLOAD_APP=myapp:app celery -A myapp worker``. Importing this module
registers the task ``offload.perform`` (a shared task, so it joins whichever
Celery app the worker runs); a worker whose ``-A`` module does not import it
can be given ``--include offload.integrations.celery``. The task's one
argument is the stored request as a string and it is sent with the JSON
serializer, so nothing is pickled. The task calls
:func:`offload.jobs.perform`, which imports ``OFFLOAD_APP`` (or the import
path given as ``CeleryQueue(celery, app="myapp:app")``, carried by each job)
and finds the cache through its middleware.

Celery has no unique tasks: one job per key comes from offload's pending
marker, and a duplicate delivery is dropped by the running marker. Tasks are
acknowledged late, so a message whose worker machine was lost is delivered
again by the broker.
"""

from __future__ import annotations

from typing import Any

from offload.errors import MissingDependency, QueueFull, install_hint
from offload.jobs import PushOnlyQueue, perform

try:
    from celery import shared_task  # type: ignore[import-untyped]
except ImportError as error:
    raise MissingDependency(f"the Celery integration needs celery: {install_hint('celery')}") from error

#: The name the task is registered and sent under.
TASK_NAME = "offload.perform"

#: Options of the task; the JSON serializer keeps pickle out of the broker.
TASK_OPTIONS: dict[str, Any] = {
    "name": TASK_NAME,
    "serializer": "json",
    "ignore_result": True,
    "acks_late": True,
}


def _run(payload: str, app: str | None = None) -> None:
    """Replay one stored request and store the answer (see :func:`offload.jobs.perform`)."""
    perform(payload, app)


#: The task, available in every Celery app of the process (``shared_task``).
perform_task: Any = shared_task(**TASK_OPTIONS)(_run)


def register(celery_app: Any) -> Any:
    """Register the task on one Celery app explicitly (for apps that do not take shared tasks)."""
    return celery_app.task(**TASK_OPTIONS)(_run)


class CeleryQueue(PushOnlyQueue):
    """The queue contract over a Celery app: each push sends one ``offload.perform`` task.

    :param celery_app: the Celery application whose broker receives the tasks.
    :param queue: the Celery queue to send to (default: the app's default queue).
    :param app: a ``MODULE:ATTR`` import path carried by each job, for
        workers that do not set ``OFFLOAD_APP``.
    """

    def __init__(self, celery_app: Any, *, queue: str | None = None, app: str | None = None) -> None:
        self.celery_app = celery_app
        self.queue_name: str = queue or celery_app.conf.task_default_queue
        self.app = app

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        if limit is not None and self._waiting() >= limit:
            raise QueueFull()
        args = [payload.decode("latin-1")] if self.app is None else [payload.decode("latin-1"), self.app]
        self.celery_app.send_task(TASK_NAME, args=args, serializer="json", queue=self.queue_name)

    def _waiting(self) -> int:
        """Messages waiting in the broker's queue (0 if it does not exist yet)."""
        with self.celery_app.connection_for_read() as connection:
            channel = connection.channel()
            try:
                declared = channel.queue_declare(queue=self.queue_name, passive=True)
            except connection.channel_errors:
                return 0  # no such queue yet: nothing waits
            finally:
                try:
                    channel.close()
                except connection.connection_errors + connection.channel_errors:
                    pass  # a channel the broker closed after a passive declare failed
            return int(declared.message_count)

    def stats(self) -> dict[str, int]:
        """Messages waiting in the broker's queue; Celery cannot say cheaply how many run."""
        return {"queued": self._waiting()}
