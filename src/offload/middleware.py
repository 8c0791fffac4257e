"""What the WSGI and the ASGI middleware share: their options, the offloader, inline workers, expire()."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from offload.core import Offloader
from offload.settings import Settings

App = TypeVar("App")


class Middleware(Generic[App]):
    """The protocol-neutral half of a middleware; subclasses translate requests and answers.

    See :class:`offload.WSGIMiddleware` for the options.
    """

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
        from offload.inline import InlineWorkers

        self.app = app
        if settings is None:
            options["ttl"] = ttl
        self.offloader = Offloader(url=url, cache=cache, queue=queue, settings=settings, **options)
        self._inline = InlineWorkers(self, self.offloader, worker_threads)

    def expire(self, path: str, params: Any = None) -> int:
        """Drop cached answers for ``path``; see :meth:`offload.core.Offloader.expire`."""
        return self.offloader.expire(path, params)
