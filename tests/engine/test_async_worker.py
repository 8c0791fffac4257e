"""The async engine in a real ``offload worker`` process, on real Redis and SQLite.

The app's handler writes ``start`` and ``end`` lines with the process and
thread that ran it (tests/engine/apps.py), so each test reads what really
happened: how many jobs overlapped, on which threads, which ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from offload import WSGIMiddleware
from offload.backends import Queue
from offload.records import StoredRequest
from offload.worker import EXIT_STUCK

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    event: str
    target: str
    at: float
    pid: int
    thread: int


@dataclass
class Engine:
    """A backend, the handler's log, and the processes of one test."""

    url: str
    log: Path
    processes: list[subprocess.Popen[bytes]]

    def middleware(self) -> WSGIMiddleware:
        return WSGIMiddleware(
            lambda environ, start: [], url=self.url, worker_threads=0, max_queued=None, namespace="engine"
        )

    def enqueue(self, targets: list[str]) -> None:
        middleware = self.middleware()
        try:
            for target in targets:
                assert get(middleware, target)[0] == 202
        finally:
            close(middleware)

    def answers(self, targets: list[str]) -> dict[str, tuple[int, bytes]]:
        middleware = self.middleware()
        try:
            return {target: get(middleware, target) for target in targets}
        finally:
            close(middleware)

    def queue_stats(self) -> dict[str, int]:
        middleware = self.middleware()
        try:
            queue: Queue = middleware.offloader.queue
            return queue.stats()
        finally:
            close(middleware)

    def worker(self, app: str, *args: str, capture: bool = False, **env: str) -> subprocess.Popen[bytes]:
        """Start ``offload worker`` for an app of tests/engine/apps.py; ``capture`` keeps its stderr to read."""
        command = [sys.executable, "-m", "offload", "worker", f"tests.engine.apps:{app}", "--log-level", "warning"]
        environment = {**os.environ, "OFFLOAD_URL": self.url, "ENGINE_LOG": str(self.log), **env}
        stderr = subprocess.PIPE if capture else None
        process = subprocess.Popen([*command, *args], cwd=ROOT, env=environment, stderr=stderr)
        self.processes.append(process)
        return process

    def runs(self, event: str | None = None) -> list[Run]:
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            kind, target, at, pid, thread = line.split()
            if event is None or kind == event:
                found.append(Run(kind, target, float(at), int(pid), int(thread)))
        return found


def get(middleware: WSGIMiddleware, target: str) -> tuple[int, bytes]:
    path, _, query = target.partition("?")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1"}
    environ.update({"SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http"})
    statuses: list[str] = []
    body = b"".join(middleware(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return int(statuses[0][:3]), body


def close(middleware: WSGIMiddleware) -> None:
    middleware.offloader.cache.close()
    middleware.offloader.queue.close()


def wait_for(condition: Callable[[], Any], timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def most_at_once(runs: list[Run]) -> int:
    """The most jobs that were between their start and their end at the same moment."""
    edges = sorted([(run.at, 1 if run.event == "start" else -1) for run in runs], key=lambda edge: (edge[0], edge[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@contextmanager
def engine_on(url: str, directory: Path) -> Iterator[Engine]:
    """An engine on ``url``; its worker processes are killed at the end if still running."""
    found = Engine(url, directory / "runs.log", [])
    yield found
    for process in found.processes:
        if process.poll() is None:
            process.kill()
        process.wait(30)


@pytest.fixture(params=["redis", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with engine_on(request.getfixturevalue(f"{request.param}_url"), tmp_path) as found:
        yield found


@pytest.fixture
def redis_engine(redis_url: str, tmp_path: Path) -> Iterator[Engine]:
    with engine_on(redis_url, tmp_path) as found:
        yield found


def test_an_asgi_app_runs_hundreds_of_jobs_at_once_on_one_event_loop(engine: Engine) -> None:
    targets = [f"/sleep/{number}?s=1" for number in range(300)]
    engine.enqueue(targets)
    worker = engine.worker("asgi", "--concurrency", "300", "--burst")
    assert worker.wait(120) == 0
    starts, ends = engine.runs("start"), engine.runs("end")
    assert sorted(run.target for run in ends) == sorted(targets)
    assert len({(run.pid, run.thread) for run in starts}) == 1, "every job ran on the worker's one loop thread"
    assert most_at_once(engine.runs()) >= 150, "the jobs' one-second waits overlapped"
    answers = engine.answers(targets[:5])
    assert all(answers[target] == (200, target.encode()) for target in targets[:5])
    assert engine.queue_stats() == {"queued": 0, "running": 0, "dead": 0}


def test_a_job_past_its_timeout_is_cancelled_and_a_504_is_stored(redis_engine: Engine) -> None:
    engine = redis_engine
    engine.enqueue(["/hang?hang=1", "/quick?s=0"])
    worker = engine.worker("asgi", "--concurrency", "10", "--burst", ENGINE_JOB_TIMEOUT="2")
    assert worker.wait(60) == 0
    assert [run.target for run in engine.runs("end")] == ["/quick?s=0"]
    answers = engine.answers(["/hang?hang=1", "/quick?s=0"])
    assert answers["/hang?hang=1"][0] == 504
    assert b"job_timeout" in answers["/hang?hang=1"][1] or b"ran past" in answers["/hang?hang=1"][1]
    assert answers["/quick?s=0"] == (200, b"/quick?s=0")
    assert len(engine.runs("start")) == 2, "the timed-out job was not run again"


def test_jobs_that_ignore_their_cancellation_free_their_slot_then_stop_the_worker(redis_engine: Engine) -> None:
    """As the thread engine with threads stuck in the app: a 504 each, the slot freed, and past
    --concurrency stuck jobs the worker exits with EXIT_STUCK at once, not when they end (60 s)."""
    engine = redis_engine
    targets = ["/stubborn/1?stubborn=60", "/stubborn/2?stubborn=60", "/stubborn/3?stubborn=60"]
    engine.enqueue(targets)
    worker = engine.worker("asgi", "--concurrency", "1", "--burst", ENGINE_JOB_TIMEOUT="1")
    assert worker.wait(45) == EXIT_STUCK
    assert len(engine.runs("start")) == 2, "the first stuck job freed the slot; the second one stopped the worker"
    assert {run.target for run in engine.runs("ignored")} == set(targets[:2]), "each ignored its cancellation"
    answers = engine.answers(targets[:2])
    assert [status for status, _ in answers.values()] == [504, 504]


def test_a_failing_job_is_retried_then_its_failure_stored(redis_engine: Engine) -> None:
    engine = redis_engine
    engine.enqueue(["/boom?s=oops"])  # float("oops") raises in the handler
    worker = engine.worker("asgi", "--concurrency", "5", "--burst", ENGINE_RETRY_BACKOFF="0.1")
    assert worker.wait(60) == 0
    assert len(engine.runs("start")) == 3, "tried max_attempts times"
    status, _ = engine.answers(["/boom?s=oops"])["/boom?s=oops"]
    assert status == 500


def test_sigterm_lets_the_running_jobs_finish(engine: Engine) -> None:
    targets = [f"/long/{number}?s=3" for number in range(20)]
    engine.enqueue(targets)
    worker = engine.worker("asgi", "--concurrency", "50")
    wait_for(lambda: len(engine.runs("start")) == 20, what="the jobs to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert sorted(run.target for run in engine.runs("end")) == sorted(targets), "each ran to its end"
    assert all(status == 200 for status, _ in engine.answers(targets).values()), "and its answer was stored"
    assert engine.queue_stats() == {"queued": 0, "running": 0, "dead": 0}


def test_a_second_sigterm_hands_the_running_jobs_back(redis_engine: Engine) -> None:
    engine = redis_engine
    targets = [f"/long/{number}?s=60" for number in range(5)]
    engine.enqueue(targets)
    worker = engine.worker("asgi", "--concurrency", "50")
    wait_for(lambda: len(engine.runs("start")) == 5, what="the jobs to start")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 1
    assert engine.runs("end") == []
    assert engine.queue_stats() == {"queued": 5, "running": 0, "dead": 0}, "handed back, claimable at once"
    again = engine.worker("asgi", "--concurrency", "50")
    wait_for(lambda: len(engine.runs("start")) == 10, what="another worker to take the jobs")
    again.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # two signals sent at once may arrive as one
    again.send_signal(signal.SIGTERM)
    assert again.wait(30) == 1


def test_jobs_longer_than_the_lease_keep_it_through_the_batched_heartbeat(redis_engine: Engine) -> None:
    engine = redis_engine
    targets = [f"/long/{number}?s=4" for number in range(30)]
    engine.enqueue(targets)
    env = {"ENGINE_LEASE": "1.5"}
    workers = [engine.worker("asgi", "--concurrency", "30", "--burst", **env) for _ in range(2)]
    for worker in workers:
        assert worker.wait(90) == 0
    starts = engine.runs("start")
    assert sorted(run.target for run in starts) == sorted(targets), "each job started once: no lease lapsed"
    assert engine.queue_stats() == {"queued": 0, "running": 0, "dead": 0}


def test_a_wsgi_app_still_runs_on_threads(engine: Engine) -> None:
    targets = [f"/wsgi/{number}?s=1" for number in range(8)]
    engine.enqueue(targets)
    worker = engine.worker("wsgi", "--concurrency", "8", "--burst")
    assert worker.wait(60) == 0
    starts = engine.runs("start")
    assert sorted(run.target for run in starts) == sorted(targets)
    assert len({run.thread for run in starts}) > 1, "jobs ran on several threads"
    assert most_at_once(engine.runs()) > 1
    refused = engine.worker("wsgi", "--concurrency", "500", capture=True)
    _, stderr = refused.communicate(timeout=60)
    assert refused.returncode == 2
    assert b"at most 256 threads" in stderr
    refused = engine.worker("wsgi", "--engine", "async", capture=True)
    _, stderr = refused.communicate(timeout=60)
    assert refused.returncode == 2
    assert b"ASGI apps only" in stderr


@pytest.fixture(params=["redis", "postgres", "sqlite"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with engine_on(request.getfixturevalue(f"{request.param}_url"), tmp_path) as found:
        yield found


def test_each_job_of_one_claim_ends_as_it_would_alone(any_engine: Engine) -> None:
    """One claim, begun and stored together: a duplicate, a corrupt job and a dead letter end as on their own."""
    engine = any_engine
    targets = ["/plain?s=0", "/elsewhere?s=0", "/dying?s=0"]
    engine.enqueue(targets)
    middleware = engine.middleware()
    offloader, queue = middleware.offloader, middleware.offloader.queue
    try:
        jobs = {StoredRequest.decode(job.payload).target.full_path.decode(): job for job in queue.waiting()}
        plain, elsewhere, dying = jobs["/plain"], jobs["/elsewhere"], jobs["/dying"]
        queue.push(plain.key, plain.payload)  # a copy of /plain, in the same claim: its key is then running
        queue.push("engine:r:corrupt", b"not a request")
        assert offloader.cache.add(offloader.running_key(elsewhere.key), b"another worker", 60)
        for _ in range(offloader.settings.max_deliveries):  # /dying's worker died each time it ran
            offloader.cache.incr(offloader.attempts_key(dying.key), 600)
    finally:
        close(middleware)
    worker = engine.worker("asgi", "--concurrency", "10", "--burst")
    assert worker.wait(60) == 0
    assert [run.target for run in engine.runs("start")] == ["/plain?s=0"], "only /plain ran, once"
    answers = engine.answers(["/plain?s=0", "/dying?s=0"])
    assert answers["/plain?s=0"] == (200, b"/plain?s=0")
    assert answers["/dying?s=0"][0] == 500 and b"started 5 times" in answers["/dying?s=0"][1]
    # The copy of /plain and /elsewhere are left leased (they come back after the lease), /dying is a dead
    # letter, the corrupt job is dropped.
    assert engine.queue_stats() == {"queued": 0, "running": 2, "dead": 1}


def test_a_graceful_stop_stores_the_answer_of_every_job_that_started(any_engine: Engine) -> None:
    engine = any_engine
    targets = [f"/many/{number}?s=0.5" for number in range(300)]
    engine.enqueue(targets)
    worker = engine.worker("asgi", "--concurrency", "100")
    wait_for(lambda: len(engine.runs("start")) >= 100, what="the jobs to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    started = sorted(run.target for run in engine.runs("start"))
    assert sorted(run.target for run in engine.runs("end")) == started, "each job that started ran to its end"
    answers = engine.answers(started)
    assert all(answers[target] == (200, target.encode()) for target in started), "and its answer was stored"
    assert engine.queue_stats() == {"queued": 300 - len(started), "running": 0, "dead": 0}
