"""The app ``offload proxy`` hands to uvicorn and to its workers, built from ``OFFLOAD_PROXY``.

``OFFLOAD_PROXY`` is a JSON object: ``{"upstream": URL, "options": {...}}``,
the arguments of :func:`offload.proxy.proxy_app`; the backend comes from
``OFFLOAD_URL`` as everywhere else.
"""

from __future__ import annotations

import json
import os
from typing import Any

from offload.errors import ConfigurationError

#: The environment variable the command sets for its children.
ENVIRONMENT = "OFFLOAD_PROXY"


def load() -> Any:
    spec = os.environ.get(ENVIRONMENT)
    if not spec:
        raise ConfigurationError(f"{ENVIRONMENT} is not set: run the proxy with `offload proxy --upstream URL`")
    try:
        config = json.loads(spec)
        upstream, options = str(config["upstream"]), dict(config.get("options", {}))
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(f"{ENVIRONMENT} is not a JSON object with an upstream: {error}") from None
    from offload import logs
    from offload.proxy.app import proxy_app

    app = proxy_app(upstream, **options)
    if os.environ.get("OFFLOAD_LOG_FORMAT"):  # offload proxy --log-format: these processes log the same way
        logs.configure(json=logs.wants_json())
        logs.install(app)
    return app


def __getattr__(name: str) -> Any:
    # Built on first access, so that importing this module has no side effect.
    if name == "app":
        globals()["app"] = built = load()
        return built
    raise AttributeError(name)
