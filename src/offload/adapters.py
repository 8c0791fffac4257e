"""Objects passed as ``cache=`` or ``queue=``, made to speak the backend contract.

offload's own :class:`~offload.backends.Cache` and
:class:`~offload.backends.Queue` objects are used as they are, and a URL
string opens that backend's part (``cache="memcached://..."``,
``queue="redis://..."``). Real clients are recognised and given their atomic
primitive: ``pymemcache`` clients (``add`` with a reply), ``redis.Redis``
(``SET NX EX``), ``rq.Queue`` (one job per key) and a Celery app. Anything
else is taken duck-typed, as in the original Rack::Worker: a cache is any
object with ``get(key)`` and an atomic ``add(key, value, timeout)`` (a Django
cache, for example); a queue any object with ``enqueue(func, *args)``, whose
workers run :func:`offload.jobs.perform`.

Client libraries are recognised by the module their class comes from, so none
of them is imported unless it is already in use.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from offload.backends import open_backend
from offload.backends.base import DEFAULT_NAMESPACE, Cache, ExpiryRule, IndexEntry, Queue, Restamp
from offload.errors import BackendUnavailable, ConfigurationError


def _library(obj: Any) -> str:
    """The top-level package the object's class comes from (``"redis"``, ``"django"``...)."""
    return type(obj).__module__.partition(".")[0]


def adapt_cache(obj: Any, namespace: str = DEFAULT_NAMESPACE) -> Cache:
    """Return ``obj`` as a :class:`Cache` of ``namespace``: a URL, an offload cache, a known client, or a duck."""
    if isinstance(obj, Cache):
        return obj
    if isinstance(obj, str):
        cache = open_backend(obj, namespace).cache
        if cache is None:
            raise ConfigurationError(
                f"cache={obj!r}: this backend has no cache; use memcached://, redis:// or sqlite://"
            )
        return cache
    library = _library(obj)
    if library == "pymemcache":
        from offload.backends.memcached import MemcachedCache

        return MemcachedCache(obj, namespace=namespace)
    if library == "redis" and callable(getattr(obj, "set", None)):
        return _redis_cache(obj, namespace)
    if library == "django" and callable(getattr(obj, "add", None)):
        return DjangoCache(obj, namespace)
    if callable(getattr(obj, "get", None)) and callable(getattr(obj, "add", None)):
        return DuckCache(obj, namespace)
    raise ConfigurationError(
        f"cache={obj!r} is not usable: pass a backend URL, an offload Cache, "
        "or an object with get(key) and an atomic add(key, value, timeout)"
    )


def adapt_queue(obj: Any, namespace: str = DEFAULT_NAMESPACE) -> Queue:
    """Return ``obj`` as a :class:`Queue`: a URL, an offload queue, an ``rq.Queue``, a Celery app, or ``enqueue``."""
    if isinstance(obj, Queue):
        return obj
    if isinstance(obj, str):
        queue = open_backend(obj, namespace).queue
        if queue is None:
            raise ConfigurationError(
                f"queue={obj!r}: this backend has no queue; use redis://, postgresql:// or sqlite://"
            )
        return queue
    library = _library(obj)
    if library == "rq" and callable(getattr(obj, "enqueue", None)):
        from offload.integrations.rq import RQQueue

        return RQQueue(obj)
    if library == "celery" and callable(getattr(obj, "send_task", None)):
        from offload.integrations.celery import CeleryQueue

        return CeleryQueue(obj)
    if callable(getattr(obj, "enqueue", None)):
        from offload.jobs import EnqueueQueue

        return EnqueueQueue(obj)
    raise ConfigurationError(
        f"queue={obj!r} is not usable: pass a backend URL, an offload Queue, an rq.Queue, a Celery app, "
        "or an object with enqueue(func, *args)"
    )


def _redis_cache(client: Any, namespace: str) -> Cache:
    """The Redis backend's cache (atomic ``SET NX PX``, indexed answers) over a client the application has."""
    if type(client).__module__.startswith("redis.asyncio"):
        raise ConfigurationError(
            "cache= needs a synchronous redis.Redis client; pass cache='redis://...' for both kinds"
        )
    if type(client).__name__ == "RedisCluster":
        raise ConfigurationError(
            "cache=RedisCluster(...) is not supported: pass cache='redis+cluster://HOST:PORT/', "
            "so that offload names its keys with the hash tag a cluster needs"
        )
    pool = getattr(client, "connection_pool", None)
    if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
        raise ConfigurationError(
            "cache=redis.Redis(decode_responses=True) turns answers into text: pass a client without it"
        )
    module = importlib.import_module("offload.backends.redis")
    cache: Cache = module.RedisCache.from_client(client, namespace)
    return cache


class DuckCache(Cache):
    """A cache object with ``get``/``add``/``set``/``delete`` taking ``(key, value, timeout)``.

    Such a cache cannot list its keys, so :meth:`expire` and :meth:`stats`
    are not available through it, and it has no expiry log. Some such caches
    drop a value they cannot hold without saying so (Django's memcached cache
    over 1 MiB with ``default_noreply``): every write is read back, and a
    dropped one is reported as a failure, never as done. Any error of the
    client is an outage (:class:`~offload.errors.BackendUnavailable`), as with
    offload's own backends.
    """

    #: What to suggest when expire() or stats() is asked of a cache that cannot list keys.
    instead = "pass a backend URL (cache='memcached://...' or 'redis://...') or the client itself"

    def __init__(self, client: Any, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.client = client
        self.namespace = namespace
        self._add_checked = False

    def _check_add(self) -> None:
        """Refuse a cache whose ``add`` does not say whether it stored (memcached clients with ``noreply``).

        Such an ``add`` answers True to everyone: two misses would both queue a
        job, and a job's start count would never grow. Checked once, with two
        adds of a fresh key.
        """
        probe = f"{self.namespace}:add-probe:{uuid.uuid4().hex}"
        first, second = self.client.add(probe, b"1", 60), self.client.add(probe, b"2", 60)
        self.client.delete(probe)
        if not first or second:
            raise ConfigurationError(
                f"{type(self.client).__name__}.add() does not report whether it stored the value "
                "(a memcached client with noreply, such as Django's OPTIONS default_noreply=True?): "
                "offload needs an atomic add; configure the client to wait for replies"
            )
        self._add_checked = True

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except (BackendUnavailable, ConfigurationError):
            raise
        except Exception as error:
            raise BackendUnavailable(f"{type(self.client).__name__} {what}: {type(error).__name__}: {error}") from error

    def get(self, key: str) -> bytes | None:
        with self._calling("get"):
            value = self.client.get(key)
        return value if isinstance(value, bytes) else None

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        with self._calling("add"):
            if not self._add_checked:
                self._check_add()
            return bool(self.client.add(key, value, _seconds(ttl)))

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        with self._calling(f"refused {key}"):
            self.client.set(key, value, _seconds(ttl))
            kept = self.client.get(key) == value
        if not kept:
            raise BackendUnavailable(f"{type(self.client).__name__} did not keep the value of {key} (too large?)")

    def touch(self, key: str, ttl: float) -> bool:
        with self._calling("touch"):
            touch = getattr(self.client, "touch", None)
            if touch is not None:
                return bool(touch(key, _seconds(ttl)))
            value = self.client.get(key)
            if value is None:
                return False
            self.client.set(key, value, _seconds(ttl))
            return True

    def delete(self, key: str) -> None:
        with self._calling("delete"):
            self.client.delete(key)

    def incr(self, key: str, ttl: float) -> int:
        with self._calling("incr"):
            for _ in range(10):
                if self.client.add(key, 1, _seconds(ttl)):
                    return 1
                try:
                    return int(self.client.incr(key))
                except ValueError:  # expired between the two calls: add again
                    continue
        raise BackendUnavailable(f"{type(self.client).__name__} cannot keep a counter under {key}")

    def expire(self, rule: ExpiryRule, restamp: Restamp | None = None) -> int:
        raise ConfigurationError(
            f"{type(self.client).__name__} cannot list its keys, so expire() cannot work: {self.instead}"
        )

    def epoch(self) -> int:
        return 0  # no expire(), so no expiry ever overtakes a job

    def expired_since(self, epoch: int, entry: IndexEntry) -> ExpiryRule | None:
        return None

    def stats(self) -> dict[str, int]:
        raise ConfigurationError(
            f"{type(self.client).__name__} cannot list its keys, so stats() cannot work: {self.instead}"
        )

    def namespaces(self) -> list[str]:
        return [self.namespace]


class DjangoCache(DuckCache):
    """A Django cache (``django.core.cache.caches["default"]``): its ``add`` is the atomic marker.

    Django pickles every value itself, whatever the cache engine: offload
    hands it bytes and gets bytes back, but the unpickling is Django's, under
    Django's trust in its own cache. Where that matters, give offload the
    engine's client or URL instead.

    Django hands each thread a cache object of its own; the one given to the
    middleware is used by every thread of the web process and the worker, so
    its calls are taken one at a time (Django's memcached clients are not safe
    across threads).
    """

    instead = (
        "Django's cache API cannot list keys; give offload the cache server itself "
        "(cache='redis://...' or 'memcached://...') to expire answers by path"
    )

    def __init__(self, client: Any, namespace: str = DEFAULT_NAMESPACE) -> None:
        super().__init__(client, namespace)
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        with self._lock, super()._calling(what):
            yield


def _seconds(ttl: float) -> int:
    """Whole seconds, at least one: the timeout unit every cache client accepts."""
    return max(1, round(ttl))
