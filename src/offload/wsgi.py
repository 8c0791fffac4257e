"""The WSGI middleware: a thin translator between WSGI and :class:`offload.core.Offloader`."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING

from offload.core import RequestTooLarge
from offload.middleware import Middleware
from offload.records import StoredRequest
from offload.replay import REPLAY_KEY, environ_key
from offload.settings import Settings

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

    @cached_property
    def _vary_keys(self) -> tuple[str, ...]:
        """The environ keys of the ``vary`` headers."""
        return tuple(environ_key(name) for name in self.offloader.settings.vary)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if (method != "GET" and method != "HEAD") or environ.get(REPLAY_KEY):
            return self.app(environ, start_response)
        if self._inline.threads:  # none unless memory:// or asked for; the check costs a system call
            self._inline.ensure_started()
        path = _bytes(environ.get("SCRIPT_NAME", "")) + _bytes(environ.get("PATH_INFO", ""))
        query = _bytes(environ.get("QUERY_STRING", ""))
        vary = tuple([None if (value := environ.get(name)) is None else _bytes(value) for name in self._vary_keys])
        response = self.offloader.kept(path, query, vary)
        if response is None:

            def header(name: str) -> bytes | None:
                value = environ.get(environ_key(name))
                return None if value is None else _bytes(value)

            def build_request(key: str) -> StoredRequest:
                return request_from_environ(environ, key, path, query, self.offloader.settings)

            response = self.offloader.decide_sync(method, path, query, header, build_request)
            if response is None:
                return self.app(environ, start_response)
        start_response(response.status_line, list(response.headers))
        return [] if method == "HEAD" else [response.body]


def request_from_environ(
    environ: WSGIEnvironment, key: str, path: bytes, query: bytes, settings: Settings
) -> StoredRequest:
    """What a worker needs to replay this request (see :class:`offload.records.StoredRequest`)."""
    headers = []
    size = 0
    for name, value in environ.items():
        if not name.startswith("HTTP_"):
            continue
        header = name[5:].lower().replace("_", "-")
        if not settings.replays_header(header):
            continue
        raw = _bytes(value)
        size += len(header) + len(raw) + 4
        if size > settings.max_headers:
            raise RequestTooLarge()
        headers.append((_bytes(header), raw))
    port = str(environ.get("SERVER_PORT", "80"))
    protocol = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1"))
    return StoredRequest(
        key=key,
        path=path,
        query=query,
        headers=tuple(headers),
        scheme=str(environ.get("wsgi.url_scheme", "http")),
        server=(str(environ.get("SERVER_NAME", "localhost")), int(port) if port.isdigit() else 80),
        root_path=_bytes(environ.get("SCRIPT_NAME", "")).decode("latin-1"),
        client=str(environ.get("REMOTE_ADDR", "")),
        http_version=protocol.partition("/")[2] or "1.1",
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
