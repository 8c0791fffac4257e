"""The ASGI middleware: a thin translator between ASGI and :class:`offload.core.Offloader`.

The decision is the same generator the WSGI middleware runs; here each backend
operation it yields is awaited, so a request never blocks the event loop. A
backend that offers native coroutines (``aget``, ``aadd``, ``adelete`` on its
cache, ``apush`` on its queue: see :mod:`offload.backends.base`) is awaited
directly; any other backend runs in a small, bounded thread pool shared by
every middleware in the process.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any
from urllib.parse import unquote_to_bytes

from offload.core import OPERATIONS, Offloader, Operation, RequestTooLarge
from offload.errors import BackendUnavailable, QueueFull
from offload.middleware import Middleware
from offload.records import CachedResponse, StoredRequest
from offload.replay import REPLAY_KEY
from offload.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Threads that run blocking backend calls for every ASGI middleware in the process.
#: Bounded so that a slow or unreachable backend cannot make the process spawn
#: threads without limit; requests beyond it wait their turn.
BACKEND_THREADS = 16
_executor = ThreadPoolExecutor(max_workers=BACKEND_THREADS, thread_name_prefix="offload-backend")


class ASGIMiddleware(Middleware[ASGIApp]):
    """Serve slow GET endpoints of an ASGI app from a cache, computed by background workers.

    A GET or HEAD is answered from the cache when a worker has computed it.
    On a miss, the request is stored, exactly one job is queued for its key
    and the client gets an empty ``202 Accepted`` with ``Retry-After``: it
    polls until the answer is there. Other methods, ``lifespan`` and
    ``websocket`` scopes reach the app unchanged.

    :param app: the ASGI 3 application to wrap.
    :param url: the backend URL; defaults to ``OFFLOAD_URL``, else a SQLite file.
    :param cache: a cache object to use instead of the URL's.
    :param queue: a queue object to use instead of the URL's.
    :param ttl: seconds an answer is served from the cache.
    :param worker_threads: worker threads to run inside this process; by
        default one for ``memory://`` URLs and none otherwise.
    :param options: the other options of :class:`offload.settings.Settings`.

    Wrap any ASGI app, or let Starlette and FastAPI do it::

        app = ASGIMiddleware(app, ttl=600)
        app.add_middleware(ASGIMiddleware, ttl=600)  # FastAPI, Starlette

    Then run the workers: ``offload worker myapp:app``.
    """

    @cached_property
    def _calls(self) -> BackendCalls:
        return BackendCalls(self.offloader)

    @cached_property
    def _vary_names(self) -> tuple[bytes, ...]:
        """The ``vary`` header names as ASGI spells them: lowercase bytes."""
        return tuple(name.encode("latin-1") for name in self.offloader.settings.vary)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if scope["type"] != "http" or (method != "GET" and method != "HEAD") or scope.get(REPLAY_KEY):
            await self.app(scope, receive, send)
            return
        if self._inline.threads:  # none unless memory:// or asked for; the check costs a system call
            self._inline.ensure_started()
        path = scope_path(scope)
        query = bytes(scope.get("query_string", b""))
        headers = joined_headers(scope)
        response = self.offloader.kept(path, query, tuple([headers.get(name) for name in self._vary_names]))
        if response is None:

            def header(name: str) -> bytes | None:
                return headers.get(name.encode("latin-1"))

            def build_request(key: str) -> StoredRequest:
                return request_from_scope(scope, key, path, query, self.offloader.settings)

            response = await self.offloader.decide_async(method, path, query, header, build_request, self._calls)
            if response is None:
                await self.app(scope, receive, send)
                return
        await send_response(send, response, with_body=method != "HEAD")


class BackendCalls:
    """Awaits the backend operations of :meth:`offload.core.Offloader.decide` without blocking the loop.

    The backend is opened (a blocking step) in the thread pool on first use;
    then each operation goes to the backend's native coroutine when it has
    one, else to a pool thread.
    """

    def __init__(self, offloader: Offloader) -> None:
        self.offloader = offloader
        self._native: dict[str, Callable[..., Awaitable[Any]] | None] | None = None

    async def __call__(self, operation: Operation) -> Any:
        loop = asyncio.get_running_loop()
        if self._native is None:
            self._native = await loop.run_in_executor(_executor, self._find_native)
        name, *args = operation
        native = self._native.get(name) if self._native is not None else None
        if native is None:
            return await loop.run_in_executor(_executor, self.offloader._call, operation)
        try:
            return await native(*args)
        except (BackendUnavailable, QueueFull):
            raise
        except Exception as error:  # a driver error we do not know: an outage, as in the sync path
            raise BackendUnavailable(f"{type(error).__name__}: {error}") from error

    def _find_native(self) -> dict[str, Callable[..., Awaitable[Any]] | None] | None:
        try:
            targets = {"cache": self.offloader.cache, "queue": self.offloader.queue}
        except BackendUnavailable:
            return None  # not opened: the pool reports the outage, and the next request tries again
        return {name: native_method(targets[part], name) for name, part in OPERATIONS.items()}


def native_method(target: object, name: str) -> Callable[..., Awaitable[Any]] | None:
    """The backend's coroutine twin of ``name`` (``get`` -> ``aget``), if it has one."""
    method = getattr(target, "a" + name, None)
    return method if inspect.iscoroutinefunction(method) else None


def scope_path(scope: Scope) -> bytes:
    """The request path as bytes, percent-decoded, mount point included: WSGI's SCRIPT_NAME + PATH_INFO.

    ``raw_path`` is preferred, so that any byte the client sent (not only
    valid UTF-8) reaches the key exactly as a WSGI server would decode it.
    """
    root = _utf8(scope.get("root_path", ""))
    raw = scope.get("raw_path")
    path = unquote_to_bytes(bytes(raw)) if raw else _utf8(scope.get("path", ""))
    if root and not path.startswith(root):
        path = root + path
    return path


def _utf8(text: object) -> bytes:
    # ASGI paths are decoded UTF-8; a server's escapes, even lone surrogates, must not raise here.
    try:
        return str(text).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return str(text).encode("utf-8", "surrogatepass")


def joined_headers(scope: Scope) -> dict[bytes, bytes]:
    """Request headers by lowercase name; repeated ones joined with commas, as a WSGI server does."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", ()):
        name = bytes(name).lower()
        headers[name] = headers[name] + b"," + bytes(value) if name in headers else bytes(value)
    return headers


def request_from_scope(scope: Scope, key: str, path: bytes, query: bytes, settings: Settings) -> StoredRequest:
    """What a worker needs to replay this request (see :class:`offload.records.StoredRequest`)."""
    headers = []
    size = 0
    for raw_name, raw_value in scope.get("headers", ()):
        name = bytes(raw_name).lower()
        if not settings.replays_header(name.decode("latin-1")):
            continue
        value = bytes(raw_value)
        size += len(name) + len(value) + 4
        if size > settings.max_headers:
            raise RequestTooLarge()
        headers.append((name, value))
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    root = _utf8(scope.get("root_path", ""))
    return StoredRequest(
        key=key,
        path=path,
        query=query,
        headers=tuple(headers),
        scheme=str(scope.get("scheme", "http")),
        server=(str(server[0]), int(server[1]) if server[1] is not None else 80),
        root_path=root.decode("latin-1"),  # bytes as latin-1 text, as SCRIPT_NAME holds them
        client=str(client[0]),
        http_version=str(scope.get("http_version", "1.1")),
    )


async def send_response(send: Send, response: CachedResponse, with_body: bool = True) -> None:
    """Send a complete answer: its status, its headers in order, and its body unless ``with_body`` is false."""
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body if with_body else b"", "more_body": False})
