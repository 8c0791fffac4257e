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

import importlib
from collections.abc import Sequence
from typing import Any

from offload.backends import open_backend
from offload.backends.base import Cache, Claim, IndexEntry, Queue
from offload.errors import ConfigurationError


def _library(obj: Any) -> str:
    """The top-level package the object's class comes from (``"redis"``, ``"django"``...)."""
    return type(obj).__module__.partition(".")[0]


def adapt_cache(obj: Any) -> Cache:
    """Return ``obj`` as a :class:`Cache`: a URL, an offload cache, a known client, or a duck-typed one."""
    if isinstance(obj, Cache):
        return obj
    if isinstance(obj, str):
        cache = open_backend(obj).cache
        if cache is None:
            raise ConfigurationError(
                f"cache={obj!r}: this backend has no cache; use memcached://, redis:// or sqlite://"
            )
        return cache
    library = _library(obj)
    if library == "pymemcache":
        from offload.backends.memcached import MemcachedCache

        return MemcachedCache(obj)
    if library == "redis" and callable(getattr(obj, "set", None)):
        return _redis_cache(obj)
    if library == "django" and callable(getattr(obj, "add", None)):
        return DjangoCache(obj)
    if callable(getattr(obj, "get", None)) and callable(getattr(obj, "add", None)):
        return DuckCache(obj)
    raise ConfigurationError(
        f"cache={obj!r} is not usable: pass a backend URL, an offload Cache, "
        "or an object with get(key) and an atomic add(key, value, timeout)"
    )


def adapt_queue(obj: Any) -> Queue:
    """Return ``obj`` as a :class:`Queue`: a URL, an offload queue, an ``rq.Queue``, a Celery app, or ``enqueue``."""
    if isinstance(obj, Queue):
        return obj
    if isinstance(obj, str):
        queue = open_backend(obj).queue
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
        return EnqueueQueue(obj)
    raise ConfigurationError(
        f"queue={obj!r} is not usable: pass a backend URL, an offload Queue, an rq.Queue, a Celery app, "
        "or an object with enqueue(func, *args)"
    )


def _redis_cache(client: Any) -> Cache:
    """The Redis backend's cache (atomic ``SET NX PX``, indexed answers) over a client the application has."""
    if type(client).__module__.startswith("redis.asyncio"):
        raise ConfigurationError(
            "cache= needs a synchronous redis.Redis client; pass cache='redis://...' for both kinds"
        )
    pool = getattr(client, "connection_pool", None)
    if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
        raise ConfigurationError(
            "cache=redis.Redis(decode_responses=True) turns answers into text: pass a client without it"
        )
    module = importlib.import_module("offload.backends.redis")
    from_client = getattr(module.RedisCache, "from_client", None)
    if from_client is not None:
        cache: Cache = from_client(client)
        return cache
    connection = module.RedisConnection("redis://")  # the cache only uses .client: this URL is never dialled
    connection._client = client
    cache = module.RedisCache(connection)
    return cache


class DuckCache(Cache):
    """A cache object with ``get``/``add``/``set``/``delete`` taking ``(key, value, timeout)``.

    Such a cache cannot list its keys, so :meth:`expire` and :meth:`stats`
    are not available through it.
    """

    #: What to suggest when expire() or stats() is asked of a cache that cannot list keys.
    instead = "pass a backend URL (cache='memcached://...' or 'redis://...') or the client itself"

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, key: str) -> bytes | None:
        value = self.client.get(key)
        return value if isinstance(value, bytes) else None

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(self.client.add(key, value, _seconds(ttl)))

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        self.client.set(key, value, _seconds(ttl))

    def touch(self, key: str, ttl: float) -> bool:
        touch = getattr(self.client, "touch", None)
        if touch is not None:
            return bool(touch(key, _seconds(ttl)))
        value = self.client.get(key)
        if value is None:
            return False
        self.client.set(key, value, _seconds(ttl))
        return True

    def delete(self, key: str) -> None:
        self.client.delete(key)

    def expire(self, pattern: str, params: Sequence[tuple[str, str]] = ()) -> int:
        raise ConfigurationError(
            f"{type(self.client).__name__} cannot list its keys, so expire() cannot work: {self.instead}"
        )

    def stats(self) -> dict[str, int]:
        raise ConfigurationError(
            f"{type(self.client).__name__} cannot list its keys, so stats() cannot work: {self.instead}"
        )


class DjangoCache(DuckCache):
    """A Django cache (``django.core.cache.caches["default"]``): its ``add`` is the atomic marker.

    Django pickles every value itself, whatever the cache engine: offload
    hands it bytes and gets bytes back, but the unpickling is Django's, under
    Django's trust in its own cache. Where that matters, give offload the
    engine's client or URL instead.
    """

    instead = (
        "Django's cache API cannot list keys; give offload the cache server itself "
        "(cache='redis://...' or 'memcached://...') to expire answers by path"
    )


def _seconds(ttl: float) -> int:
    """Whole seconds, at least one: the timeout unit every cache client accepts."""
    return max(1, round(ttl))


class EnqueueQueue(Queue):
    """A queue object with ``enqueue(func, *args)``: offload only pushes; its own workers run the jobs.

    Its workers need ``OFFLOAD_APP=module:app`` in their environment, so
    :func:`offload.jobs.perform` can find the app and, through its middleware,
    the cache.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        from offload.jobs import perform

        self.client.enqueue(perform, payload.decode("latin-1"))

    def claim(self, lease: float, wait: float) -> Claim | None:
        raise ConfigurationError(f"jobs pushed to {type(self.client).__name__} are run by its own workers")

    def extend(self, claim: Claim, lease: float) -> bool:
        return True

    def ack(self, claim: Claim) -> None:
        """Nothing to do: the external worker owns the job."""

    def release(self, claim: Claim) -> None:
        """Nothing to do: the external worker owns the job."""

    def stats(self) -> dict[str, int]:
        return {}
