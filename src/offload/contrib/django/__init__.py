"""offload for Django: an app, a middleware, the ``OFFLOAD`` setting, ``@offload`` views, ``manage.py`` commands.

In ``settings.py``::

    INSTALLED_APPS = [..., "offload.contrib.django"]
    MIDDLEWARE = ["offload.contrib.django.OffloadMiddleware", ...]  # first, as Django's cache middleware
    OFFLOAD = {"ttl": 600}

In ``views.py``::

    from offload.contrib.django import offload

    @offload
    def report(request): ...

Then ``python manage.py offload_worker`` runs the jobs; ``offload_status``
and ``offload_expire`` show and expire the cache. ``OFFLOAD`` takes the
options of the middlewares (:mod:`offload.contrib.options`), read once and
checked at startup; its ``cache`` may name an alias of ``CACHES`` to keep
offload's answers in Django's cache (``"cache": "default"``).

Only views marked ``@offload`` are offloaded, and the paths of
``OFFLOAD["paths"]`` (``["/reports/*"]``, or ``["*"]`` for every GET);
``@no_offload`` keeps a view out of them. A class-based view is marked on the
class, or on what ``as_view()`` returns. Django is imported by this package's
modules only, and importing this one touches no setting, so a view module may
import the decorators before settings are configured.
"""

from __future__ import annotations

from typing import Any

from offload.routes import no_offload, offload

__all__ = ["OffloadMiddleware", "no_offload", "offload"]


def __getattr__(name: str) -> Any:
    # MIDDLEWARE names "offload.contrib.django.OffloadMiddleware"; import Django's side only then.
    if name == "OffloadMiddleware":
        from offload.contrib.django.middleware import OffloadMiddleware

        return OffloadMiddleware
    raise AttributeError(name)
