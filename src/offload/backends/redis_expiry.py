"""The Redis cache's generation: every ``expire()`` anywhere, counted in this process without a round trip.

:meth:`RedisCache.expire <offload.backends.redis.RedisCache.expire>` publishes
on a channel after it deleted the answers. Each process that keeps answers in
memory (:mod:`offload.local`) subscribes to that channel from a daemon thread,
and its generation is a local number that moves on with every message, so that
reading it costs an attribute lookup. Whenever the subscription is not
confirmed (not yet started, connection lost, a fork), the generation is None
and nothing is kept in memory; each new subscription starts a new generation,
so an ``expire()`` published while it was down can never be missed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from offload.backends.redis import RedisConnection

log = logging.getLogger("offload.redis")

#: How long the first read of the generation waits for the subscription (local Redis: about a millisecond).
FIRST_WAIT = 1.0

#: Seconds between two looks at the subscription, and before a new one after an error.
POLL = 1.0


_listeners: weakref.WeakSet[ExpiryListener] = weakref.WeakSet()


def _after_fork() -> None:
    for listener in list(_listeners):
        listener._forked()


os.register_at_fork(after_in_child=_after_fork)


class ExpiryListener:
    """Follows the expiry channel of one Redis database; :meth:`generation` is what the in-process tier checks."""

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self.channel = f"{connection.prefix}:expired:{connection.database}"
        self._generation: int | None = None
        self._count = 0
        self._started = False  # in this process: a fork starts again (reading the pid is a system call)
        self._run = 0  # the listener thread that is current: any other one stops
        self._lock = threading.Lock()
        self._ready = threading.Event()
        _listeners.add(self)

    def _forked(self) -> None:
        # The listener thread did not come along; its lock may have been held at the fork.
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._started = False
        self._generation = None

    def generation(self) -> int | None:
        """The number of expiries seen since the subscription started, or None without a subscription."""
        if not self._started:
            self._start()
        return self._generation

    def bump(self) -> None:
        """Move on at once: this process expired answers (its own message comes a little later)."""
        with self._lock:
            if self._generation is not None:
                self._count += 1
                self._generation = self._count

    def close(self) -> None:
        """Stop listening (within :data:`POLL` seconds); the next :meth:`generation` starts again."""
        with self._lock:
            self._run += 1
            self._started = False
            self._generation = None

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._run += 1
            self._generation = None
            self._ready.clear()
            run = self._run
            threading.Thread(target=self._listen, args=(run,), name="offload-redis-expiry", daemon=True).start()
        self._ready.wait(FIRST_WAIT)

    def _listen(self, run: int) -> None:
        while self._run == run:
            client: redis.Redis | None = None
            pubsub = None
            try:
                client = redis.Redis.from_url(
                    self.connection.url, retry=Retry(NoBackoff(), 0), health_check_interval=POLL * 10
                )
                pubsub = client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.channel)
                while self._run == run:
                    message = pubsub.get_message(timeout=POLL)
                    if message is not None and message["type"] in ("subscribe", "message"):
                        with self._lock:  # a new subscription or an expiry: a new generation
                            if self._run == run:
                                self._count += 1
                                self._generation = self._count
                        self._ready.set()
            except (redis.RedisError, OSError) as error:
                log.debug("expiry channel lost (%s): no answers kept in memory until it is back", error)
            finally:
                with self._lock:
                    if self._run == run:
                        self._generation = None
                self._ready.set()
                with contextlib.suppress(redis.RedisError, OSError):
                    if pubsub is not None:
                        pubsub.close()
                    if client is not None:
                        client.close()
            if self._run == run:
                threading.Event().wait(POLL)
