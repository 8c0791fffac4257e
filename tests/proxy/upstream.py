"""The upstream the proxy tests put ``offload proxy`` in front of: a small HTTP server in a process of its own.

Run as ``python -m tests.proxy.upstream PORT``. Every request is counted by
its path (``GET /_seen?path=/x`` says how many requests for ``/x`` came, and
the ``If-None-Match`` of the last one); the routes:

``/bytes/<name>?size=N``
    N deterministic bytes (every byte value appears), fresh for 60 s, with an ETag.
``/slow/<name>?delay=S``
    waits S seconds, then answers, fresh for 60 s.
``/etag/<name>``
    ``ETag: "v1"``, fresh for 1 s, ``X-Version: 1``; a request that sends
    ``If-None-Match: "v1"`` gets a ``304`` with ``X-Version: 2`` and a fresh lifetime of 60 s.
``/flaky/<name>``
    fresh for 1 s, ``stale-if-error=60``; the body says how many requests came.
``/private/<name>``
    after 0.3 s, the request's ``Authorization`` as the body, ``Cache-Control: private, max-age=60``.
``/vary/<name>``
    the request's ``Accept-Language`` as the body, ``Vary: Accept-Language``, fresh for 60 s.
``/upload`` (POST), any POST
    reads the body as it comes and answers its length and SHA-256 as JSON.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SEEN: Counter[str] = Counter()
CONDITIONS: dict[str, str] = {}
LOCK = threading.Lock()


def pattern(size: int) -> bytes:
    """``size`` bytes in which every byte value appears, the same every time."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        if url.path == "/_seen":
            with LOCK:
                seen = {"count": SEEN[query["path"]], "if_none_match": CONDITIONS.get(query["path"])}
            self.answer(200, json.dumps(seen).encode(), {"Cache-Control": "no-store"})
            return
        with LOCK:
            SEEN[url.path] += 1
            count = SEEN[url.path]
            CONDITIONS[url.path] = self.headers.get("If-None-Match") or ""
        if url.path.startswith("/bytes/"):
            body = pattern(int(query.get("size", "1000")))
            self.answer(200, body, {"Cache-Control": "max-age=60", "ETag": '"bytes"', "Content-Type": "application/x"})
        elif url.path.startswith("/slow/"):
            time.sleep(float(query.get("delay", "1")))
            self.answer(200, f"slow {count}".encode(), {"Cache-Control": "max-age=60"})
        elif url.path.startswith("/etag/"):
            if self.headers.get("If-None-Match") == '"v1"':
                self.answer(304, b"", {"ETag": '"v1"', "X-Version": "2", "Cache-Control": "max-age=60"})
            else:
                self.answer(200, b"version one", {"ETag": '"v1"', "X-Version": "1", "Cache-Control": "max-age=1"})
        elif url.path.startswith("/private/"):
            time.sleep(0.3)
            body = (self.headers.get("Authorization") or "").encode()
            self.answer(200, body, {"Cache-Control": "private, max-age=60"})
        elif url.path.startswith("/vary/"):
            body = (self.headers.get("Accept-Language") or "").encode()
            self.answer(200, body, {"Cache-Control": "max-age=60", "Vary": "Accept-Language"})
        elif url.path.startswith("/flaky/"):
            self.answer(200, f"good {count}".encode(), {"Cache-Control": "max-age=1, stale-if-error=60"})
        else:
            self.answer(404, b"not found\n", {"Content-Type": "text/plain"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        left = length
        while left:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        with LOCK:
            SEEN[urlsplit(self.path).path] += 1
        self.answer(200, json.dumps({"length": length - left, "sha256": digest.hexdigest()}).encode())


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
