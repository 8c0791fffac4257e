"""Replaying a stored request through the app, in a worker, and collecting its whole answer.

Like httpx's WSGI and ASGI transports, the app is called in-process, exactly
as a server would call it, and status, headers and body are collected. The
request carries a marker (``offload.replay`` in the WSGI environ or the ASGI
scope) so that the offload middleware inside the app passes it through.
"""

from __future__ import annotations

import sys
from io import BytesIO
from typing import TYPE_CHECKING, Any

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
    path = request.path
    root = request.root_path.encode("latin-1")
    if root and path.startswith(root):
        path = path[len(root) :]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": request.root_path,
        "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": request.query.decode("latin-1"),
        "SERVER_NAME": request.server[0],
        "SERVER_PORT": str(request.server[1]),
        "SERVER_PROTOCOL": f"HTTP/{request.http_version}",
        "REMOTE_ADDR": request.client,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        REPLAY_KEY: True,
    }
    for name, value in request.headers:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
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
    code = str(status_text).split(" ", 1)[0]
    if not (code.isdigit() and len(code) == 3):
        raise RuntimeError(f"the app answered an invalid status {status_text!r}")
    return CachedResponse(int(code), tuple((str(n), str(v)) for n, v in headers), b"".join(chunks))
