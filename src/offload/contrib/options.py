"""The options a framework integration accepts, checked once with one clear error.

The same options as :class:`offload.WSGIMiddleware` and
:class:`offload.ASGIMiddleware`: those of :class:`offload.settings.Settings`,
the backend (``url``, ``cache``, ``queue``), ``worker_threads``, and the
routing options of :mod:`offload.routes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from offload.errors import ConfigurationError
from offload.routes import OPTIONS as ROUTING
from offload.settings import Settings

#: Options that are not :class:`~offload.settings.Settings` fields.
BACKEND = ("url", "cache", "queue", "worker_threads")

#: Every option an integration takes.
KNOWN = frozenset({*(name for name in Settings.__dataclass_fields__ if not name.startswith("_")), *BACKEND, *ROUTING})


def checked(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``options`` as keyword arguments for a middleware; an unknown name is an error that names ``where``.

    Integrations offload only the views they are told to: ``paths`` defaults to none.

    >>> checked({"ttl": 60}, "OFFLOAD")
    {'ttl': 60, 'paths': ()}
    """
    unknown = sorted(set(options) - KNOWN)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown option(s) {', '.join(unknown)}; the options are: {', '.join(sorted(KNOWN))}"
        )
    given = dict(options)
    given.setdefault("paths", ())
    return given
