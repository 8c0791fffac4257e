"""Throwaway Redis and PostgreSQL servers, started from the installed binaries, that a test may stop and start.

``OFFLOAD_TEST_REDIS_SERVER`` names the ``redis-server`` binary and
``OFFLOAD_TEST_POSTGRES_BIN`` the directory holding ``initdb`` and
``postgres``; by default they are looked up on ``PATH`` and, for PostgreSQL,
under ``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root, so as
root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import NoReturn, Protocol

Unavailable = Callable[[str], NoReturn]


class Server(Protocol):
    url: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit code {process.poll()})")
        time.sleep(0.05)


class RedisServer:
    """A redis-server without persistence on a free port: a restart loses its data, as a real crash may."""

    def __init__(self, binary: str, directory: str) -> None:
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", self.directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._ready, self.process, "redis-server")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory on a free port, trust authentication."""

    def __init__(self, bindir: str, directory: str) -> None:
        self.bindir, self.directory = bindir, directory
        self.data = os.path.join(directory, "data")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        initdb = [os.path.join(bindir, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync"]
        subprocess.run(initdb, check=True, user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        command = [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.directory]
        command += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        self.process = subprocess.Popen(command, user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ready, self.process, "postgres")

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends the open sessions
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@contextmanager
def throwaway_redis(unavailable: Unavailable) -> Iterator[RedisServer]:
    binary = os.environ.get("OFFLOAD_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="offload-redis-") as directory:
        server = RedisServer(binary, directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def throwaway_postgres(unavailable: Unavailable) -> Iterator[PostgresServer]:
    bindir = os.environ.get("OFFLOAD_TEST_POSTGRES_BIN")
    if not bindir:
        found = shutil.which("postgres") or shutil.which("initdb")
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(path.split("/")[-2]))
        bindir = os.path.dirname(found) if found else (candidates[-1] if candidates else None)
    if not bindir or not os.path.exists(os.path.join(bindir, "initdb")):
        unavailable("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    directory = tempfile.mkdtemp(prefix="offload-pg-")
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        server = PostgresServer(bindir, directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        with suppress(OSError):
            shutil.rmtree(directory)
