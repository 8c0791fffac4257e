"""One pub/sub connection per process and Redis URL, shared by everything in the process that listens.

The expiry generation (:mod:`offload.backends.redis_expiry`) and the watches
of stored answers (:meth:`RedisCache.watch <offload.backends.redis.RedisCache.watch>`)
each follow a channel of their namespace. Instead of a connection and a thread
each, one daemon thread per process and URL holds one subscription for all of
them and hands every message to the listeners of its channel.

That thread alone touches the connection (redis-py's pub/sub object is not
made for several threads): a thread that wants a new channel records it and
wakes the subscriber with a message on its private wake channel, then waits
until the server confirms the subscription. When the connection is lost, every
listener hears :meth:`Listener.lost`; the thread connects again, subscribes to
every channel still wanted, and each listener hears :meth:`Listener.ready`
once its channel is back. Messages published meanwhile are not replayed: that
is what the listeners' ``lost``/``ready`` are for. The thread ends when nobody
listens any more, and a forked child starts without it (threads do not survive
a fork; its subscriptions begin again on first use).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from offload.backends.redis_connection import ERRORS, Names, RedisConnection, redis

log = logging.getLogger("offload.redis")

#: How long subscribing to a channel waits for the server's confirmation (local Redis: about a millisecond).
FIRST_WAIT = 1.0

#: Seconds between two looks at the wanted channels, and before connecting again after an error.
POLL = 1.0


class Listener(Protocol):
    """What a subscriber tells about one channel, from its thread."""

    def ready(self) -> None:
        """The channel is subscribed (again): messages published from now on arrive."""

    def message(self, data: bytes) -> None:
        """A message on the channel (keep it short: it holds up the other channels)."""

    def lost(self) -> None:
        """The subscription is gone (connection lost): messages may be missed until the next ``ready``."""


class Subscriber:
    """The shared subscription of one URL in this process; :meth:`of` finds or makes it."""

    _all: ClassVar[dict[tuple[bool, str], Subscriber]] = {}
    _all_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, connection: RedisConnection) -> Subscriber:
        with cls._all_lock:
            found = (connection.cluster, connection.url)
            subscriber = cls._all.get(found)
            if subscriber is None:
                subscriber = cls._all[found] = cls(connection)
            return subscriber

    def __init__(self, connection: RedisConnection) -> None:
        self.url = connection.url
        self.connection = connection
        prefix = connection.prefix
        self.wake_channel = Names.wake(prefix, uuid.uuid4().hex)
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._listeners: dict[str, list[Listener]] = {}
        self._subscribed: set[str] = set()  # confirmed by the server on the current connection
        self._running = False
        self._run = 0  # the thread that is current: any other one stops
        self._client: redis.Redis | None = None

    def listen(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Hand ``channel``'s messages to ``listener`` until the returned function is called.

        Waits up to :data:`FIRST_WAIT` for the subscription, so that a message
        published after this returns is heard (unless Redis is unreachable).
        """
        with self._lock:
            self._listeners.setdefault(channel, []).append(listener)
            subscribed = channel in self._subscribed
            started = not self._running
            if started:
                self._running = True
                self._run += 1
                thread = threading.Thread(target=self._loop, args=(self._run,), name="offload-redis-pubsub")
                thread.daemon = True
                thread.start()
            client = self._client
        if subscribed:
            listener.ready()
        else:
            if not started and client is not None:
                with contextlib.suppress(redis.RedisError, OSError):
                    client.publish(self.wake_channel, b"")
            with self._lock:
                self._changed.wait_for(lambda: channel in self._subscribed, FIRST_WAIT)

        def stop() -> None:
            with self._lock:
                listeners = self._listeners.get(channel, [])
                if listener in listeners:
                    listeners.remove(listener)
                if not listeners:
                    self._listeners.pop(channel, None)

        return stop

    def _loop(self, run: int) -> None:
        while self._current(run):
            client = pubsub = None
            try:
                client = self.connection.subscriber_client(health_check_interval=POLL * 10)
                with self._lock:
                    self._client = client
                pubsub = client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.wake_channel)
                current: set[str] = set()
                while self._current(run):
                    with self._lock:
                        wanted = set(self._listeners)
                    if wanted - current:
                        pubsub.subscribe(*(wanted - current))
                    if current - wanted:
                        pubsub.unsubscribe(*(current - wanted))
                        with self._lock:
                            self._subscribed -= current - wanted
                    current = wanted
                    message = pubsub.get_message(timeout=POLL)
                    if message is not None:
                        self._handle(message)
            except (*ERRORS, OSError) as error:
                log.debug("Redis subscription lost (%s): connecting again", error)
            finally:
                self._lose(run, client, pubsub)
            if self._current(run):
                threading.Event().wait(POLL)

    def _current(self, run: int) -> bool:
        """Whether thread ``run`` should go on: it is the current one, and someone listens."""
        with self._lock:
            if self._run != run:
                return False
            if not self._listeners:
                self._running = False  # the next listen() starts a thread again
                self._subscribed.clear()
                return False
            return True

    def _handle(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode("utf-8", "replace")
        if message["type"] == "subscribe" and channel != self.wake_channel:
            with self._lock:
                self._subscribed.add(channel)
                self._changed.notify_all()
                listeners = list(self._listeners.get(channel, ()))
            for listener in listeners:
                listener.ready()
        elif message["type"] == "message" and channel != self.wake_channel:
            with self._lock:
                listeners = list(self._listeners.get(channel, ()))
            for listener in listeners:
                try:
                    listener.message(message["data"])
                except Exception:
                    log.exception("a listener of the Redis channel %s failed", channel)

    def _lose(self, run: int, client: redis.Redis | None, pubsub: Any) -> None:
        lost: list[Listener] = []
        with self._lock:
            if self._run == run:
                lost = [listener for channel in self._subscribed for listener in self._listeners.get(channel, ())]
                self._subscribed.clear()
            if self._client is client:
                self._client = None
        for listener in lost:
            listener.lost()
        with contextlib.suppress(redis.RedisError, OSError):
            if pubsub is not None:
                pubsub.close()
            if client is not None:
                client.close()


def _after_fork() -> None:
    Subscriber._all_lock = threading.Lock()
    for subscriber in Subscriber._all.values():
        subscriber._reset()  # its thread did not come along; its lock may have been held at the fork


os.register_at_fork(after_in_child=_after_fork)
