"""Real servers for the third-party apps, an HTTP client that sends exactly the headers it is given, and comparisons.

Every process is started in a process group of its own and tracked by a
:class:`Processes`; :meth:`Processes.close` kills each group (the server's
own workers included), so nothing outlives the fixture that started it,
whatever the test did. Nothing here sleeps for a fixed time: readiness and
answers are polled until a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from tests import servers
from tests.servers import wait_for

ROOT = Path(__file__).resolve().parents[2]

#: Headers the HTTP server (gunicorn, uvicorn) adds around the app's own: not part of the app's answer.
SERVER_HEADERS = frozenset({"date", "server", "connection", "keep-alive", "transfer-encoding"})
#: Headers a cache adds on the way out (RFC 9111's Age, RFC 9211's Cache-Status).
CACHE_HEADERS = frozenset({"age", "cache-status"})

#: Backends every wrapped app can run on, and those cheap enough for the scenarios that repeat per app.
ALL_BACKENDS = ("sqlite", "redis", "postgresql")
CHEAP_BACKENDS = ("sqlite", "redis")

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as it came over the wire: status, headers in order (repeats kept), body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def app_headers(self, ignore: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        """The headers the app sent, in order: without those the server adds and those in ``ignore`` (lowercase)."""
        skip = SERVER_HEADERS | ignore
        return [(key, value) for key, value in self.headers if key.lower() not in skip]

    def describe(self) -> str:
        return f"{self.status} {self.headers!r} {self.body[:300]!r}"


def fetch(port: int, target: str, headers: Headers) -> Answer:
    """GET ``target`` from 127.0.0.1:port on a fresh connection, sending ``headers`` and nothing else.

    http.client would add ``Host`` and ``Accept-Encoding: identity`` by itself;
    both are turned off, so both sides of a comparison get byte-identical requests.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, tuple(response.getheaders()), body)
    finally:
        connection.close()


@dataclass
class Server:
    """An HTTP server process listening on ``port``."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, target: str, headers: Headers) -> Answer:
        return fetch(self.port, target, headers)

    def poll(self, target: str, headers: Headers, timeout: float = 30.0) -> Answer:
        """GET ``target`` as a client told "202, ask again" does, until the answer is something else."""

        def answered() -> Answer | None:
            answer = self.get(target, headers)
            return None if answer.status == 202 else answer

        where = f"GET {target} on {self.name} to stop answering 202 (the servers' and workers' logs: {self.log.parent})"
        return wait_for(answered, timeout, where)

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")


@dataclass
class Processes:
    """The processes of one fixture, their logs in ``directory``; :meth:`close` kills every process group."""

    directory: Path
    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path = ROOT
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start ``python ARGS`` in a new process group, its output in ``<name>.log``."""
        log = self.directory / f"{name}.log"
        output = log.open("ab")
        self._logs.append(output)
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(process)
        return process, log

    def serve(
        self, name: str, args: Callable[[int], Sequence[str]], env: Mapping[str, str] | None = None, cwd: Path = ROOT
    ) -> Server:
        """Start a server built by ``args(port)`` on a free port; return once it accepts connections."""
        port = servers.free_port()
        process, log = self.start(name, args(port), env, cwd)
        server = Server(name, port, process, log)

        def accepting() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{server.output()}")
            return servers.reachable("127.0.0.1", port)

        wait_for(accepting, 60, f"{name} to listen on port {port}")
        return server

    def worker(
        self, name: str, app: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        """``offload worker APP``: it finds the backend in the middleware inside the app."""
        process, _ = self.start(name, ["-m", "offload", "worker", app], env, cwd)
        return process

    def close(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
            # SIGKILL the group even when its leader is gone: a server's own workers may outlive it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        for output in self._logs:
            output.close()


@contextlib.contextmanager
def processes(directory: Path, *pythonpath: Path) -> Iterator[Processes]:
    """A :class:`Processes` whose children see this checkout first on their path and no OFFLOAD_ setting of ours."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OFFLOAD_", "PYTEST_"))}
    path = [str(ROOT / "src"), str(ROOT), *map(str, pythonpath), os.environ.get("PYTHONPATH", "")]
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, path)),
        PYTHONUNBUFFERED="1",
        XDG_RUNTIME_DIR=str(directory),  # gunicorn's control socket: one per fixture, not one per machine
    )
    tracker = Processes(directory, env)
    try:
        yield tracker
    finally:
        tracker.close()


@contextlib.contextmanager
def backend_url(name: str, request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """The URL of an offload backend of ``name``, empty now and cleaned up on the way out.

    Redis is the session's locked database (``redis_database``), PostgreSQL a
    schema of its own in ``postgres_database``: the servers and the isolation
    of tests/conftest.py, held for as long as the servers using them run.
    """
    if name == "sqlite":
        yield f"sqlite:///{directory / 'offload.sqlite3'}"
    elif name == "redis":
        with servers.flushed_redis(request.getfixturevalue("redis_database")) as url:
            yield url
    elif name == "postgresql":
        with servers.postgres_schema(request.getfixturevalue("postgres_database")) as url:
            yield url
    else:
        raise ValueError(f"unknown backend {name!r}")


def require(module: str, package: str) -> None:
    """Fail (or skip, without OFFLOAD_REQUIRE_SERVERS=1) when a third-party app is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        servers.unavailable(f"{package} is not installed: pip install -e '.[test]'")


def assert_same_answer(
    bare: Answer, offloaded: Answer, ignore: frozenset[str] = frozenset(), body: Callable[[bytes], bytes] | None = None
) -> None:
    """The answer through offload is the bare app's: status, headers in order, body byte for byte.

    ``ignore`` names (lowercase) headers that differ between two calls of the
    app itself; ``body`` maps both bodies before they are compared, for a
    value that does (each use is explained where it is passed).
    """
    assert offloaded.status == bare.status, f"status: bare {bare.describe()}\noffloaded {offloaded.describe()}"
    expected_headers = bare.app_headers(ignore)
    # On the way out offload adds Age and Cache-Status, and to a 2xx without a validator, its own ETag.
    added = CACHE_HEADERS if any(name.lower() == "etag" for name, _ in expected_headers) else CACHE_HEADERS | {"etag"}
    got_headers = offloaded.app_headers(ignore | added)
    expected, got = (bare.body, offloaded.body) if body is None else (body(bare.body), body(offloaded.body))
    assert got == expected, f"body: {first_difference(expected, got)}"
    assert got_headers == expected_headers, f"headers: bare {expected_headers}\noffloaded {got_headers}"


def first_difference(expected: bytes, got: bytes) -> str:
    """Where two bodies part, with some context: what a failed byte-for-byte comparison needs to say."""
    at = next((n for n, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), min(len(expected), len(got)))
    start = max(0, at - 60)
    return (
        f"{len(expected)} bytes from the bare app, {len(got)} through offload; they part at byte {at}:\n"
        f"bare      ...{expected[start : at + 80]!r}\noffloaded ...{got[start : at + 80]!r}"
    )


def cookie(answer: Answer, name: str) -> str | None:
    """The value ``answer`` sets for the cookie ``name``, if it sets one."""
    for header in answer.all("Set-Cookie"):
        key, _, value = header.partition(";")[0].partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def assert_no_shared_cookie(server: Server, target: str, headers: Headers, name: str, clients: int = 3) -> None:
    """Anonymous clients asking one after the other never get a cookie value another client got.

    The app sets a fresh ``name`` cookie for every client without one; the
    first client must get one. No later client may get the same value, in its
    ``Set-Cookie`` or in its body (a form's hidden field holds it, in some apps),
    even once that answer has been delivered.
    """
    answers = [server.poll(target, headers) for _ in range(clients)]
    first = cookie(answers[0], name)
    assert first, f"the app set no {name} cookie: {answers[0].describe()}"
    seen: list[str] = []
    for number, answer in enumerate(answers, 1):
        value = cookie(answer, name)
        assert value not in seen, f"client {number} got the {name} of an earlier client: {value}"
        for earlier in seen:
            assert earlier.encode() not in answer.body, (
                f"client {number} got the {name} of an earlier client in its body"
            )
        if value:
            seen.append(value)
