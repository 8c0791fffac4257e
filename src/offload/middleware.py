"""What the WSGI and the ASGI middleware share: their options, the offloader, inline workers, expire()."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from offload import warming
from offload.adapters import adapt_cache, adapt_queue
from offload.backends import resolve_url
from offload.checks import check_url
from offload.core import Offloader
from offload.inline import InlineWorkers
from offload.keys import Target, request_key, target_from_url
from offload.namespaces import namespace_for
from offload.routes import Routes
from offload.settings import Settings, settings_from

App = TypeVar("App")


class Middleware(Generic[App]):
    """The protocol-neutral half of a middleware; subclasses translate requests and answers.

    See :class:`offload.WSGIMiddleware` for the options. Without a
    ``namespace`` option, the namespace is derived from ``app`` itself
    (:mod:`offload.namespaces`), so two apps sharing one store never meet.
    ``paths``, ``exclude``, ``predicate`` and ``client_path`` say which
    requests are offloaded at all (:mod:`offload.routes`); without them,
    :attr:`routes` is None and every GET and HEAD is.
    """

    #: Marks offload's middlewares for code that must find them without importing them (the worker's finder).
    offload_middleware = True

    #: Requests that may wait for their answer at once per process (``Prefer: wait``) unless ``max_waiters`` says.
    default_waiters = 8

    def __init__(
        self,
        app: App,
        *,
        url: str | None = None,
        cache: Any = None,
        queue: Any = None,
        ttl: float = 300,
        worker_threads: int | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        #: Which requests are offloaded, when the options narrow it (None: every GET and HEAD).
        self.routes = Routes.from_options(options)
        if settings is None:
            settings = settings_from({"ttl": ttl, **options})
        elif options:
            raise TypeError("pass either settings= or keyword options, not both")
        if settings.namespace is None:
            settings = dataclasses.replace(settings, namespace=namespace_for(app))
        namespace = settings.namespace or ""
        if url is None:  # as OFFLOAD_URL, these name the parts when the code names nothing
            cache = cache if cache is not None else os.environ.get("OFFLOAD_CACHE_URL") or None
            queue = queue if queue is not None else os.environ.get("OFFLOAD_QUEUE_URL") or None
        for named in (resolve_url(url), cache, queue):
            if isinstance(named, str):
                check_url(named)  # a typo fails here, at import, not as a 500 on the first request
        self.offloader = Offloader(
            url=url,
            cache=None if cache is None else adapt_cache(cache, namespace),
            queue=None if queue is None else adapt_queue(queue, namespace),
            settings=settings,
        )
        self.offloader.part_sources = {
            name: part for name, part in (("cache", cache), ("queue", queue)) if part is not None
        }
        self.offloader.default_waiters = self.default_waiters
        self._inline = InlineWorkers(self, self.offloader, worker_threads)

    def target_for(self, url: str) -> Target:
        """The target a request for an absolute ``url`` has in this middleware's protocol."""
        return target_from_url(url)

    def key_for(self, url: str, headers: Mapping[str, str] | None = None) -> str:
        """The primary key of a GET for an absolute ``url`` with ``headers`` (the ``vary`` ones matter)."""
        given = {name.lower(): value.encode("latin-1") for name, value in (headers or {}).items()}
        target = self.target_for(url)
        return request_key(target, [(name, given.get(name)) for name in self.offloader.settings.vary])

    def warm(self, urls: Iterable[str], base: str | None = None) -> int:
        """Queue a job for each URL (absolute, or a path joined to ``base``) not queued or fresh yet.

        Returns how many jobs were queued; see :mod:`offload.warming`.
        """
        return warming.warm(self.offloader, self.target_for, warming.absolute(urls, base))

    def expire(
        self,
        path: str | None = None,
        params: Any = None,
        *,
        tag: str | None = None,
        soft: bool = False,
        refresh: bool = False,
    ) -> int:
        """Drop (or with ``soft``, mark stale) cached answers; see :meth:`offload.core.Offloader.expire`."""
        return self.offloader.expire(path, params, tag=tag, soft=soft, refresh=refresh)
