"""The Redis cache's generation: every ``expire()`` of its namespace, anywhere, counted here without a round trip.

:meth:`RedisCache.expire <offload.backends.redis.RedisCache.expire>`
publishes on the namespace's expiry channel once it has removed the answers.
Each process that keeps answers in memory (:mod:`offload.local`) follows that
channel through the process's shared subscriber
(:mod:`offload.backends.redis_pubsub`), and its generation is a local number
that moves on with every message, so that reading it costs an attribute lookup.
Whenever the subscription is not confirmed (not yet started, connection lost,
a fork), the generation is None and nothing is kept in memory; each new
subscription starts a new generation, so an ``expire()`` published while it
was down can never be missed.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

from offload.backends.redis_connection import RedisConnection
from offload.backends.redis_pubsub import Subscriber

_listeners: weakref.WeakSet[ExpiryListener] = weakref.WeakSet()


def _after_fork() -> None:
    for listener in list(_listeners):
        listener._forked()


os.register_at_fork(after_in_child=_after_fork)


class ExpiryListener:
    """Follows one namespace's expiry channel; :meth:`generation` is what the in-process tier checks."""

    def __init__(self, connection: RedisConnection, channel: str) -> None:
        self.connection = connection
        self.channel = channel
        self._generation: int | None = None
        self._count = 0
        self._started = False  # in this process: a fork starts again (reading the pid is a system call)
        self._stop: Callable[[], None] | None = None
        self._lock = threading.Lock()
        _listeners.add(self)

    def _forked(self) -> None:
        # The subscriber forgot its listeners in the child; a lock may have been held at the fork.
        self._lock = threading.Lock()
        self._started = False
        self._stop = None
        self._generation = None

    def generation(self) -> int | None:
        """The number of expiries seen since the subscription started, or None without a subscription."""
        if not self._started:
            self._start()
        return self._generation

    def bump(self) -> None:
        """Move on at once: this process expired answers (its own message comes a little later)."""
        self._next(only_if_listening=True)

    def close(self) -> None:
        """Stop listening; the next :meth:`generation` starts again."""
        with self._lock:
            stop, self._stop = self._stop, None
            self._started = False
            self._generation = None
        if stop is not None:
            stop()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        stop = Subscriber.of(self.connection).listen(self.channel, self)
        with self._lock:
            if self._started and self._stop is None:
                self._stop = stop
                return
        stop()  # closed meanwhile

    def _next(self, only_if_listening: bool = False) -> None:
        with self._lock:
            if self._generation is not None or not only_if_listening:
                self._count += 1
                self._generation = self._count

    # Listener: called by the subscriber's thread.

    def ready(self) -> None:
        self._next()  # a new subscription: a new generation

    def message(self, data: bytes) -> None:
        self._next()

    def lost(self) -> None:
        with self._lock:
            self._generation = None
