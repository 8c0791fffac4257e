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
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

from offload import monitor
from offload.core import OPERATIONS, Incoming, Offloader, Operation
from offload.delivery import NO_CONDITIONS, Conditions, status_of
from offload.errors import BackendUnavailable, QueueFull
from offload.keys import Target, canonical_query, parse_query, target_from_url
from offload.middleware import Middleware
from offload.records import CachedResponse
from offload.replay import REPLAY_KEY
from offload.timing import server_timing
from offload.waiting import asks_no_cache, preferred_wait, prefers_async

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

    #: Requests that may wait at once per process: a future each, no thread.
    default_waiters = 1000

    @cached_property
    def _calls(self) -> BackendCalls:
        return BackendCalls(self.offloader)

    @cached_property
    def _vary_names(self) -> tuple[bytes, ...]:
        """The ``vary`` header names as ASGI spells them: lowercase bytes."""
        return tuple(name.encode("latin-1") for name in self.offloader.settings.vary)

    def target_for(self, url: str) -> Target:
        """The target of a request for ``url``: ASGI servers hand the app the path as written, too."""
        return target_from_url(url, raw_path=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if scope["type"] != "http" or scope.get(REPLAY_KEY):
            await self.app(scope, receive, send)
            return
        if method != "GET" and method != "HEAD":
            if self.offloader.events.listeners:
                self.offloader.events.emit("pass", reason="method", path=scope.get("path", ""))
            await self.app(scope, receive, self._passing(send, "method"))
            return
        started = time.perf_counter()
        if self._inline.threads:  # none unless memory:// or asked for; the check costs a system call
            self._inline.ensure_started()
        monitor_path = self.offloader.settings.monitor_path
        if monitor_path and scope.get("path", "").startswith(monitor_path):
            key = scope["path"][len(monitor_path) :]
            status = await self.offloader.run_async(monitor.status(self.offloader, key), self._calls)
            await send_response(send, status, with_body=method != "HEAD")
            return
        headers = joined_headers(scope)
        if self.routes is not None:  # paths, exclude, marked views, the client script (offload.routes)
            etags = headers.get(b"if-none-match")
            routed = self.routes.choose(b"".join(scope_path(scope)), scope, etags.decode("latin-1") if etags else None)
            if routed is not True:
                await (
                    self.app(scope, receive, send) if routed is False else send_response(send, routed, method != "HEAD")
                )
                return
        inputs = (
            scope.get("scheme", "http"),
            headers.get(b"host"),
            tuple(scope.get("server") or ()),  # a list from some clients (Starlette's TestClient): hashed
            scope.get("root_path", ""),
            scope.get("path", ""),
            scope.get("raw_path"),
            scope.get("query_string", b""),
            *[headers.get(name) for name in self._vary_names],
        )
        conditions = _conditions(headers) if b"if-none-match" in headers or b"if-modified-since" in headers else None
        fresh = b"cache-control" in headers or b"pragma" in headers  # it may ask for a refresh
        response = None if fresh else self.offloader.kept(inputs, conditions or NO_CONDITIONS)
        if response is None:
            incoming = self.incoming(scope, method, headers, inputs, conditions or NO_CONDITIONS)
            response = await self.offloader.decide_async(incoming, self._calls)
        if self.offloader.events.listeners:
            self.offloader.told(response, scope.get("path", ""), started)
        if response is None:
            await self.app(scope, receive, self._passing(send, "bypass"))
            return
        extra = None
        if self.offloader.settings.server_timing:
            extra = (b"server-timing", server_timing(response, started).encode("latin-1"))
        await self.respond(scope, send, response, extra)

    def incoming(
        self, scope: Scope, method: str, headers: dict[bytes, bytes], inputs: tuple[Any, ...], conditions: Conditions
    ) -> Incoming:
        """The request as the core sees it (:func:`incoming_from_scope`); a subclass may shape it otherwise."""
        return incoming_from_scope(scope, method, headers, inputs, conditions)

    async def respond(
        self, scope: Scope, send: Send, response: CachedResponse, extra: tuple[bytes, bytes] | None = None
    ) -> None:
        """Send the answer offload decided on (a subclass may shape it for the request, such as a range of it)."""
        await send_response(send, response, with_body=scope.get("method") != "HEAD", extra=extra)

    def _passing(self, send: Send, fwd: str) -> Send:
        """``send`` adding ``Cache-Status: offload; fwd=...`` to what the app answers by itself."""
        if not self.offloader.settings.cache_status:
            return send
        value = (b"cache-status", status_of(fwd).encode("ascii"))

        async def sending(message: Message) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), value]}
            await send(message)

        return sending


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


def _conditions(headers: dict[bytes, bytes]) -> Conditions:
    none_match, modified_since = headers.get(b"if-none-match"), headers.get(b"if-modified-since")
    return (
        None if none_match is None else none_match.decode("latin-1"),
        None if modified_since is None else modified_since.decode("latin-1"),
    )


def incoming_from_scope(
    scope: Scope,
    method: str,
    headers: dict[bytes, bytes],
    inputs: tuple[Any, ...],
    conditions: Conditions = NO_CONDITIONS,
) -> Incoming:
    """The request as :class:`offload.core.Incoming`: its target (``raw_path`` kept as sent) and its headers."""
    host = headers.get(b"host")
    if host is None:  # HTTP/1.0 without Host: the server's own name and port
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}".encode("latin-1", "replace")
    root, path = scope_path(scope)
    raw = scope.get("raw_path")
    query = canonical_query(parse_query(bytes(scope.get("query_string", b""))))
    target = Target(
        str(scope.get("scheme", "http")),
        host.decode("latin-1"),
        root,
        path,
        query.encode("ascii"),
        None if raw is None else bytes(raw),
    )

    def header(name: str) -> bytes | None:
        return headers.get(name.encode("latin-1"))

    def names() -> list[str]:
        return [name.decode("latin-1") for name in headers]

    url_size = len(root) + len(raw if raw is not None else path) + len(scope.get("query_string", b""))
    client = scope.get("client")
    prefer = _text(headers.get(b"prefer"))
    return Incoming(
        method,
        target,
        inputs,
        header,
        names,
        url_size,
        conditions,
        client=str(client[0]) if client else "",
        wait=preferred_wait(prefer),
        respond_async=prefers_async(prefer),
        no_cache=asks_no_cache(_text(headers.get(b"cache-control")), _text(headers.get(b"pragma"))),
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def scope_path(scope: Scope) -> tuple[bytes, bytes]:
    """The mount point and the path below it, percent-decoded, as WSGI's SCRIPT_NAME and PATH_INFO.

    ``path`` is used as the server decoded it (the key holds ``raw_path``
    besides, exactly as sent); a ``path`` that includes ``root_path``, as
    recent servers send it, has it removed.
    """
    root = _utf8(scope.get("root_path", ""))
    path = _utf8(scope.get("path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    return root, path


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


async def send_response(
    send: Send, response: CachedResponse, with_body: bool = True, extra: tuple[bytes, bytes] | None = None
) -> None:
    """Send a complete answer: its status, its headers in order (then ``extra``), and its body unless ``with_body``."""
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": response.raw_headers if extra is None else [*response.raw_headers, extra],
        }
    )
    await send({"type": "http.response.body", "body": response.body if with_body else b"", "more_body": False})
