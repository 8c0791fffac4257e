"""The app ``offload serve`` hands to its HTTP server: ``OFFLOAD_APP``, wrapped if it is not yet.

An app that already has offload's middleware inside is served as it is; a bare
app is wrapped with default options, so ``offload serve myapp:app`` works with
either.
"""

from __future__ import annotations

import os
from typing import Any

from offload.errors import ConfigurationError
from offload.importer import find_offloader, import_app
from offload.replay import is_asgi


def load() -> Any:
    from offload import logs

    spec = os.environ.get("OFFLOAD_APP")
    if not spec:
        raise ConfigurationError("OFFLOAD_APP is not set: run the app with `offload serve MODULE:ATTR`")
    target = import_app(spec)
    if os.environ.get("OFFLOAD_LOG_FORMAT"):  # offload serve --log-format: these processes log the same way
        logs.configure(json=logs.wants_json())
        if find_offloader(target) is not None:
            logs.install(target)
    else:
        logs.configure_server_process()
    if find_offloader(target) is not None:
        return target
    if is_asgi(target):
        from offload.asgi import ASGIMiddleware

        return ASGIMiddleware(target)
    from offload.wsgi import WSGIMiddleware

    return WSGIMiddleware(target)


def __getattr__(name: str) -> Any:
    # Loaded on first access, so that importing this module has no side effect.
    if name == "app":
        globals()["app"] = loaded = load()
        return loaded
    raise AttributeError(name)
