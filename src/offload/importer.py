"""Finding the app a worker replays requests through, from a ``MODULE:ATTR`` string."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from offload.core import Offloader
from offload.errors import ConfigurationError


def import_app(spec: str) -> Any:
    """Import ``package.module:attribute`` (the attribute may be dotted), with precise errors.

    The working directory is importable, as with ``gunicorn`` and ``uvicorn``.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{spec!r} is not MODULE:ATTR; write for example myproject.wsgi:application")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise ConfigurationError(f"cannot import module {module_name!r}: is it on the path?") from error
        raise
    app: Any = module
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return app


def find_offloader(app: Any) -> Offloader | None:
    """The offloader of an offload middleware in or around ``app``, if there is one.

    Looks through the usual wrapping attributes (``wsgi_app`` of Flask,
    ``asgi_app`` of Quart, ``app`` of most middlewares, ``middleware_stack``
    of Starlette), a few levels deep. A Starlette or FastAPI app given an
    offload middleware with ``add_middleware()`` builds its middleware stack
    only on its first request; it is built here, as that first request would,
    so the worker finds the very middleware that later serves its replays.
    """
    seen: set[int] = set()
    todo = [app]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen or len(seen) > 50:
            continue
        seen.add(id(current))
        offloader = getattr(current, "offloader", None)
        if isinstance(offloader, Offloader):
            return offloader
        _build_starlette_stack(current)
        for name in ("wsgi_app", "asgi_app", "app", "application", "middleware_stack", "_app"):
            inner = getattr(current, name, None)
            if inner is not None and not isinstance(inner, (str, bytes, int, float)):
                todo.append(inner)
    for finder in FINDERS:
        found = finder(app)
        if found is not None:
            return found
    return None


#: Where an integration says how to find the offloader of an app it knows (Django's: the project's
#: ``MIDDLEWARE``). An integration adds its finder when it is imported, so this module imports none.
FINDERS: list[Callable[[Any], Offloader | None]] = []


def _build_starlette_stack(app: Any) -> None:
    """Build a Starlette app's middleware stack now if offload's middleware was added to it."""
    entries = getattr(app, "user_middleware", None)
    build = getattr(app, "build_middleware_stack", None)
    if not isinstance(entries, list) or not callable(build) or getattr(app, "middleware_stack", True) is not None:
        return
    classes = [getattr(entry, "cls", None) for entry in entries]
    if any(getattr(cls, "offload_middleware", False) is True for cls in classes):
        app.middleware_stack = build()


def offloader_of(target: Any) -> Offloader:
    """The offloader of a middleware, of an app that holds one, or the offloader itself: where listeners go."""
    if isinstance(target, Offloader):
        return target
    found = find_offloader(target)
    if found is None:
        raise ConfigurationError(f"{target!r} holds no offload middleware")
    return found
