"""Call a bare WSGI app once, in a fresh process, and print its answer as JSON.

Run as ``python -m tests.wsgi_e2e.bare_call SPEC INSIDE METHOD PATH QUERY BODY_HEX PORT``:
``SPEC`` is the served ``MODULE:ATTR`` and ``INSIDE`` the dotted attribute
path from it to the bare app (``app`` for offload's middleware). A process of
its own keeps each framework's global setup (Django's settings) apart from
the test process and from other tests.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
import wsgiref.util
from typing import Any


def bare_app(spec: str, inside: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    target: Any = getattr(importlib.import_module(module_name), attribute)
    for part in inside.split("."):
        target = getattr(target, part)
    return target


def call(app: Any, method: str, path: str, query: str, body: bytes, port: int) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(port),
        "HTTP_HOST": f"127.0.0.1:{port}",
        "wsgi.input": io.BytesIO(body),
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    wsgiref.util.setup_testing_defaults(environ)
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    # On the wire, whitespace around a header value is not part of it (Django starts Set-Cookie values with one).
    headers = [[name, value.strip(" \t")] for name, value in started[1]]
    return {"status": int(started[0].split()[0]), "headers": headers, "body": data.hex()}


if __name__ == "__main__":
    spec, inside, method, path, query, body, port = sys.argv[1:8]
    print(json.dumps(call(bare_app(spec, inside), method, path, query, bytes.fromhex(body), int(port))))
