"""Real deployments for the suites that test offload as users run it: ``offload serve`` (gunicorn or
uvicorn plus a worker process) of an app module, on SQLite, Redis or PostgreSQL.

A suite's conftest makes a module-scoped ``site`` fixture with :func:`deployed`:
one deployment per protocol and backend, shared by the tests of a module,
which keep out of each other's way with a ``run`` parameter of their own in
every URL. Each deployment has a directory the app writes its notes to
(``OFFLOAD_ISOLATION_DIR`` in its environment).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import servers
from tests.servers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]

PROTOCOLS = ("wsgi", "asgi")
BACKENDS = ("sqlite", "redis", "postgresql")


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Site:
    """One ``offload serve`` of an app of ``tests/isolation/site.py`` on one backend."""

    protocol: str
    backend: str
    url: str
    directory: Path
    port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def get(self, target: str, headers: dict[str, str] | None = None, source: str | None = None) -> Answer:
        """One GET on a fresh connection, with exactly these headers (Host included when given).

        ``source`` is the loopback address to connect from (``127.0.0.2``...), to be another client.
        """
        return self.request("GET", target, headers, source=source)

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        source: str | None = None,
    ) -> Answer:
        """One request on a fresh connection, with exactly these headers (and ``Host``, unless given)."""
        address = (source, 0) if source else None
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30, source_address=address)
        try:
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if method != "GET":
                sent["Content-Length"] = str(len(body))
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders(body if body else None)
            response = connection.getresponse()
            return Answer(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def poll(self, target: str, headers: dict[str, str] | None = None, timeout: float = 60) -> Answer:
        """GET until the answer is not a 202, as a client told to ask again does."""

        def answered() -> Answer | None:
            got = self.get(target, headers)
            return None if got.status == 202 else got

        return wait_for(answered, timeout, f"GET {target} to stop answering 202")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": python_path(), "OFFLOAD_ISOLATION_DIR": str(self.directory)}
        return subprocess.run(
            [sys.executable, "-m", "offload", *args], capture_output=True, text=True, timeout=60, env=env, check=False
        )

    def notes(self, name: str) -> list[str]:
        path = self.directory / name
        return path.read_text().splitlines() if path.exists() else []


def python_path() -> str:
    """The children's ``PYTHONPATH``: this checkout, then the caller's (which may put its sources first)."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@contextlib.contextmanager
def serving(site: Site, app: str, web_processes: int = 1) -> Iterator[Site]:
    """``offload serve`` the app (``MODULE:ATTR``) on a free port with one worker; stop everything afterwards."""
    site.port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")},
        "PYTHONPATH": python_path(),
        "PYTHONUNBUFFERED": "1",
        "OFFLOAD_ISOLATION_DIR": str(site.directory),
        "XDG_RUNTIME_DIR": str(site.directory),
    }
    command = [sys.executable, "-m", "offload", "serve", app, "--url", site.url]
    command += ["--bind", f"127.0.0.1:{site.port}", "--workers", "1", "--web-processes", str(web_processes)]
    command += ["--concurrency", "2"]
    log_path = site.directory / f"serve-{app.replace(':', '-')}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        command, cwd=site.directory, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    site.processes.append(process)
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(log_path.read_text())
            try:
                socket.create_connection(("127.0.0.1", site.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, 60, f"offload serve {app} to listen")
        yield site
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a child that outlived the supervisor
        log.close()


@contextlib.contextmanager
def backend_url(request: pytest.FixtureRequest, backend: str, directory: Path) -> Iterator[str]:
    """A store of the module's own: a SQLite file, a flushed Redis database, a PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'offload.sqlite3'}"
    elif backend == "redis":
        database = request.getfixturevalue("redis_database")
        with servers.flushed_redis(database) as url:
            yield url
    else:
        database = request.getfixturevalue("postgres_database")
        with servers.postgres_schema(database) as url:
            yield url


@contextlib.contextmanager
def deployed(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    module: str,
    prefix: str = "",
    web_processes: int = 1,
) -> Iterator[Site]:
    """The app ``{module}:{prefix}{protocol}_app`` served on the protocol and backend of ``request.param``."""
    protocol, backend = request.param
    directory = tmp_path_factory.mktemp(f"{protocol}-{backend}")
    with backend_url(request, backend, directory) as url:
        site = Site(protocol, backend, url, directory)
        with serving(site, f"{module}:{prefix}{protocol}_app", web_processes):
            yield site


#: The parameters of a ``site`` fixture. ``OFFLOAD_TEST_MATRIX=full`` runs every protocol on every backend;
#: by default each protocol runs on two backends and each backend under at least one protocol, which keeps
#: the suite within its time: WSGI on SQLite and PostgreSQL, ASGI on SQLite and Redis (whose native
#: coroutines only ASGI uses).
COMBINATIONS = (
    [(protocol, backend) for protocol in PROTOCOLS for backend in BACKENDS]
    if os.environ.get("OFFLOAD_TEST_MATRIX") == "full"
    else [("wsgi", "sqlite"), ("wsgi", "postgresql"), ("asgi", "sqlite"), ("asgi", "redis")]
)


def combination_id(combination: tuple[str, str]) -> str:
    return f"{combination[0]}-{combination[1]}"


@pytest.fixture
def run() -> str:
    """A value of this test's own for the ``run`` parameter, so tests sharing a deployment never meet."""
    return uuid.uuid4().hex[:12]
