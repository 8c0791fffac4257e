"""``offload worker`` lowers its own CPU priority, so jobs yield the CPU to web processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize(("arguments", "expected"), [([], 10), (["--nice", "3"], 3), (["--nice", "0"], 0)])
def test_worker_priority(tmp_path: Path, arguments: list[str], expected: int) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    command = [sys.executable, "-m", "offload", "worker", "tests.behaviour.apps:wsgi_app"]
    command += ["--url", f"sqlite:///{tmp_path}/offload.sqlite3", *arguments]
    root = Path(__file__).resolve().parent.parent
    worker = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while os.getpriority(os.PRIO_PROCESS, worker.pid) == base and expected and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            time.sleep(0.05)
        time.sleep(0.2)  # settled
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, base + expected)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        if worker.stderr is not None:
            worker.stderr.close()
