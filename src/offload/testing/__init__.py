"""Test offloaded views without servers or workers: jobs run inline, and what happened is recorded.

``eager(app)`` puts an in-memory backend under the app's offload middleware
for the length of a ``with`` block and runs each job as soon as it is queued,
in the request that queued it, through the app, exactly as a worker would
(the replay, the retries, what may be stored and for whom): that request
answers as a later one would, usually 200. It is Celery's
``task_always_eager`` and RQ's ``is_async=False`` for offload::

    from offload.testing import eager

    def test_report():
        with eager(app) as offload:
            response = app.test_client().get("/report")
        assert response.status_code == 200
        assert [job.path for job in offload.jobs] == ["/report"]

``recording(app)`` records the same, but leaves the jobs queued: the request
answers 202, and ``offload.run_jobs()`` runs them when the test says so.

``app`` is what ``offload worker`` is given: a Flask, Starlette or FastAPI
app, or any app with offload's middleware inside. For a Django project,
call ``eager()`` without an app: the project's settings say where the
middleware is. The pytest plugin (installed with offload) gives the same as
fixtures: ``offload_eager(app)`` and ``offload_recording(app)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from offload.testing.recorder import QueuedJob, Recorder, StoredAnswer, installed

__all__ = ["QueuedJob", "Recorder", "StoredAnswer", "eager", "recording"]


@contextmanager
def eager(app: Any = None) -> Iterator[Recorder]:
    """Run the app's offloaded jobs inline, as they are queued; record jobs, answers and expiries."""
    with installed(app, eager=True) as recorder:
        yield recorder


@contextmanager
def recording(app: Any = None) -> Iterator[Recorder]:
    """Record the app's jobs, answers and expiries; jobs wait until ``recorder.run_jobs()``."""
    with installed(app, eager=False) as recorder:
        yield recorder
