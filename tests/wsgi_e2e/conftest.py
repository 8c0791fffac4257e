"""Real processes for the end-to-end suite: ``offload serve`` and ``offload worker`` on a SQLite file.

Every process a test starts is tracked and killed (with its whole process
group) when the test ends, whatever happened. Nothing here sleeps for a fixed
time: :func:`wait_for` polls a condition until a generous deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests.servers import free_port, wait_for

# The apps are imported by the processes that serve them, not collected as tests.
collect_ignore = ["apps"]

ROOT = Path(__file__).resolve().parents[2]
PLAIN = "tests.wsgi_e2e.apps.plain:application"

#: Headers the HTTP server (and offload, on the way out: Age, Cache-Status) adds around the app's own.
SERVER_HEADERS = frozenset({"server", "date", "connection", "transfer-encoding", "keep-alive", "age", "cache-status"})


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def app_headers(self) -> list[tuple[str, str]]:
        """The headers without those the HTTP server adds itself."""
        return [(key, value) for key, value in self.headers if key.lower() not in SERVER_HEADERS]


def http_request(
    port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> Response:
    """One HTTP request on a fresh connection to 127.0.0.1:port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        answer = connection.getresponse()
        data = answer.read()
        return Response(answer.status, answer.getheaders(), data)
    finally:
        connection.close()


def raw_http(port: int, request: bytes) -> Response:
    """Send bytes as they are (for requests an HTTP library refuses to build) and parse the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        raise AssertionError(f"not an HTTP answer: {data[:200]!r}")
    status = int(lines[0].split()[1])
    headers = [(name, value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])]
    if any(name.lower() == "transfer-encoding" and "chunked" in value for name, value in headers):
        body = _dechunk(body)
    return Response(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2 :]
    return b"".join(out)


@dataclass
class Stack:
    """One test's processes, files and environment around one SQLite backend."""

    directory: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    _outputs: dict[int, tuple[Path, IO[bytes]]] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.directory / "offload.sqlite3"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def log_path(self) -> Path:
        return Path(self.env["OFFLOAD_E2E_LOG"])

    # -- processes ---------------------------------------------------------------

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        """Start ``python -m offload ARGS`` in its own process group, its output in ``<name>.log``."""
        path = self.directory / f"{name}.log"
        output = path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "offload", *args],
            cwd=self.directory,
            env={**self.env, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        self._outputs[process.pid] = (path, output)
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        path, _ = self._outputs[process.pid]
        return path.read_text("utf-8", "replace")

    def serve(
        self, app: str = PLAIN, *, workers: int = 1, web_processes: int = 1, url: str | None = None, **env: str
    ) -> Server:
        """``offload serve`` on a free port; returns once the port accepts connections."""
        port = free_port()
        args = ["serve", app, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
        args += ["--web-processes", str(web_processes), "--url", url or self.db_url]
        process = self.start(f"serve-{port}", args, **env)
        server = Server(self, process, port)
        wait_for(server.accepting, 60, f"the server on port {port} to listen")
        return server

    def worker(self, app: str = PLAIN, *, url: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        args = ["worker", app, "--url", url or self.db_url]
        return self.start(f"worker-{len(self.processes)}", args, **env)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``python -m offload ARGS`` to its end and capture its output."""
        return subprocess.run(
            [sys.executable, "-m", "offload", *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, int]:
        """``offload status --json``: the counts of every namespace of the store, added up."""
        done = self.cli("status", "--json", "--url", self.db_url)
        assert done.returncode == 0, done.stderr
        namespaces: dict[str, dict[str, int]] = json.loads(done.stdout)
        totals = {"queued": 0, "running": 0, "dead": 0, "cached": 0, "failed": 0}
        for counts in namespaces.values():
            for name, value in counts.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def idle(self) -> bool:
        """Whether no job is queued or running."""
        counts = self.status()
        return counts["queued"] == 0 and counts["running"] == 0

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
            else:  # its own children may outlive it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
        for _, output in self._outputs.values():
            output.close()

    # -- what the handlers did -------------------------------------------------------

    def events(self, event: str = "start", method: str = "GET", target: str | None = None) -> list[int]:
        """The pids of the processes that logged ``event`` for ``method target`` (``/path?query``)."""
        try:
            lines = self.log_path.read_text("utf-8").splitlines()
        except FileNotFoundError:
            return []
        pids = []
        for line in lines:
            kind, pid, verb, seen = line.split(" ", 3)
            if kind == event and verb == method and (target is None or seen == target):
                pids.append(int(pid))
        return pids

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the backend's SQLite file, committed at once."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=30, isolation_level=None)) as conn:
            return conn.execute(statement, params).fetchall()


@dataclass
class Server:
    stack: Stack
    process: subprocess.Popen[bytes]
    port: int

    def accepting(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited:\n{self.stack.output(self.process)}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def get(self, target: str, headers: dict[str, str] | None = None) -> Response:
        return http_request(self.port, "GET", target, headers)

    def request(
        self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> Response:
        return http_request(self.port, method, target, headers, body)

    def raw(self, request: bytes) -> Response:
        return raw_http(self.port, request)

    def poll(self, target: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> Response:
        """GET ``target`` until the answer is no longer 202; return that answer."""

        def answered() -> Response | None:
            response = self.get(target, headers)
            return None if response.status == 202 else response

        return wait_for(answered, timeout, f"GET {target} to stop answering 202")

    def log(self) -> str:
        return self.stack.output(self.process)


@contextlib.contextmanager
def running_stack(directory: Path) -> Iterator[Stack]:
    """A :class:`Stack` in ``directory`` whose processes are all killed on the way out."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OFFLOAD_", "PYTEST_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        OFFLOAD_E2E_LOG=str(directory / "executions.log"),
        XDG_RUNTIME_DIR=str(directory),  # gunicorn's control socket: one per stack, not one per machine
    )
    result = Stack(directory, env)
    try:
        yield result
    finally:
        result.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A directory, an environment and a process tracker for one test."""
    with running_stack(tmp_path) as result:
        yield result
