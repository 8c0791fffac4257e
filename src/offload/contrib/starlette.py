"""offload for Starlette and FastAPI: ``Offload(app, **options)`` and ``@offload`` routes.

::

    from fastapi import FastAPI
    from offload.contrib.starlette import Offload, offload

    app = FastAPI()
    Offload(app, ttl=600)

    @app.get("/report")
    @offload
    async def report() -> dict[str, int]:
        return {"total": 42}

``Offload(app)`` adds :class:`offload.ASGIMiddleware` to the app's middleware
(``app.add_middleware``), with the middleware's options. Only routes marked
``@offload`` are offloaded, and the paths of ``paths=[...]`` (``["*"]`` for
every GET); ``@no_offload`` keeps a route out of them. The decorator returns
the endpoint itself, so FastAPI still sees its parameters; put it below the
route decorator. A request's route is found as Starlette's router finds it,
mounts and hosts included. Run the jobs with ``offload worker main:app``.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from starlette.routing import Match

from offload.asgi import ASGIMiddleware
from offload.contrib.options import checked
from offload.core import Offloader
from offload.errors import ConfigurationError
from offload.importer import find_offloader
from offload.routes import MEMO_SIZE, marked, no_offload, offload

__all__ = ["Offload", "RouteMarks", "no_offload", "offload"]


class Offload:
    """Adds offload's middleware to a Starlette or FastAPI app; offloads the routes marked ``@offload``."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.app = app
        options.setdefault("predicate", RouteMarks(app))
        app.add_middleware(ASGIMiddleware, **checked(options, "Offload(app)"))

    @property
    def offloader(self) -> Offloader:
        """The offloader of the app's middleware (Starlette builds it on the app's first request, or here)."""
        found = find_offloader(self.app)
        if found is None:  # pragma: no cover - the middleware was added in __init__
            raise ConfigurationError("offload's middleware is not in the app")
        return found

    def expire(self, path: str | None = None, params: Any = None, *, tag: str | None = None) -> int:
        """Drop the app's cached answers for ``path`` or ``tag``; see :meth:`offload.core.Offloader.expire`."""
        return self.offloader.expire(path, params, tag=tag)


class RouteMarks:
    """Finds a request's endpoint as Starlette's router does, and says how it is marked."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._memo: dict[tuple[Any, ...], bool | None] = {}

    def __call__(self, scope: MutableMapping[str, Any]) -> bool | None:
        host = next((value for name, value in scope.get("headers", ()) if name == b"host"), None)
        where = (host, scope.get("root_path"), scope.get("path"), scope.get("method"))
        if where in self._memo:
            return self._memo[where]
        found = self._find(self.app.router.routes, dict(scope))
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[where] = found
        return found

    def _find(self, routes: Iterable[Any], scope: dict[str, Any]) -> bool | None:
        for route in routes:
            match, child = route.matches(scope)
            if match != Match.FULL:
                continue
            inner = getattr(route, "routes", None)
            if inner:  # a Mount or a Host: look in what it holds, as the router does
                return self._find(inner, {**scope, **child})
            included = getattr(route, "original_router", None)
            if included is not None and "endpoint" not in child:  # FastAPI's include_router(), with its prefix
                prefix = getattr(getattr(route, "include_context", None), "prefix", "")
                return self._find(included.routes, {**scope, "root_path": scope.get("root_path", "") + prefix})
            return marked(child.get("endpoint", getattr(route, "endpoint", None)))
        return None
