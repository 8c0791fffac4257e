"""``OffloadMiddleware``: a thin translator between Django's requests and :class:`offload.core.Offloader`.

Put it first in ``MIDDLEWARE``, as Django's own cache middleware: an answer
from the cache is then sent as the worker stored it, and the other
middlewares run once, in the worker's replay, which goes through the whole
stack, this middleware included (a replayed request carries
``offload.replay``, and is let through untouched).

The request is read as the plain middlewares read theirs: under WSGI from the
environ Django keeps in ``request.META``, under ASGI from ``request.scope``,
so a request has the same key whichever way it reaches offload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from offload.asgi import BackendCalls, incoming_from_scope, joined_headers
from offload.contrib.django.conf import Project, project
from offload.core import Incoming
from offload.records import CachedResponse
from offload.replay import REPLAY_KEY, environ_key
from offload.wsgi import incoming_from_environ

GetResponse = Callable[[HttpRequest], Any]


class OffloadMiddleware:
    """Answers offloaded GETs from offload's cache, or with 202 while a worker computes them."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self._calls: tuple[Any, BackendCalls] | None = None

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        found = self._answer(request)
        if found is None:
            return self.get_response(request)
        if isinstance(found, CachedResponse):
            return OffloadResponse(found, request.method == "HEAD")
        current, incoming = found
        answer = current.offloader.decide_sync(incoming)
        if answer is None:
            return self.get_response(request)
        return OffloadResponse(answer, request.method == "HEAD")

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        found = self._answer(request)
        if found is None:
            return await self.get_response(request)
        if isinstance(found, CachedResponse):
            return OffloadResponse(found, request.method == "HEAD")
        current, incoming = found
        opened = current.offloader.opened_backend
        if self._calls is None or self._calls[0] != (current, opened):  # settings read again, or a backend swapped
            self._calls = ((current, opened), BackendCalls(current.offloader))
        answer = await current.offloader.decide_async(incoming, self._calls[1])
        if answer is None:
            return await self.get_response(request)
        return OffloadResponse(answer, request.method == "HEAD")

    def _answer(self, request: HttpRequest) -> CachedResponse | tuple[Project, Incoming] | None:
        """None to let the app answer; an answer without I/O; or the request to decide on."""
        method = request.method
        scope = getattr(request, "scope", None)
        if (method != "GET" and method != "HEAD") or request.META.get(REPLAY_KEY) or (scope or {}).get(REPLAY_KEY):
            return None
        current = project()
        if current.inline.threads:
            current.inline.ensure_started()
        routed = current.routes.choose(request.path.encode("utf-8"), request, request.META.get("HTTP_IF_NONE_MATCH"))
        if routed is False:
            return None
        if routed is not True:
            return routed
        vary = current.offloader.settings.vary
        incoming = from_scope(scope, method, vary) if scope is not None else from_meta(request, method, vary)
        kept = current.offloader.kept(incoming.inputs, incoming.conditions)
        return kept if kept is not None else (current, incoming)


def from_meta(request: HttpRequest, method: str, vary: tuple[str, ...]) -> Incoming:
    """A request under WSGI, from its environ (``request.META``), with the path as the server gave it.

    Django keeps the environ as ``META`` but replaces its ``PATH_INFO`` and
    ``SCRIPT_NAME`` with decoded text; they are put back as WSGI has them
    (the UTF-8 bytes, one character per byte), which is also what a replay
    hands Django, so the app sees the same path.
    """
    environ = dict(request.META)
    environ["PATH_INFO"] = _wsgi_text(request.path_info)
    environ["SCRIPT_NAME"] = _wsgi_text(str(request.META.get("SCRIPT_NAME", "")))
    inputs = (
        environ.get("wsgi.url_scheme", "http"),
        environ.get("HTTP_HOST"),
        environ.get("SERVER_NAME"),
        environ.get("SERVER_PORT"),
        environ["SCRIPT_NAME"],
        environ["PATH_INFO"],
        environ.get("QUERY_STRING", ""),
        *[environ.get(environ_key(name)) for name in vary],
    )
    conditions = (environ.get("HTTP_IF_NONE_MATCH"), environ.get("HTTP_IF_MODIFIED_SINCE"))
    return incoming_from_environ(environ, method, inputs, conditions)


def from_scope(scope: Any, method: str, vary: tuple[str, ...]) -> Incoming:
    """A request under ASGI, from its scope, as :class:`offload.ASGIMiddleware` reads it."""
    headers = joined_headers(scope)
    inputs = (
        scope.get("scheme", "http"),
        headers.get(b"host"),
        tuple(scope.get("server") or ()),
        scope.get("root_path", ""),
        scope.get("path", ""),
        scope.get("raw_path"),
        scope.get("query_string", b""),
        *[headers.get(name.encode("latin-1")) for name in vary],
    )
    none_match, modified_since = headers.get(b"if-none-match"), headers.get(b"if-modified-since")
    conditions = (
        None if none_match is None else none_match.decode("latin-1"),
        None if modified_since is None else modified_since.decode("latin-1"),
    )
    return incoming_from_scope(scope, method, headers, inputs, conditions)


def _wsgi_text(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


class OffloadResponse(HttpResponse):
    """An answer of offload's, sent with its headers exactly as stored: order and repeated names kept.

    Django keeps one value per header name; the handlers send what
    :meth:`items` lists, which is the stored list, plus whatever a middleware
    outside this one added or changed.
    """

    def __init__(self, answer: CachedResponse, head: bool = False) -> None:
        super().__init__(b"" if head else answer.body, status=answer.status, reason=answer.reason or None)
        del self.headers["Content-Type"]  # Django's default; the answer says its own
        self._exact = list(answer.headers)
        for name, value in self._exact:
            if name.lower() != "set-cookie":  # Django sends cookies from response.cookies, not headers
                previous = self.headers.get(name)
                self.headers[name] = value if previous is None else f"{previous}, {value}"
        self._sent = {name.lower(): value for name, value in self.headers.items()}

    def items(self) -> list[tuple[str, str]]:
        current = {name.lower(): (name, value) for name, value in self.headers.items()}
        kept = [
            (name, value)
            for name, value in self._exact
            if name.lower() == "set-cookie"
            or current.get(name.lower(), (None, None))[1] == self._sent.get(name.lower())
        ]
        changed = [(name, value) for low, (name, value) in current.items() if self._sent.get(low) != value]
        return kept + changed
