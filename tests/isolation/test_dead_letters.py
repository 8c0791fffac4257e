"""A job that kills its worker becomes a dead letter, through real servers and real workers.

In a module of its own, so that it has a deployment of its own: each time the
job runs it kills the worker process, and with it any other job that process
was running.
"""

from __future__ import annotations

import json

from tests.deployments import Site


def test_a_job_that_kills_its_worker_becomes_a_dead_letter(site: Site, run: str) -> None:
    got = site.poll(f"/die?run={run}", timeout=90)
    assert got.status == 500 and b"its worker stopped each time" in got.body
    assert len(site.notes(f"die-{run}")) >= 2, "max_deliveries=2: it was started twice before it was buried"
    status = site.cli("status", "--url", site.url, "--json")
    assert status.returncode == 0, status.stderr
    assert any(counts["dead"] >= 1 for counts in json.loads(status.stdout).values()), status.stdout
