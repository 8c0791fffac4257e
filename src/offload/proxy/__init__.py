"""offload in front of any HTTP server: a caching reverse proxy that follows the worker pattern.

``offload proxy --upstream http://127.0.0.1:8080`` serves it, and
:func:`proxy_app` builds its ASGI app for servers of your own. The modules:
:mod:`~offload.proxy.app` (the app), :mod:`~offload.proxy.upstream` (forwarding
and fetching, over httpx), :mod:`~offload.proxy.policy` (the rules of a shared
HTTP cache), :mod:`~offload.proxy.fields` (header fields), and
:mod:`~offload.proxy.command` (the command). httpx is imported only when an
app is built: the ``proxy`` extra, ``pip install -e "/path/to/offload[proxy]"`` from a checkout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offload.proxy.app import ProxyMiddleware, proxy_app
    from offload.proxy.policy import SharedCache

__all__ = ["ProxyMiddleware", "SharedCache", "proxy_app"]


def __getattr__(name: str) -> Any:
    if name in ("ProxyMiddleware", "proxy_app"):
        from offload.proxy import app

        return getattr(app, name)
    if name == "SharedCache":
        from offload.proxy.policy import SharedCache

        return SharedCache
    raise AttributeError(name)
