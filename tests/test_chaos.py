"""The chaos harness's short mode, once per backend: every invariant holds (exit 0).

Each run starts real web processes, workers and a throwaway backend server,
and kills, stops and floods them (see ``docs/RELIABILITY.md``). A backend
whose server is not installed is skipped, unless ``OFFLOAD_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import os
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
    done = subprocess.run(
        [sys.executable, "-m", "offload_bench.chaos", "--mode", "short", "--backend", backend],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
