"""``settings.OFFLOAD``, read once: the project's offloader, its routes, and the app a worker replays through.

Every part of the integration (the middleware, the ``manage.py`` commands,
:mod:`offload.testing`, ``offload worker mysite.wsgi:application``) uses the
one :class:`Project` that :func:`project` builds, so they share the backend,
the namespace and the options. Its namespace is the settings module's, as
:mod:`offload.namespaces` names a Django project wrapped in the plain middleware.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django import conf as django_conf
from django.core.exceptions import ImproperlyConfigured
from django.urls import Resolver404, resolve

from offload.adapters import adapt_cache, adapt_queue
from offload.backends import resolve_url
from offload.checks import check_url
from offload.contrib.options import BACKEND, checked
from offload.core import Offloader
from offload.errors import OffloadError
from offload.importer import FINDERS
from offload.inline import InlineWorkers
from offload.namespaces import namespace_for
from offload.routes import MEMO_SIZE, OPTIONS, Routes, marked
from offload.settings import settings_from

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from django.http import HttpRequest

#: How ``MIDDLEWARE`` names the middleware.
MIDDLEWARE_PATHS = ("offload.contrib.django.OffloadMiddleware", "offload.contrib.django.middleware.OffloadMiddleware")


class Project:
    """offload as one Django project's settings configure it."""

    def __init__(self, options: dict[str, Any]) -> None:
        options = checked(options, "settings.OFFLOAD")
        routing = {name: options.pop(name) for name in OPTIONS if name in options}
        url, cache, queue, threads = (options.pop(name, None) for name in BACKEND)
        given = settings_from(options)
        if given.namespace is None:
            given = settings_from({**options, "namespace": namespace_for(django_conf.settings)})
        if url is None:  # as OFFLOAD_URL, these name the parts when the settings name nothing
            cache = cache if cache is not None else os.environ.get("OFFLOAD_CACHE_URL") or None
            queue = queue if queue is not None else os.environ.get("OFFLOAD_QUEUE_URL") or None
        check_url(resolve_url(url))
        namespace = given.namespace or ""
        self.offloader = Offloader(
            url=url,
            cache=None if cache is None else adapt_cache(django_cache(cache), namespace),
            queue=None if queue is None else adapt_queue(queue, namespace),
            settings=given,
        )
        self.offloader.part_sources = {
            name: part for name, part in (("cache", cache), ("queue", queue)) if part is not None
        }
        routing.setdefault("predicate", ViewMarks())
        self.routes = Routes(**routing)
        #: What a worker replays requests through: the whole Django stack, this middleware included.
        self.app = DjangoApp()
        self.inline = InlineWorkers(self.app, self.offloader, threads)


def django_cache(cache: Any) -> Any:
    """``cache`` itself, or, for a name in ``CACHES`` (``"default"``), that Django cache.

    Django's caches are per thread; offload uses the one it gets here from
    every thread, one call at a time (:class:`offload.adapters.DjangoCache`).
    """
    if isinstance(cache, str) and "://" not in cache:
        from django.core.cache import caches

        if cache not in getattr(django_conf.settings, "CACHES", {}):
            raise ImproperlyConfigured(f"settings.OFFLOAD['cache']: {cache!r} is neither a URL nor a cache in CACHES")
        return caches[cache]
    return cache


class ViewMarks:
    """Finds a request's view with the URL resolver, as Django does, and says how it is marked.

    A class-based view counts as marked when the class is, or what
    ``as_view()`` returned is.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[Any, ...], bool | None] = {}

    def __call__(self, request: HttpRequest) -> bool | None:
        urlconf = getattr(request, "urlconf", None)
        where = (request.META.get("HTTP_HOST"), request.path_info, urlconf)
        if where in self._memo:
            return self._memo[where]
        try:
            view = resolve(request.path_info, urlconf).func
        except Resolver404:
            found = None
        else:
            found = marked(view)
            if found is None:
                found = marked(getattr(view, "view_class", None))
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[where] = found
        return found


class DjangoApp:
    """The project's WSGI handler, made on first use: what workers replay requests through.

    With ``for_tests``, a replay leaves the database connections alone, as
    Django's test client does, so that a job run inside a test (eagerly,
    :mod:`offload.testing`) does not close the connection the test's
    transaction holds.
    """

    def __init__(self, for_tests: bool = False) -> None:
        self.for_tests = for_tests
        self._handler: Any = None
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._handler is None:
            with self._lock:
                if self._handler is None:
                    from django.core.handlers.wsgi import WSGIHandler

                    self._handler = WSGIHandler()
        if not self.for_tests:
            return self._handler(environ, start_response)  # type: ignore[no-any-return]
        from django.core.signals import request_finished, request_started
        from django.db import close_old_connections

        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            body = self._handler(environ, start_response)
            content = list(body)
            body.close()  # request_finished, as a server sends it
            return content
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


_project: Project | None = None
_lock = threading.Lock()


def project() -> Project:
    """The project's configuration, built from ``settings.OFFLOAD`` on first use."""
    global _project
    current = _project
    if current is None:
        with _lock:
            if _project is None:
                options = getattr(django_conf.settings, "OFFLOAD", {})
                if not isinstance(options, dict):
                    raise ImproperlyConfigured(f"settings.OFFLOAD must be a dict of options, not {options!r}")
                try:
                    _project = Project(dict(options))
                except OffloadError as error:
                    raise ImproperlyConfigured(str(error)) from None
            current = _project
    return current


def reset() -> None:
    """Read ``settings.OFFLOAD`` again on next use (the settings changed, as ``override_settings`` does)."""
    global _project
    with _lock:
        _project = None


def installed_offloader() -> Offloader | None:
    """The project's offloader if ``MIDDLEWARE`` holds offload's middleware, for ``offload worker mysite.wsgi:...``."""
    settings = django_conf.settings  # the module's attribute: doctest's collection must not touch it
    if not settings.configured or not any(path in MIDDLEWARE_PATHS for path in getattr(settings, "MIDDLEWARE", ())):
        return None
    return project().offloader


def _handler_offloader(app: Any) -> Offloader | None:
    """For a Django handler whose project lists offload's middleware: the project's offloader.

    The handler loaded its middleware when it was made, so this module is
    imported, and this finder added, by then if the project uses it.
    """
    return installed_offloader() if type(app).__module__.startswith("django.") else None


FINDERS.append(_handler_offloader)
