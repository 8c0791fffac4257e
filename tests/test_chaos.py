"""The chaos harness's short mode, once per backend: every invariant holds (exit 0).

Each run starts real web processes, workers and a throwaway backend server,
and kills, stops and floods them (see ``docs/RELIABILITY.md``). A backend
whose server is not installed is skipped, unless ``OFFLOAD_REQUIRE_SERVERS=1``.
On a Redis Cluster of its own, web processes are SIGKILLed mid-request, then
the master holding the cache (and the queue shards it serves) is killed and
its replica promoted, under load.
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
    chaos(backend)


@pytest.mark.slow
def test_web_kills_and_a_failover_on_a_redis_cluster_lose_nothing() -> None:
    output = chaos("redis-cluster", "web-kills,failover")
    assert "redis-cluster web-kills" in output and "redis-cluster failover" in output, output[-4000:]


def chaos(backend: str, scenarios: str = "") -> str:
    """Run the harness's short mode on ``backend`` (its scenarios, or those named); its output."""
    reason = missing(backend)
    if reason:
        if os.environ.get("OFFLOAD_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{backend}: {reason} (OFFLOAD_REQUIRE_SERVERS=1)")
        pytest.skip(reason)
    command = [sys.executable, "-m", "offload_bench.chaos", "--mode", "short", "--backend", backend]
    if scenarios:
        command += ["--scenario", scenarios]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as harness:
        try:
            output, _ = harness.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            harness.send_signal(signal.SIGTERM)  # the harness stops its processes and servers on SIGTERM
            output, _ = harness.communicate(timeout=120)
            pytest.fail(f"the chaos run did not finish in 600s:\n{output[-6000:]}")
    assert harness.returncode == 0, output[-8000:]
    return output
