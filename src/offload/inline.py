"""Worker threads inside the web process, for ``memory://`` and development servers."""

from __future__ import annotations

import os
import threading
from typing import Any

from offload.backends import resolve_url
from offload.core import Offloader
from offload.replay import replayer_for
from offload.worker import Worker


class InlineWorkers:
    """Starts ``threads`` worker threads on the first request of each process.

    With ``threads=None`` one thread runs when the backend is ``memory://``
    (nothing outside the process could run its jobs) and none otherwise.
    """

    def __init__(self, app: Any, offloader: Offloader, threads: int | None) -> None:
        if threads is None:
            threads = 1 if not offloader.uses_own_parts and resolve_url(offloader.url).startswith("memory:") else 0
        if threads < 0:
            raise ValueError("worker_threads must be >= 0")
        self.app = app
        self.offloader = offloader
        self.threads = threads
        self._pid = 0 if threads else os.getpid()
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            worker = Worker(self.offloader, replayer_for(self.app), concurrency=self.threads)
            thread = threading.Thread(
                target=worker.run, kwargs={"install_signals": False}, name="offload-inline", daemon=True
            )
            thread.start()
            self._pid = os.getpid()
