"""Backends chosen by URL, imported only when chosen.

``open_backend("redis://localhost/0")`` imports :mod:`offload.backends.redis`
and nothing else, so an optional driver costs nothing until it is used. A
dotted path (``"mypackage.mybackend:open_backend"``) works as an escape hatch
for backends that live outside offload.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from offload.backends.base import (
    DEFAULT_NAMESPACE,
    Cache,
    Claim,
    DeadJob,
    ExpiryRule,
    IndexEntry,
    JobFinish,
    JobStart,
    Queue,
    QueuedJob,
    check_namespace,
)
from offload.errors import ConfigurationError

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_URL",
    "Backend",
    "Cache",
    "Claim",
    "DeadJob",
    "ExpiryRule",
    "IndexEntry",
    "JobFinish",
    "JobStart",
    "Queue",
    "QueuedJob",
    "open_backend",
    "resolve_url",
]

#: The embedded default: one SQLite file in the working directory.
DEFAULT_URL = "sqlite:///offload.sqlite3"

#: URL scheme -> "module:function" returning a Backend for a URL and a namespace.
REGISTRY: dict[str, str] = {
    "memory": "offload.backends.memory:open_backend",
    "sqlite": "offload.backends.sqlite:open_backend",
    "redis": "offload.backends.redis:open_backend",
    "rediss": "offload.backends.redis:open_backend",
    "unix": "offload.backends.redis:open_backend",
    "redis+cluster": "offload.backends.redis:open_backend",
    "rediss+cluster": "offload.backends.redis:open_backend",
    "postgres": "offload.backends.postgres:open_backend",
    "postgresql": "offload.backends.postgres:open_backend",
    "memcached": "offload.backends.memcached:open_backend",
}


@dataclass(frozen=True, slots=True)
class Backend:
    """A cache and, where the engine has one, a queue, opened from one URL."""

    url: str
    cache: Cache | None
    queue: Queue | None


def resolve_url(url: str | None) -> str:
    """The URL to use: the argument, else ``OFFLOAD_URL``, else the embedded SQLite default."""
    return url or os.environ.get("OFFLOAD_URL") or DEFAULT_URL


def open_backend(url: str | None = None, namespace: str = DEFAULT_NAMESPACE) -> Backend:
    """Open the backend a URL names (see :func:`resolve_url` for the default), for one namespace.

    Everything the cache and the queue keep belongs to ``namespace``: two
    namespaces on one store never see each other's jobs, indexes or expiries.
    """
    url = resolve_url(url)
    check_namespace(namespace)
    scheme = urlsplit(url).scheme.lower()
    target = REGISTRY.get(scheme)
    if target is None:
        if ":" in url and "://" not in url:  # "package.module:function"
            target = url
        else:
            known = ", ".join(sorted(f"{name}://" for name in REGISTRY))
            raise ConfigurationError(f"unknown backend URL {url!r}: use one of {known}")
    module_name, _, attr = target.partition(":")
    opener: Callable[[str, str], Backend] = getattr(importlib.import_module(module_name), attr)
    return opener(url, namespace)
