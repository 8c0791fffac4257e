"""An operator points Prometheus at offload: every counter moves under real traffic.

One gunicorn server (two web processes) and real worker processes share a
``PROMETHEUS_MULTIPROC_DIR``; the test drives traffic that makes each outcome
and each step of a job happen, then scrapes ``/metrics`` from the web server
(the sum over every process) and from the worker's own ``--metrics-port``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from offload.backends import open_backend
from tests.operations.conftest import OPS_APP, scrape, total
from tests.wsgi_e2e.conftest import Stack, free_port, http_request, wait_for

JOB_COUNTERS = (
    "offload_jobs_queued_total",
    "offload_jobs_started_total",
    "offload_jobs_succeeded_total",
    "offload_jobs_failed_total",
    "offload_jobs_retried_total",
    "offload_jobs_timed_out_total",
    "offload_jobs_dead_lettered_total",
    "offload_jobs_stored_total",
    "offload_lease_expiries_total",
)


def test_every_counter_moves_under_real_traffic(stack: Stack, tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    flag = tmp_path / "crash"
    flag.touch()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "OPS_METRICS": "1",
        "OPS_CRASH_FLAG": str(flag),
        "OPS_MAX_QUEUED": "3",
        "OFFLOAD_URL": stack.db_url,
        "OFFLOAD_LOG_FORMAT": "json",  # offload serve --log-format json, for every process it starts
    }
    server = stack.serve(OPS_APP, workers=0, web_processes=2, **env)

    def metrics(port: int = server.port) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        answer = http_request(port, "GET", "/metrics")
        assert answer.status == 200
        return scrape(answer.body.decode())

    # No worker yet: misses fill the queue, a repeat collapses, the fourth URL is refused.
    for number in (1, 2, 3):
        assert server.get(f"/report?n={number}").status == 202
    assert server.get("/report?n=1").status == 202
    assert server.get("/report?n=4").status == 503
    assert server.get("/down/report").status == 503  # its backend cannot be reached
    assert server.get("/pass/report").status == 200  # the app answers by itself
    assert server.request("POST", "/report", body=b"x").status == 200
    assert server.get("/report?" + "x" * 3000).status == 414
    waiting = metrics()
    assert total(waiting, "offload_queue_depth", namespace="ops") == 3
    assert total(waiting, "offload_queue_oldest_age_seconds", namespace="ops") > 0
    assert total(waiting, "offload_backend_up", namespace="ops") == 1
    assert total(waiting, "offload_backend_up", namespace="ops-down") == 0

    port = free_port()
    worker = stack.start("worker-a", ["worker", OPS_APP, "--concurrency", "2", "--metrics-port", str(port)], **env)
    hit = server.poll("/report?n=1")
    assert hit.status == 200
    etag = hit.header("ETag")
    assert etag and server.get("/report?n=1", {"If-None-Match": etag}).status == 304
    assert server.poll("/fresh").status == 200
    wait_for(lambda: "stale" in (server.get("/fresh").header("Cache-Status") or ""), 10, "a stale serve")
    assert server.poll("/boom").status == 500
    assert server.poll("/slow?s=4").status == 504

    # A worker that stalls past its lease (a pause, a frozen VM) loses the job to another claimer. This
    # one has a long job_timeout, so that its watchdog does not take the stalled job for a stuck one.
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    stalling = stack.start("worker-c", ["worker", OPS_APP], **{**env, "OPS_JOB_TIMEOUT": "120"})
    queue = open_backend(stack.db_url, "ops").queue
    assert queue is not None
    assert server.get("/slow?s=2").status == 202
    wait_for(lambda: queue.running(), 30, "the worker to run /slow")
    os.kill(stalling.pid, signal.SIGSTOP)
    try:
        stolen = wait_for(lambda: queue.claim(lease=60, wait=0.2), 20, "the lease to run out")
    finally:
        os.kill(stalling.pid, signal.SIGCONT)
    wait_for(lambda: total(metrics(), "offload_lease_expiries_total", namespace="ops") >= 1, 20, "a lost lease")
    queue.ack(stolen)

    # A job that kills its worker (max_deliveries=1): the next worker keeps it as a dead letter.
    assert server.get("/crash").status == 202
    wait_for(lambda: stalling.poll() is not None, 30, "the job to kill its worker")
    other_port = free_port()
    stack.start("worker-b", ["worker", OPS_APP, "--metrics-port", f"127.0.0.1:{other_port}"], **env)
    assert server.poll("/crash").status == 500

    seen = metrics()
    for outcome in ("hit", "stale", "not_modified", "miss", "collapsed", "refused", "bypass"):
        assert total(seen, "offload_requests_total", namespace="ops", outcome=outcome) >= 1, outcome
    assert total(seen, "offload_requests_total", namespace="ops-down", outcome="outage") == 1
    assert total(seen, "offload_requests_total", outcome="limited") == 0  # counted by per-client admission
    assert total(seen, "offload_passes_total", namespace="ops-pass", reason="outage") == 1
    assert total(seen, "offload_passes_total", namespace="ops", reason="method") == 1
    for counter in JOB_COUNTERS:
        assert total(seen, counter, namespace="ops") >= 1, counter
    assert total(seen, "offload_jobs_failed_total", pattern="boom") == 2  # max_attempts=2
    assert total(seen, "offload_jobs_retried_total", pattern="boom") == 1
    assert total(seen, "offload_jobs_dead_lettered_total", pattern="crash") == 1
    assert total(seen, "offload_requests_total", pattern="reports", outcome="miss") == 3
    assert total(seen, "offload_job_duration_seconds_count", pattern="reports") >= 3
    assert total(seen, "offload_fill_seconds_count", namespace="ops") >= 3
    assert total(seen, "offload_dead_letters", namespace="ops") == 1
    assert not any("report?" in labels for (_, label_set) in seen for labels in map(str, label_set))

    # Every process logs one JSON line per job, per refusal and per outage.
    logged = [json.loads(line) for line in stack.output(server.process).splitlines() if line.startswith("{")]
    told = {line["event"] for line in logged if line["logger"] == "offload.events"}
    assert {"request.refused", "outage.started"} <= told, told
    jobs = [json.loads(line) for line in stack.output(worker).splitlines() if '"job.done"' in line]
    assert {"succeeded", "failed", "timed-out"} <= {line["outcome"] for line in jobs}
    assert all(line["ts"] and line["key"] and line["worker"] for line in jobs)

    # A worker's own port serves the same sums, and the gauges read from the backend.
    from_worker = metrics(other_port)
    assert total(from_worker, "offload_jobs_dead_lettered_total", namespace="ops") == 1
    assert total(from_worker, "offload_queue_depth", namespace="ops") == 0
