"""What offload does, told to whoever listens: metrics, structured logs, traces, the dashboard.

The core, the middlewares and the worker emit named events with a few fields;
they know nothing of who listens. A listener is a callable taking the event's
name and its fields; it must be quick and must not raise (an exception is
logged and the listener dropped, so that observing offload can never break
it). With no listener, emitting costs one attribute test.

Events and their fields (the names are stable):

``request``
    one per GET or HEAD a middleware answers: ``outcome`` (``hit``,
    ``stale``, ``not-modified``, ``miss``, ``collapsed``, ``refused``,
    ``outage``, ``bypass``), ``path``, ``seconds`` (time spent deciding).
``pass``
    a request the app answers by itself: ``reason`` (``method``, ``outage``).
``job.queued``
    a miss or a refresh queued a job: ``key``, ``path``, ``refresh`` (bool).
``job.started``, ``job.succeeded``, ``job.failed``, ``job.retried``,
``job.timed_out``, ``job.dead_lettered``, ``job.stored``, ``job.store_failed``, ``job.lease_lost``
    the worker's steps, with ``key``, ``path``, ``attempt``, ``seconds``
    (the app's time), ``status``, ``error``, and for ``job.stored`` ``waited``
    (seconds from the request that queued it to the answer: the time to
    first fill) and ``shared`` (False for an answer for one client); each
    carries ``trace``, the ``traceparent`` of the request that queued the job
    (empty unless :mod:`offload.tracing` is installed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("offload")

#: A listener: the event's name and its fields.
Listener = Callable[[str, Mapping[str, Any]], None]


class Events:
    """The listeners of one offloader; :meth:`emit` tells each of them."""

    def __init__(self) -> None:
        self.listeners: tuple[Listener, ...] = ()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        self.listeners = (*self.listeners, listener)

        def unsubscribe() -> None:
            self.listeners = tuple(other for other in self.listeners if other is not listener)

        return unsubscribe

    def emit(self, name: str, **fields: Any) -> None:
        """Tell every listener; one that raises is logged and removed."""
        for listener in self.listeners:
            try:
                listener(name, fields)
            except Exception:
                log.exception("an offload event listener failed on %s; it is removed", name)
                self.listeners = tuple(other for other in self.listeners if other is not listener)
