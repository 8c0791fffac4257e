"""The store a command inspects or changes (``offload status``, ``offload expire``): found, never created.

A command given ``--app MODULE:ATTR`` (or ``OFFLOAD_APP``) uses that app's own
configuration, exactly as its web processes do: the backend, the cache and
the queue of the middleware inside it, and its namespace. ``--url``,
``--cache`` and ``--queue`` override the parts, as they do for
``offload worker``. Without an app, the command works on the whole store the
options name, every namespace in it unless ``--namespace`` narrows it.

A store that does not exist is an error, never an empty store: ``offload
status`` run in the wrong folder says there is no ``offload.sqlite3`` there,
instead of creating one and reporting zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from offload.backends import DEFAULT_NAMESPACE, Cache, Queue, open_backend, resolve_url
from offload.checks import check_part, check_store_exists, check_url
from offload.core import Offloader
from offload.errors import ConfigurationError


def open_cache(url: str | None, cache_url: str | None, namespace: str = DEFAULT_NAMESPACE) -> Cache | None:
    """The cache the options name: ``--cache`` when given, else the ``--url`` backend's."""
    from offload.adapters import adapt_cache

    return adapt_cache(cache_url, namespace) if cache_url else open_backend(url, namespace).cache


def open_queue(url: str | None, queue_url: str | None, namespace: str = DEFAULT_NAMESPACE) -> Queue | None:
    """The queue the options name: ``--queue`` when given, else the ``--url`` backend's."""
    from offload.adapters import adapt_queue

    return adapt_queue(queue_url, namespace) if queue_url else open_backend(url, namespace).queue


@dataclass
class Store:
    """Where a command looks: how to open the cache and the queue of a namespace, and which namespaces."""

    description: str  # the backend, without passwords, for the command's first line
    cache_of: Callable[[str], Cache | None]
    queue_of: Callable[[str], Queue | None]
    only: str | None = None  # one namespace (an app's, or --namespace); None: every namespace the store holds
    owned: bool = True  # whether the command opened the parts, and so closes them

    def namespaces(self) -> list[str]:
        """The namespaces to visit: the one asked for, else every one the cache and the queue list."""
        if self.only is not None:
            return [self.only]
        found: set[str] = set()
        for part in (self.cache_of(DEFAULT_NAMESPACE), self.queue_of(DEFAULT_NAMESPACE)):
            if part is not None:
                found.update(part.namespaces())
                self.done(part)
        return sorted(found)

    def done(self, part: Cache | Queue | None) -> None:
        """Close a part this command opened (never the app's own)."""
        if part is not None and self.owned:
            part.close()


def find_store(
    app: Any | None,
    url: str | None,
    cache_url: str | None,
    queue_url: str | None,
    namespace: str | None,
    *,
    needs_queue: bool = True,
) -> Store:
    """The store for the options; ``app`` is the imported app (or None). Raises :class:`ConfigurationError`."""
    for named in (url, cache_url, queue_url):
        check_part(named)
    if app is None:
        check_url(resolve_url(url))
        if not cache_url or (needs_queue and not queue_url):
            check_store_exists(url)
        for part_url in (cache_url, queue_url):
            if part_url:
                check_store_exists(part_url)
        return Store(
            display_url(url),
            lambda name: open_cache(url, cache_url, name),
            lambda name: open_queue(url, queue_url, name),
            namespace,
        )
    offloader = app_offloader(app)
    if url or cache_url or queue_url or (namespace is not None and namespace != offloader.namespace):
        if namespace is not None and namespace != offloader.namespace and offloader.uses_own_parts:
            raise ConfigurationError(
                f"--namespace {namespace}: the app's cache and queue are objects of its own, "
                f"opened for its namespace {offloader.namespace} only"
            )
        base = url or offloader.url
        return find_store(None, base, cache_url, queue_url, namespace or offloader.namespace, needs_queue=needs_queue)
    if not offloader.uses_own_parts:
        check_store_exists(offloader.url)
    return Store(
        describe_backend(offloader),
        lambda name: offloader.cache,
        lambda name: offloader.queue,
        offloader.namespace,
        owned=False,
    )


def app_offloader(app: Any) -> Offloader:
    """The offloader of the middleware inside ``app``, or the one ``offload serve`` would wrap a bare app in."""
    from offload.importer import find_offloader
    from offload.namespaces import namespace_for
    from offload.settings import Settings

    found = find_offloader(app)
    return found if found is not None else Offloader(settings=Settings(namespace=namespace_for(app)))


def describe_backend(offloader: Offloader) -> str:
    """The backend an app's offloader uses, for people: its URL, or what it named its own parts by.

    An app that passed ``cache=`` or ``queue=`` (a URL or an object) uses those
    instead of its URL's parts; its URL is named only for the part it still opens.
    """
    own = offloader.own_parts()
    if not own:
        return display_url(offloader.url)
    parts = [
        f"{name} {describe_part(own[name]) if name in own else display_url(offloader.url)}"
        for name in ("cache", "queue")
    ]
    return ", ".join(parts)


def describe_part(part: object) -> str:
    """A part an app passed: a URL without its password, a name as given, else the object's class.

    >>> describe_part("redis://:secret@cache.internal:6379/0")
    'redis://:***@cache.internal:6379/0'
    >>> describe_part("default")
    'default'
    >>> describe_part(object())
    'builtins.object'
    """
    if isinstance(part, str):
        return display_url(part) if "://" in part else part
    kind = type(part)
    return f"{kind.__module__}.{kind.__qualname__}"


def display_url(url: str | None) -> str:
    """The backend URL without its password.

    >>> display_url("redis://:secret@cache.internal:6379/0")
    'redis://:***@cache.internal:6379/0'
    """
    from urllib.parse import urlsplit, urlunsplit

    resolved = resolve_url(url)
    parts = urlsplit(resolved)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return resolved
