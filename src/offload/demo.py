"""``offload demo``: a bundled app with a slow endpoint, served with a worker, and the flow shown live.

The app is plain WSGI (standard library only), wrapped in offload's
middleware: ``/report`` takes ``OFFLOAD_DEMO_DELAY`` seconds (3 by default)
to compute, ``/`` explains what to try.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from offload.wsgi import WSGIMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


#: Words only the demo's report holds: an answer without them came from another server on the port.
MARK = b"Computed by offload demo worker"


def slow_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The app being offloaded: ``/report`` is slow on purpose."""
    path = environ.get("PATH_INFO", "/")
    if path == "/report":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        name = query.get("name", ["world"])[0]
        time.sleep(float(os.environ.get("OFFLOAD_DEMO_DELAY", "3")))
        body = (
            f"<h1>Report for {escape(name)}</h1><p>{MARK.decode()} process {os.getpid()} "
            f"at {time.strftime('%H:%M:%S')}.</p>\n"
        ).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/":
        body = (
            b"<h1>offload demo</h1><p>GET <a href='/report?name=you'>/report?name=you</a>: the first requests answer "
            b"202 while a worker computes it; then the answer comes from the cache.</p>\n"
        )
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


app = WSGIMiddleware(slow_app, ttl=60)


def run_demo(host: str, port: int, delay: float, keep_serving: bool = True) -> int:
    """Start ``offload serve`` for the demo app, poll it as a client would, and narrate."""
    if port == 0:
        port = _free_port(host)
    workdir = tempfile.mkdtemp(prefix="offload-demo-")
    env = dict(os.environ, OFFLOAD_DEMO_DELAY=str(delay), OFFLOAD_URL=f"sqlite:///{workdir}/offload.sqlite3")
    command = [sys.executable, "-m", "offload", "serve", "offload.demo:app", "--bind", f"{host}:{port}"]
    command += ["--job-workers", "1", "--web-processes", "1", "--log-level", "warning"]
    server = subprocess.Popen(command, env=env)
    base = f"http://{host}:{port}"
    try:
        if not _wait_until_up(base + "/", server, timeout=30):
            print("the server did not start; see the messages above", file=sys.stderr)
            return 1
        url = f"{base}/report?name=demo"
        print(f"offload demo: {url} takes {delay:g}s to compute; a worker process computes it.\n")
        started = time.monotonic()
        while True:
            status, body, elapsed = _get(url)
            since = time.monotonic() - started
            if status == 202:
                took = f"{elapsed * 1000:.1f} ms"
                print(f"  {since:5.1f}s  GET /report?name=demo -> 202 Accepted ({took}): not yet, ask again")
                time.sleep(0.5)
                continue
            if status != 200 or MARK not in body:
                print(f"  {since:5.1f}s  GET /report?name=demo -> {status}: not the demo's answer", file=sys.stderr)
                print(f"something else answers on {base}; try another --bind", file=sys.stderr)
                return 1
            print(
                f"  {since:5.1f}s  GET /report?name=demo -> {status} ({elapsed * 1000:.1f} ms): computed by the worker"
            )
            break
        status, body, elapsed = _get(url)
        print(f"  again   GET /report?name=demo -> {status} from the cache in {elapsed * 1000:.1f} ms\n")
        if not keep_serving:
            return 0 if status == 200 and MARK in body else 1
        print(f"Try it: curl -i '{base}/report?name=you'  or open {base}/ in a browser.  Ctrl-C stops.")
        server.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(35)
        if server.poll() is None:
            server.kill()


def _get(url: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
            status = int(response.status)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, body, time.perf_counter() - started


def _wait_until_up(url: str, server: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=2).close()
            return True
        time.sleep(0.1)
    return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
