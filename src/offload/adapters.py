"""Objects passed as ``cache=`` or ``queue=``, made to speak the backend contract.

offload's own :class:`~offload.backends.Cache` and
:class:`~offload.backends.Queue` objects are used as they are. Anything else
is taken duck-typed, as in the original Rack::Worker: a cache is any object
with ``get(key)`` and an atomic ``add(key, value, timeout)``; a queue is any
object with ``enqueue(func, *args)``, whose worker runs
:func:`offload.jobs.perform`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from offload.backends.base import Cache, Claim, IndexEntry, Queue
from offload.errors import ConfigurationError


def adapt_cache(obj: Any) -> Cache:
    """Return ``obj`` as a :class:`Cache`, wrapping a duck-typed one."""
    if isinstance(obj, Cache):
        return obj
    if callable(getattr(obj, "get", None)) and callable(getattr(obj, "add", None)):
        return DuckCache(obj)
    raise ConfigurationError(
        f"cache={obj!r} is not usable: pass an offload Cache or an object with get(key) and add(key, value, timeout)"
    )


def adapt_queue(obj: Any) -> Queue:
    """Return ``obj`` as a :class:`Queue`, wrapping one with ``enqueue(func, *args)``."""
    if isinstance(obj, Queue):
        return obj
    if callable(getattr(obj, "enqueue", None)):
        return EnqueueQueue(obj)
    raise ConfigurationError(f"queue={obj!r} is not usable: pass an offload Queue or an object with enqueue(func, *args)")


class DuckCache(Cache):
    """A cache object with ``get``/``add``/``set``/``delete`` taking ``(key, value, timeout)``.

    Such a cache cannot list its keys, so :meth:`expire` and :meth:`stats`
    are not available through it: use a backend URL for those.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, key: str) -> bytes | None:
        value = self.client.get(key)
        return value if isinstance(value, bytes) else None

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(self.client.add(key, value, max(1, round(ttl))))

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        self.client.set(key, value, max(1, round(ttl)))

    def touch(self, key: str, ttl: float) -> bool:
        touch = getattr(self.client, "touch", None)
        if touch is not None:
            return bool(touch(key, max(1, round(ttl))))
        value = self.client.get(key)
        if value is None:
            return False
        self.client.set(key, value, max(1, round(ttl)))
        return True

    def delete(self, key: str) -> None:
        self.client.delete(key)

    def expire(self, pattern: str, params: Sequence[tuple[str, str]] = ()) -> int:
        raise ConfigurationError(f"{type(self.client).__name__} cannot list its keys: expire() needs a backend URL")

    def stats(self) -> dict[str, int]:
        return {}


class EnqueueQueue(Queue):
    """A queue object with ``enqueue(func, *args)``: offload only pushes; its own workers run the jobs."""

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
