"""Waiting and flow control through real servers and workers, on WSGI and ASGI, SQLite, Redis and PostgreSQL.

Two web processes serve each deployment, so that per-client limits are seen
to hold across processes (the counters are in the backend).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from tests.deployments import Site, wait_for


def test_prefer_wait_returns_the_answer_in_one_request(site: Site, run: str) -> None:
    started = time.monotonic()
    got = site.get(f"/slow?s=1&run={run}", {"Prefer": "wait=8"})
    elapsed = time.monotonic() - started
    assert (got.status, got.body) == (200, f"done {run}".encode())
    assert elapsed < 6, f"the answer came {elapsed:.1f}s after a 1s job"
    assert got.header("Preference-Applied") == "wait=8"
    assert "Prefer" in (got.header("Vary") or "")


def test_prefer_wait_shorter_than_the_job_gets_the_202_after_the_wait(site: Site, run: str) -> None:
    started = time.monotonic()
    got = site.get(f"/slow?s=6&run={run}", {"Prefer": "wait=1"})
    elapsed = time.monotonic() - started
    assert got.status == 202 and got.header("Retry-After")
    assert 0.9 <= elapsed < 4, f"waited {elapsed:.1f}s for wait=1"


def test_the_status_monitor_walks_queued_running_done(site: Site, run: str) -> None:
    target = f"/slow?run={run}&s=2"  # its parameters in canonical order: the monitor sends to that form
    accepted = site.get(target, {"Prefer": "respond-async"})
    assert accepted.status == 202
    monitor = accepted.header("Location")
    assert monitor is not None and monitor.startswith("/_offload/jobs/")
    assert accepted.header("Link") == f'<{monitor}>; rel="monitor"'
    assert accepted.header("Preference-Applied") == "respond-async"
    states = []

    def done() -> bool:
        got = site.get(monitor)
        if got.status == 303:
            states.append("done")
            assert got.header("Location") == target
            return True
        assert got.status == 200, got.body
        states.append(json.loads(got.body)["state"])
        return False

    wait_for(done, 60, "the monitor to send to the answer")
    assert "running" in states and states[-1] == "done"
    assert site.get(target).body == f"done {run}".encode()
    assert site.get("/_offload/jobs/not-a-key").status == 404


def test_retry_after_follows_the_measured_render_time(site: Site, run: str) -> None:
    target = f"/slow?s=2.5&run={run}&cc={quote('max-age=1, stale-if-error=60')}"
    assert site.poll(target).status == 200
    time.sleep(1.2)  # expired; the answer stays stored within its stale-if-error window, its render time with it
    accepted = site.get(target)
    assert accepted.status == 202
    assert int(accepted.header("Retry-After") or "0") >= 3, "2.5s to compute: ask again in 3s, not 1s"


def test_a_client_over_its_limit_gets_429_and_others_do_not(site: Site, run: str) -> None:
    if time.time() % 60 > 50:  # the counters are per minute: start the burst inside one window
        time.sleep(61 - time.time() % 60)
    statuses = [site.get(f"/slow?run={run}&n={n}", source="127.0.0.2").status for n in range(5)]
    assert statuses[:3] == [202, 202, 202] and statuses[3:] == [429, 429], statuses
    limited = site.get(f"/slow?run={run}&n=9", source="127.0.0.2")
    assert limited.header("Retry-After") and 0 < int(limited.header("Retry-After") or "0") <= 60
    assert site.get(f"/slow?run={run}&n=0", source="127.0.0.2").status in (200, 202), "its known keys are served"
    assert site.get(f"/slow?run={run}&other=1", source="127.0.0.3").status == 202, "another client is not limited"


def test_warming_makes_the_first_request_a_hit(site: Site, run: str) -> None:
    urls = [f"http://127.0.0.1:{site.port}/slow?run={run}&page={n}" for n in range(2)]
    warmed = site.cli("warm", *urls, "--app", f"tests.waiting.site:{site.protocol}_app", "--url", site.url)
    assert warmed.returncode == 0 and "queued 2 jobs" in warmed.stdout, warmed.stdout + warmed.stderr
    again = site.cli("warm", *urls, "--app", f"tests.waiting.site:{site.protocol}_app", "--url", site.url)
    assert "queued 0 jobs" in again.stdout, "warming is deduplicated like misses"

    def both_done() -> bool:
        status = json.loads(site.cli("status", "--url", site.url, "--json").stdout)
        return sum(counts["queued"] + counts["running"] for counts in status.values()) == 0

    wait_for(both_done, 60, "the warmed jobs to run")
    for n in range(2):
        first = site.get(f"/slow?run={run}&page={n}")
        assert (first.status, first.body) == (200, f"done {run}".encode()), "the first request is a hit"
