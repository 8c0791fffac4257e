"""Running the full cycle against a stack: requests through the middleware, a real worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integrations import flask_app

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def worker_env(stack: dict[str, str]) -> dict[str, str]:
    """The environment of a worker process: the same stack, and where the app is."""
    env = dict(os.environ)
    env["OFFLOAD_TEST_STACK"] = json.dumps(stack)
    env["OFFLOAD_APP"] = "tests.integrations.flask_app:app"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def get(app: Any, path: str) -> Any:
    with app.test_client() as client:
        return client.get(path)


def concurrent_misses(app: Any, path: str, clients: int = 8) -> list[int]:
    """``clients`` GETs of one URL released at the same instant; their status codes."""
    barrier = threading.Barrier(clients)
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with app.test_client() as client:
            barrier.wait(timeout=30)
            status = client.get(path).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def eventually(check: Callable[[], bool], within: float = 60.0) -> bool:
    """Poll until ``check`` holds: a generous bound for a worker to start, not a speed requirement."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def assert_served_from_cache(app: Any, name: str) -> None:
    """The answer is the handler's, byte for byte, headers included, without running it again."""
    before = flask_app.executions(name)
    response = get(app, f"/report/{name}")
    assert response.status_code == 200
    assert response.get_data() == flask_app.BODY + name.encode()
    assert response.headers.getlist("Link") == ["</a>; rel=a", "</b>; rel=b"]
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert flask_app.executions(name) == before


def run(command: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
