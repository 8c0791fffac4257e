"""The job function external queues run: ``offload.jobs.perform(payload)``.

When offload pushes to a queue of your own (``queue=rq.Queue(...)``), that
queue's workers call :func:`perform` with the stored request. The worker
process finds the app from the ``OFFLOAD_APP`` environment variable
(``MODULE:ATTR``, the app wrapped in offload's middleware), and with it the
cache and the settings.
"""

from __future__ import annotations

import os
import threading

from offload.backends import Claim
from offload.errors import ConfigurationError
from offload.worker import Worker

_worker: Worker | None = None
_lock = threading.Lock()


def perform(payload: str) -> None:
    """Run one job pushed by offload: replay the request and store the answer."""
    worker = _get_worker()
    data = payload.encode("latin-1") if isinstance(payload, str) else bytes(payload)
    from offload.records import StoredRequest

    try:
        key = StoredRequest.decode(data).key
    except Exception:
        key = ""
    worker.process(Claim(job_id="external", key=key, payload=data))


def _get_worker() -> Worker:
    global _worker
    with _lock:
        if _worker is None:
            from offload.importer import find_offloader, import_app, replayer_for

            spec = os.environ.get("OFFLOAD_APP")
            if not spec:
                raise ConfigurationError("set OFFLOAD_APP=module:app in the worker's environment so it can find the app")
            app = import_app(spec)
            offloader = find_offloader(app)
            if offloader is None:
                raise ConfigurationError(f"{spec} is not wrapped in offload's middleware")
            _worker = Worker(offloader, replayer_for(app))
        return _worker
