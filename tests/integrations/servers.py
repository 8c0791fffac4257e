"""Servers the tests start themselves: a throwaway memcached from the installed binary."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        return False
    return True


class MemcachedServer:
    """A memcached process of our own on a free port, which a test may stop and start again."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"memcached://{self.address}"

    def start(self) -> None:
        command = [self.binary, "-p", str(self.port), "-U", "0", "-l", "127.0.0.1", "-m", "64"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # memcached refuses to run as root without a user
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not reachable("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"memcached did not start: {error}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None


@contextmanager
def throwaway_memcached(unavailable: Callable[[str], NoReturn]) -> Iterator[MemcachedServer]:
    """A running throwaway memcached (``OFFLOAD_TEST_MEMCACHED`` names the binary, else ``PATH``)."""
    binary = os.environ.get("OFFLOAD_TEST_MEMCACHED") or shutil.which("memcached")
    if not binary:
        unavailable("memcached is not installed (apt-get install memcached)")
    server = MemcachedServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()
