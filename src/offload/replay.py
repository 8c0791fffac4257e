"""Replaying a stored request through the app, in a worker, and collecting its whole answer.

Like httpx's WSGI and ASGI transports, the app is called in-process, exactly
as a server would call it, and status, headers and body are collected. The
request carries a marker (``offload.replay`` in the WSGI environ or the ASGI
scope) so that the offload middleware inside the app passes it through.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import sys
import threading
from collections.abc import Callable, MutableMapping
from io import BytesIO
from typing import TYPE_CHECKING, Any

from offload.keys import Target
from offload.records import CachedResponse, StoredRequest

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

#: Set in the environ (or scope) of a request replayed by a worker, so the middleware passes it through.
REPLAY_KEY = "offload.replay"


class BodyTooLarge(Exception):
    """The app's answer is larger than ``max_body``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than max_body={limit} bytes")
        self.limit = limit


def replay_wsgi(app: WSGIApplication, request: StoredRequest, max_body: int) -> CachedResponse:
    """Call a WSGI app with a stored request and collect its whole answer.

    The body iterable is consumed and its ``close()`` called, as a server
    would. An answer larger than ``max_body`` raises :class:`BodyTooLarge`.
    """
    target = request.target
    server_name, server_port = server_of(target)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": target.root_path.decode("latin-1"),
        "PATH_INFO": target.path.decode("latin-1"),
        "QUERY_STRING": target.query.decode("latin-1"),
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": target.host,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": target.scheme,
        "wsgi.input": BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        REPLAY_KEY: True,
    }
    for name, value in request.headers:
        environ[environ_key(name)] = value.decode("latin-1")
    started: list[Any] = []
    chunks: list[bytes] = []
    size = 0

    def write(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > max_body:
            raise BodyTooLarge(max_body)
        chunks.append(bytes(data))

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info and started and chunks:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return write

    body = app(environ, start_response)
    try:
        for chunk in body:
            if chunk:
                write(chunk)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the app returned without calling start_response")
    status_text, headers = started
    code, _, reason = str(status_text).partition(" ")
    if not (code.isdigit() and len(code) == 3) or "\r" in reason or "\n" in reason:
        raise RuntimeError(f"the app answered an invalid status {status_text!r}")
    if not _is_latin1(reason):
        reason = ""  # not sendable as it is: the standard phrase is used
    return CachedResponse(int(code), tuple((str(n), str(v)) for n, v in headers), b"".join(chunks), reason=reason)


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


async def replay_asgi(
    app: Any, request: StoredRequest, max_body: int, state: dict[str, Any] | None = None
) -> CachedResponse:
    """Call an ASGI 3 app with a stored request and collect its whole answer.

    ``receive`` gives one empty ``http.request``, then ``http.disconnect``
    only once the answer is complete, as httpx's ASGI transport does, so an
    app that watches for a disconnect while it streams is not cut short.
    ``state`` is the lifespan state, copied into the scope as a server does.
    An answer larger than ``max_body`` raises :class:`BodyTooLarge`.
    """
    from urllib.parse import quote

    target = request.target
    full_path = target.full_path
    raw_path = target.raw_path if target.raw_path is not None else quote(full_path, "/:@!$&'()*+,;=-._~").encode()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": target.scheme,
        "path": full_path.decode("utf-8", "surrogateescape"),
        "raw_path": raw_path,
        "query_string": target.query,
        "root_path": target.root_path.decode("utf-8", "surrogateescape"),
        "headers": [(b"host", target.host.encode("latin-1"))]
        + [(name.encode("latin-1"), value) for name, value in request.headers],
        "client": None,
        "server": server_of(target),
        "extensions": {},
        REPLAY_KEY: True,
    }
    if state is not None:
        scope["state"] = dict(state)
    request_sent = False
    complete = False
    finished = asyncio.Event()
    started: dict[str, Any] = {}
    chunks: list[bytes] = []
    size = 0

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal size, complete
        kind = message.get("type")
        if kind == "http.response.start":
            if started:
                raise RuntimeError("the app sent http.response.start twice")
            started.update(message)
        elif kind == "http.response.body":
            if not started:
                raise RuntimeError("the app sent a body before http.response.start")
            if complete:
                raise RuntimeError("the app sent a body after the answer was complete")
            body = bytes(message.get("body", b""))
            size += len(body)
            if size > max_body:
                raise BodyTooLarge(max_body)
            chunks.append(body)
            if not message.get("more_body", False):
                complete = True
                finished.set()

    try:
        await app(scope, receive, send)
    finally:
        finished.set()  # release a receive() still waiting, whatever happened
    if not complete:
        raise RuntimeError("the app returned without a complete answer")
    status = started.get("status")
    if not isinstance(status, int) or not 100 <= status <= 999:
        raise RuntimeError(f"the app answered an invalid status {status!r}")
    headers = tuple((bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in started.get("headers", ()))
    return CachedResponse(status, headers, b"".join(chunks))


def replay_asgi_sync(app: Any, request: StoredRequest, max_body: int) -> CachedResponse:
    """:func:`replay_asgi` for a worker thread: one event loop per thread, reused for every job.

    The first job an app runs on a thread's loop sends it ``lifespan.startup``
    (database pools, clients and other startup work of FastAPI, Starlette and
    Quart apps), once; an app that does not speak lifespan is used without it.
    """
    return _runner_for_this_thread().run(app, request, max_body)


def close_replay_loop() -> None:
    """Send ``lifespan.shutdown`` to the apps started on this thread's loop, then close the loop.

    A worker thread may call this when it stops. Otherwise the loop of a
    thread that has ended is closed by the next replay on any thread, or when
    the interpreter exits.
    """
    with _runners_lock:
        runner = _runners.pop(threading.current_thread(), None)
    if runner is not None:
        runner.close()


# Loops are kept per thread in a plain dict, not in thread-local storage, so that
# they are closed at a known time, in a thread with no loop running, and never
# left to the garbage collector (which may find one in a reference cycle, inside
# another thread's event loop, where it cannot be shut down).
_runners: dict[threading.Thread, _LoopRunner] = {}
_runners_lock = threading.Lock()
_log = logging.getLogger("offload.replay")


def _runner_for_this_thread() -> _LoopRunner:
    current = threading.current_thread()
    with _runners_lock:
        ended = [_runners.pop(thread) for thread in list(_runners) if not thread.is_alive()]
        runner = _runners.get(current)
        if runner is None or runner.loop.is_closed():
            runner = _runners[current] = _LoopRunner()
    for old in ended:
        old.close()
    return runner


@atexit.register
def _close_ended_threads_loops() -> None:
    with _runners_lock:
        ended = [_runners.pop(thread) for thread in list(_runners) if not thread.is_alive()]
    for runner in ended:
        runner.close()


class _Lifespan:
    """An app's running lifespan: the task, the way to speak to it, and the state it set up."""

    def __init__(self, app: Any) -> None:
        self.app = app  # held so that id(app) is not reused while the lifespan runs
        self.state: dict[str, Any] = {}
        self.supported = True
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: asyncio.Queue[MutableMapping[str, Any] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await self.replies.get()
        if reply is None:  # the app raised or returned: it has no lifespan
            self.supported = False
        elif reply.get("type") == "lifespan.startup.failed":
            raise RuntimeError(f"the app's lifespan startup failed: {reply.get('message', '')}")

    async def stop(self, timeout: float = 5.0) -> None:
        if self.supported and self.task is not None and not self.task.done():
            await self.inbox.put({"type": "lifespan.shutdown"})
            try:
                await asyncio.wait_for(self.replies.get(), timeout)
            except asyncio.TimeoutError:
                _log.warning("the app did not finish its lifespan shutdown in %ss", timeout)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self.inbox.get, self.replies.put)
        except Exception as error:  # apps without lifespan support raise here, and that is fine
            _log.debug("the app does not support lifespan (%s: %s); running without it", type(error).__name__, error)
        finally:
            await self.replies.put(None)


class _LoopRunner:
    """A worker thread's event loop, and the apps started on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.replayers: dict[int, AsgiReplayer] = {}

    def run(self, app: Any, request: StoredRequest, max_body: int) -> CachedResponse:
        return self.loop.run_until_complete(self.replay(app, request, max_body))

    async def replay(self, app: Any, request: StoredRequest, max_body: int) -> CachedResponse:
        replayer = self.replayers.get(id(app))
        if replayer is None:
            replayer = self.replayers[id(app)] = AsgiReplayer(app)
        return await replayer(request, max_body)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            for replayer in self.replayers.values():
                self.loop.run_until_complete(replayer.aclose())
        finally:
            self.replayers.clear()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


class AsgiReplayer:
    """Replays stored requests through an ASGI app on the running event loop, many at once.

    The first replay sends the app ``lifespan.startup`` (once, however many
    replays start together); a failed startup raises, and is tried again by
    the next replay. :meth:`aclose` sends ``lifespan.shutdown``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app  # held so that id(app) is not reused while the lifespan runs
        self._lifespan: _Lifespan | None = None
        self._starting = asyncio.Lock()

    async def __call__(self, request: StoredRequest, max_body: int) -> CachedResponse:
        lifespan = self._lifespan or await self._start()
        return await replay_asgi(self.app, request, max_body, lifespan.state if lifespan.supported else None)

    async def _start(self) -> _Lifespan:
        async with self._starting:
            if self._lifespan is None:
                lifespan = _Lifespan(self.app)
                await lifespan.start()
                self._lifespan = lifespan
            return self._lifespan

    async def aclose(self) -> None:
        """Send the app ``lifespan.shutdown``, if it was started."""
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            await lifespan.stop()


def server_of(target: Target) -> tuple[str, int]:
    """The server name and port a replay gives the app: those of the request's ``Host``, else the scheme's port.

    They come from the key's own inputs, never from the worker's machine, so
    every request that shares a key hands the app the same values.

    >>> server_of(Target("https", "example.com", b"", b"/", b""))
    ('example.com', 443)
    >>> server_of(Target("http", "[::1]:8000", b"", b"/", b""))
    ('[::1]', 8000)
    """
    host = target.host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return name, int(port)
    return host, 443 if target.scheme in ("https", "wss") else 80


def environ_key(header: str) -> str:
    """Where a WSGI environ holds a request header: ``x-tenant`` -> ``HTTP_X_TENANT``."""
    return "HTTP_" + header.upper().replace("-", "_")


def is_asgi(app: Any) -> bool:
    """Whether ``app`` is an ASGI 3 application rather than a WSGI one.

    An async callable is ASGI. A callable that is not async but returns an
    awaitable (Quart's ``asgi_app``, some middlewares) is told apart by its
    signature: ASGI takes ``(scope, receive, send)``, WSGI ``(environ, start_response)``.
    """
    if inspect.isclass(app) or not callable(app):
        return False
    if getattr(app, "_offload_asgi", False) is True:
        return True
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else type(app).__call__
    if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(app):
        return True
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len([p for p in positional if p.default is p.empty]) == 3


def replayer_for(app: Any, protocol: str | None = None) -> Callable[[StoredRequest, int], CachedResponse]:
    """A function that replays a stored request through ``app`` (WSGI or ASGI, detected unless given).

    An app that replays its requests otherwise (:mod:`offload.proxy` sends
    them to its upstream) says so with an ``offload_replayer()`` method.
    """
    own = getattr(app, "offload_replayer", None)
    if callable(own):
        replayer: Callable[[StoredRequest, int], CachedResponse] = own()
        return replayer
    asgi = is_asgi(app) if protocol is None else protocol == "asgi"
    if asgi:

        def replay_through_asgi(request: StoredRequest, max_body: int) -> CachedResponse:
            return replay_asgi_sync(app, request, max_body)

        return replay_through_asgi

    def replay_through_wsgi(request: StoredRequest, max_body: int) -> CachedResponse:
        return replay_wsgi(app, request, max_body)

    return replay_through_wsgi
