"""The WSGI middleware: a thin translator between WSGI and :class:`offload.core.Offloader`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from offload import monitor
from offload.core import Incoming
from offload.delivery import NO_CONDITIONS, Conditions, status_of
from offload.keys import Target, canonical_query, parse_query
from offload.middleware import Middleware
from offload.records import CachedResponse
from offload.replay import REPLAY_KEY, environ_key
from offload.timing import HEADER, server_timing
from offload.waiting import asks_no_cache, preferred_wait, prefers_async

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment  # noqa: F401 - WSGIApplication: a string below


class WSGIMiddleware(Middleware["WSGIApplication"]):
    """Serve slow GET endpoints of a WSGI app from a cache, computed by background workers.

    A GET or HEAD is answered from the cache when a worker has computed it.
    On a miss, the request is stored, exactly one job is queued for its key
    and the client gets an empty ``202 Accepted`` with ``Retry-After``: it
    polls until the answer is there. Other methods reach the app unchanged.

    :param app: the WSGI application to wrap.
    :param url: the backend URL; defaults to ``OFFLOAD_URL``, else a SQLite file.
    :param cache: a cache object to use instead of the URL's.
    :param queue: a queue object to use instead of the URL's.
    :param ttl: seconds an answer is served from the cache.
    :param worker_threads: worker threads to run inside this process; by
        default one for ``memory://`` URLs and none otherwise.
    :param options: the other options of :class:`offload.settings.Settings`.

    Wrap a Flask app's WSGI callable, so that ``app`` itself stays a Flask app::

        app.wsgi_app = WSGIMiddleware(app.wsgi_app, ttl=600)

    Then run the workers: ``offload worker myapp:app``.
    """

    #: Requests that may wait at once per process: each holds one of the server's threads.
    default_waiters = 8

    @cached_property
    def _vary_keys(self) -> tuple[str, ...]:
        """The environ keys of the ``vary`` headers."""
        return tuple(environ_key(name) for name in self.offloader.settings.vary)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if environ.get(REPLAY_KEY):
            return self.app(environ, start_response)
        if method != "GET" and method != "HEAD":
            if self.offloader.events.listeners:
                self.offloader.events.emit("pass", reason="method", path=environ.get("PATH_INFO", ""))
            return self.app(environ, self._passing(start_response, "method"))
        started = time.perf_counter()
        if self.routes is not None:  # paths, exclude, marked views, the client script (offload.routes)
            path = _bytes(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
            routed = self.routes.choose(path, environ, environ.get("HTTP_IF_NONE_MATCH"))
            if routed is False:
                return self.app(environ, start_response)
            if routed is not True:
                start_response(routed.status_line, list(routed.headers))
                return [] if method == "HEAD" else [routed.body]
        if self._inline.threads:  # none unless memory:// or asked for; the check costs a system call
            self._inline.ensure_started()
        monitor_path = self.offloader.settings.monitor_path
        if monitor_path and environ.get("PATH_INFO", "").startswith(monitor_path):
            key = environ["PATH_INFO"][len(monitor_path) :]
            status = self.offloader.run_sync(monitor.status(self.offloader, key))
            start_response(status.status_line, list(status.headers))
            return [] if method == "HEAD" else [status.body]
        inputs = (
            environ.get("wsgi.url_scheme", "http"),
            environ.get("HTTP_HOST"),
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
            environ.get("SCRIPT_NAME", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            *[environ.get(name) for name in self._vary_keys],
        )
        conditions = (environ.get("HTTP_IF_NONE_MATCH"), environ.get("HTTP_IF_MODIFIED_SINCE"))
        fresh = "HTTP_CACHE_CONTROL" in environ or "HTTP_PRAGMA" in environ  # it may ask for a refresh
        response: CachedResponse | None = None if fresh else self.offloader.kept(inputs, conditions)
        if response is None:
            response = self.offloader.decide_sync(incoming_from_environ(environ, method, inputs, conditions))
        if self.offloader.events.listeners:
            self.offloader.told(response, environ.get("PATH_INFO", ""), started)
        if response is None:
            return self.app(environ, self._passing(start_response, "bypass"))
        headers = list(response.headers)
        if self.offloader.settings.server_timing:
            headers.append((HEADER, server_timing(response, started)))
        start_response(response.status_line, headers)
        return [] if method == "HEAD" else [response.body]

    def _passing(self, start_response: StartResponse, fwd: str) -> StartResponse:
        """``start_response`` adding ``Cache-Status: offload; fwd=...`` to what the app answers by itself."""
        if not self.offloader.settings.cache_status:
            return start_response
        value = status_of(fwd)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, ("Cache-Status", value)], exc_info)

        return start


def incoming_from_environ(
    environ: WSGIEnvironment, method: str, inputs: tuple[Any, ...], conditions: Conditions = NO_CONDITIONS
) -> Incoming:
    """The request as :class:`offload.core.Incoming`: its target, and its headers read from the environ."""
    scheme = str(environ.get("wsgi.url_scheme", "http"))
    host = environ.get("HTTP_HOST")
    if host is None:  # HTTP/1.0 without Host: the server's own name and port, as PEP 3333 rebuilds a URL
        host = f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    query = canonical_query(parse_query(_bytes(environ.get("QUERY_STRING", ""))))
    target = Target(
        scheme,
        _bytes(str(host)).decode("latin-1"),
        _bytes(environ.get("SCRIPT_NAME", "")),
        _bytes(environ.get("PATH_INFO", "")),
        query.encode("ascii"),
    )

    def header(name: str) -> bytes | None:
        value = environ.get(environ_key(name))
        return None if value is None else _bytes(value)

    def names() -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in environ if key.startswith("HTTP_")]

    url_size = len(target.root_path) + len(target.path) + len(environ.get("QUERY_STRING", ""))
    prefer = environ.get("HTTP_PREFER")
    return Incoming(
        method,
        target,
        inputs,
        header,
        names,
        url_size,
        conditions,
        client=str(environ.get("REMOTE_ADDR", "")),
        wait=preferred_wait(prefer),
        respond_async=prefers_async(prefer),
        no_cache=asks_no_cache(environ.get("HTTP_CACHE_CONTROL"), environ.get("HTTP_PRAGMA")),
    )


def _bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # a server that broke PEP 3333's latin-1 rule
        pass
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # even a lone surrogate that stands for no byte must not raise
        return text.encode("utf-8", "surrogatepass")
