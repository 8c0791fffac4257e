"""A real uvicorn server and a real ``offload worker``, each in a process of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Deployment:
    base_url: str
    web: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    client: httpx.Client


@contextmanager
def deployed(spec: str, env: dict[str, str], concurrency: int = 1) -> Iterator[Deployment]:
    """Serve ``spec`` with uvicorn on a free port and run ``offload worker`` for it; stop both after."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    environment = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    web_command = [sys.executable, "-m", "uvicorn", "--fd", str(listener.fileno()), "--log-level", "warning", spec]
    worker_command = [sys.executable, "-m", "offload", "worker", spec, "--concurrency", str(concurrency)]
    web = subprocess.Popen(web_command, cwd=ROOT, env=environment, pass_fds=[listener.fileno()])
    listener.close()  # the server holds its own copy
    worker = subprocess.Popen(worker_command, cwd=ROOT, env=environment)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield Deployment(f"http://127.0.0.1:{port}", web, worker, client)
    finally:
        for process in (worker, web):
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def poll(
    fetch: Callable[[], httpx.Response], until: Callable[[httpx.Response], bool], timeout: float = 90
) -> httpx.Response:
    """Ask again, as a client given 202 does, until ``until`` holds; generous, for busy machines."""
    deadline = time.monotonic() + timeout
    while True:
        response = fetch()
        if until(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def wait_for(condition: Callable[[], bool], timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
