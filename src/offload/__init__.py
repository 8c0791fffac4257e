"""offload: slow GET endpoints computed by background workers, served from a cache.

>>> import offload
>>> def app(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [b"slow report"]
>>> wrapped = offload.WSGIMiddleware(app, url="memory://doctest", worker_threads=0)
>>> wrapped.expire("/reports/*")
0
"""

from __future__ import annotations

from typing import Any

from offload.asgi import ASGIMiddleware
from offload.errors import BackendUnavailable, ConfigurationError, OffloadError, QueueFull
from offload.records import CachedResponse
from offload.settings import Settings
from offload.tags import tag
from offload.wsgi import WSGIMiddleware

__all__ = [
    "ASGIMiddleware",
    "BackendUnavailable",
    "CachedResponse",
    "ConfigurationError",
    "OffloadError",
    "QueueFull",
    "Settings",
    "WSGIMiddleware",
    "expire",
    "proxy_app",
    "tag",
    "warm",
]

__version__ = "0.1.0"


def expire(
    path: str | None = None,
    params: Any = None,
    *,
    tag: str | None = None,
    url: str | None = None,
    namespace: str | None = None,
) -> int:
    """Drop cached answers for ``path`` (or with ``tag``) in the backend ``url`` names; return how many.

    ``path`` may hold ``*`` wildcards (``"/reports/*"``). With ``params`` (a
    mapping or pairs), only answers whose query holds every given
    ``name=value`` exactly are dropped: ``{"a": "1"}`` matches ``?a=1&b=2``
    but not ``?aa=10``. Without ``namespace``, every namespace of the store
    is expired (a middleware's own ``expire()`` touches only its own).
    """
    from offload.backends import ExpiryRule, open_backend
    from offload.keys import normalize_params

    rule = ExpiryRule(path, normalize_params(params), tag)
    probe = open_backend(url).cache
    if probe is None:
        raise ConfigurationError(f"the backend {url!r} has no cache")
    names = [namespace] if namespace else probe.namespaces()
    count = 0
    for name in names:
        cache = open_backend(url, name).cache
        if cache is not None:
            count += cache.expire(rule)
    return count


def warm(
    urls: Any,
    *,
    app: str | None = None,
    url: str | None = None,
    namespace: str | None = None,
    base: str | None = None,
) -> int:
    """Queue the job of each URL not queued or fresh yet, so its first request is a hit; return how many.

    ``urls`` are absolute (``http://127.0.0.1:8000/report?x=1``: Host and
    scheme are part of every key) or paths joined to ``base``. ``app``
    (``MODULE:ATTR``) gives the app's own settings and backend; else
    ``namespace`` on the store ``url`` names, or the only namespace it holds.
    A middleware's own :meth:`~offload.WSGIMiddleware.warm` needs none of these.
    """
    import functools

    from offload import warming
    from offload.keys import target_from_url

    offloader, asgi = warming.offloader_for(app, url, namespace)
    return warming.warm(offloader, functools.partial(target_from_url, raw_path=asgi), warming.absolute(urls, base))


def proxy_app(upstream: str, **options: Any) -> Any:
    """offload in front of the HTTP server ``upstream``: an ASGI app; see :func:`offload.proxy.proxy_app`.

    Needs httpx (the ``proxy`` extra, ``pip install -e "/path/to/offload[proxy]"`` from a checkout).
    """
    from offload.proxy.app import proxy_app as build

    return build(upstream, **options)
