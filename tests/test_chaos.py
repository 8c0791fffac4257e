"""The chaos harness's short mode, once per backend: every invariant holds (exit 0).

Each run starts real web processes, workers and a throwaway backend server,
and kills, stops and floods them (see ``docs/RELIABILITY.md``). A backend
whose server is not installed is skipped, unless ``OFFLOAD_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from offload_bench.servers import BACKENDS, missing

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_short_chaos_run_holds_every_invariant(backend: str) -> None:
    reason = missing(backend)
    if reason:
        if os.environ.get("OFFLOAD_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{backend}: {reason} (OFFLOAD_REQUIRE_SERVERS=1)")
        pytest.skip(reason)
    command = [sys.executable, "-m", "offload_bench.chaos", "--mode", "short", "--backend", backend]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as harness:
        try:
            output, _ = harness.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            harness.send_signal(signal.SIGTERM)  # the harness stops its processes and servers on SIGTERM
            output, _ = harness.communicate(timeout=120)
            pytest.fail(f"the chaos run did not finish in 600s:\n{output[-6000:]}")
    assert harness.returncode == 0, output[-8000:]
