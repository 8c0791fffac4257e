"""Drive an offloaded app in-process: send requests, run queued jobs, read answers.

The behaviour suite is written once against :class:`Harness`; one harness per
protocol (WSGI here, ASGI beside it) makes it run against both middlewares.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from offload.replay import replayer_for
from offload.worker import Worker
from offload.wsgi import WSGIMiddleware


@dataclass
class Result:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def app_headers(self) -> list[tuple[str, str]]:
        """The headers without those a cache adds on the way out (``Age``, ``Cache-Status``)."""
        return [(name, value) for name, value in self.headers if name.lower() not in ("age", "cache-status")]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class Harness:
    """Common part: the worker that runs queued jobs through the same wrapped app."""

    middleware: Any

    @property
    def offloader(self) -> Any:
        return self.middleware.offloader

    def work(self) -> int:
        """Run every queued job in this process (as ``offload worker --burst`` would)."""
        worker = Worker(self.offloader, replayer_for(self.middleware), burst=True, claim_wait=0.05)
        worker.run(install_signals=False)
        return worker.jobs_done

    def get_after_work(self, path: str, query: str = "", headers: list[tuple[str, str]] | None = None) -> Result:
        first = self.request("GET", path, query, headers)
        if first.status != 202:
            return first
        self.work()
        return self.request("GET", path, query, headers)

    def request(
        self, method: str, path: str, query: str = "", headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Result:
        raise NotImplementedError


class WSGIHarness(Harness):
    def __init__(self, app: Any, **options: Any) -> None:
        options.setdefault("worker_threads", 0)
        self.middleware = WSGIMiddleware(app, **options)

    @classmethod
    def around(cls, middleware: Any) -> WSGIHarness:
        """A harness for an app that is wrapped already."""
        harness = cls.__new__(cls)
        harness.middleware = middleware
        return harness

    def request(
        self, method: str, path: str, query: str = "", headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Result:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "testserver",
            "HTTP_HOST": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in headers or []:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        started: list[Any] = []

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, response_headers]
            return lambda data: None

        chunks = self.middleware(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
        return Result(int(started[0].split()[0]), list(started[1]), data)
