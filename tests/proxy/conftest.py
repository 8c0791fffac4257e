"""Fixtures of the proxy tests: real upstreams in processes of their own, and ``offload proxy`` in front of them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import servers

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Started:
    """A process the tests started, in a process group of its own, with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class Proxy(Started):
    """``offload proxy`` in front of ``upstream``."""

    upstream: Started | None = None
    children: list[int] = field(default_factory=list)

    def server_pid(self) -> int:
        """The process of the HTTP server (uvicorn) the supervisor started."""
        for pid in _children(self.process.pid):
            if b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        raise AssertionError(f"no uvicorn process under {self.process.pid}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OFFLOAD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start(name: str, command: list[str], directory: Path, port: int, ready_path: str = "/") -> Started:
    """Start a server, and wait until it answers ``ready_path`` on ``port``."""
    log = directory / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=environment(), cwd=directory, start_new_session=True
        )
    started = Started(name, process, log, port)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{started.tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    deadline = time.monotonic() + 60
    while not answers():
        if time.monotonic() > deadline:
            started.stop()
            raise AssertionError(f"{name} did not answer on {port} within 60s:\n{started.tail()}")
        time.sleep(0.1)
    return started


def start_upstream(directory: Path, port: int | None = None) -> Started:
    port = port or servers.free_port()
    return start(
        "upstream", [sys.executable, "-m", "tests.proxy.upstream", str(port)], directory, port, "/_seen?path=/"
    )


def start_proxy(directory: Path, upstream: Started, *options: str, name: str = "proxy") -> Proxy:
    port = servers.free_port()
    command = [sys.executable, "-m", "offload", "proxy", "--upstream", upstream.url, "--bind", f"127.0.0.1:{port}"]
    command += ["--url", f"sqlite:///{directory / (name + '.sqlite3')}", "--workers", "1", "--web-processes", "1"]
    command += ["--log-level", "warning", *options]
    ready = "/_seen?path=/" if upstream.name == "upstream" else "/node/echo"
    started = start(name, command, directory, port, ready)
    return Proxy(started.name, started.process, started.log, started.port, upstream)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def upstream(workdir: Path) -> Iterator[Started]:
    started = start_upstream(workdir)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def proxy(workdir: Path, upstream: Started) -> Iterator[Proxy]:
    """``offload proxy`` (one web process, one worker) in front of the Python upstream; 2 s upstream timeout."""
    started = start_proxy(workdir, upstream, "--timeout", "2")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def node_upstream(workdir: Path) -> Iterator[Started]:
    node = shutil.which("node")
    if node is None:
        servers.unavailable("Node.js is not installed (the upstream in another language)")
    port = servers.free_port()
    started = start("node", [node, str(ROOT / "tests" / "proxy" / "node_upstream.js"), str(port)], workdir, port)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def node_proxy(workdir: Path, node_upstream: Started) -> Iterator[Proxy]:
    started = start_proxy(workdir, node_upstream, name="node-proxy")
    yield started
    started.stop()
