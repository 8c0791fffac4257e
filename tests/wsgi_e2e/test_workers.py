"""Worker processes that fail, die, outlive their lease or are told to stop, with a real server in front."""

from __future__ import annotations

import os
import signal
import subprocess

from offload.settings import Settings
from tests.wsgi_e2e.conftest import Stack, wait_for


def started_by(stack: Stack, target: str, count: int = 1) -> list[int]:
    """Wait until the handler for ``target`` has started ``count`` times; return the pids that ran it."""

    def pids() -> list[int] | None:
        found = stack.events(target=target)
        return found if len(found) >= count else None

    return wait_for(pids, 60, f"{target} to start {count} time(s)")


def exit_code(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    return process.wait(timeout)


def test_a_handler_that_always_raises_turns_from_202_to_a_5xx_with_default_settings(stack: Stack) -> None:
    server = stack.serve(workers=1)  # no option set: the defaults are what is promised
    assert server.get("/boom").status == 202
    failed = server.poll("/boom", timeout=60)
    assert 500 <= failed.status <= 599
    assert failed.header("Retry-After") is not None, "clients are told when to ask again"
    assert b"Traceback" not in failed.body
    assert len(stack.events("raise", target="/boom?")) == Settings().max_attempts, "retried a bounded number of times"
    assert server.get("/boom").status == failed.status, "the error answer is served for a while, not recomputed"
    assert stack.status()["failed"] == 1


def test_a_killed_worker_job_runs_again_after_the_lease(stack: Stack) -> None:
    server = stack.serve(workers=0, OFFLOAD_E2E_LEASE="2")
    first = stack.worker(OFFLOAD_E2E_LEASE="2")
    target = "/slow?kill=1&s=3"
    assert server.get(target).status == 202
    assert started_by(stack, target) == [first.pid]
    os.kill(first.pid, signal.SIGKILL)
    assert exit_code(first) == -signal.SIGKILL
    assert server.get(target).status == 202

    second = stack.worker(OFFLOAD_E2E_LEASE="2")
    hit = server.poll(target, timeout=60)
    assert (hit.status, hit.body) == (200, b"GET /slow?kill=1&s=3")
    assert stack.events(target=target) == [first.pid, second.pid]
    assert stack.events("end", target=target) == [second.pid]


def test_a_job_longer_than_the_lease_is_never_started_twice(stack: Stack) -> None:
    server = stack.serve(workers=0, OFFLOAD_E2E_LEASE="1")
    workers = [stack.worker(OFFLOAD_E2E_LEASE="1") for _ in range(2)]
    target = "/slow?heartbeat=1&s=4"
    assert server.get(target).status == 202
    hit = server.poll(target, timeout=60)
    assert (hit.status, hit.body) == (200, b"GET /slow?heartbeat=1&s=4")
    wait_for(stack.idle, what="the queue to be empty")
    assert len(stack.events(target=target)) == 1, "the heartbeat kept the lease: one execution"
    assert all(worker.poll() is None for worker in workers)


def test_sigterm_lets_the_running_job_finish_and_the_worker_exit_0(stack: Stack) -> None:
    server = stack.serve(workers=0)
    worker = stack.worker()
    target = "/slow?s=3&term=1"
    assert server.get(target).status == 202
    started_by(stack, target)
    assert server.get("/hello?queued=behind").status == 202

    worker.send_signal(signal.SIGTERM)
    assert exit_code(worker) == 0
    assert stack.events("end", target=target) == [worker.pid], "the job ran to its end"
    hit = server.get(target)
    assert (hit.status, hit.body) == (200, b"GET /slow?s=3&term=1"), "its answer was stored"
    assert stack.events(target="/hello?queued=behind") == [], "no new job was claimed after SIGTERM"
    assert stack.status()["queued"] == 1


def test_a_second_sigterm_hands_the_running_job_back(stack: Stack) -> None:
    server = stack.serve(workers=0)
    first = stack.worker()
    target = "/slow?handback=1&s=5"
    assert server.get(target).status == 202
    started_by(stack, target)

    def stopped() -> bool:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)  # again, until the second one has been seen
            return False
        return True

    wait_for(stopped, 60, "the worker to stop")
    assert first.returncode != 0, "a job handed back is not a clean finish"
    assert stack.events("end", target=target) == [], "the job was abandoned, not finished"
    leases = stack.sql("SELECT leased_until FROM offload_jobs")
    assert leases == [(None,)], "the job is back in the queue at once, not after its lease"

    second = stack.worker()
    hit = server.poll(target, timeout=60)
    assert (hit.status, hit.body) == (200, b"GET /slow?handback=1&s=5")
    assert stack.events(target=target) == [first.pid, second.pid]
    assert stack.events("end", target=target) == [second.pid]


def test_sigterm_to_offload_serve_lets_its_worker_finish_the_running_job(stack: Stack) -> None:
    server = stack.serve(workers=1)
    target = "/slow?s=3&serve-term=1"
    assert server.get(target).status == 202
    (worker_pid,) = started_by(stack, target)
    server.process.send_signal(signal.SIGTERM)
    assert exit_code(server.process) == 0
    assert stack.events("end", target=target) == [worker_pid], "the job ran to its end"
    expected = {"queued": 0, "running": 0, "dead": 0, "cached": 1, "failed": 0}
    assert stack.status() == expected, "and its answer was stored"
