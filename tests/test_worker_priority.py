"""``offload worker`` lowers its own CPU priority, so jobs yield the CPU to web processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.mark.parametrize(("arguments", "expected"), [([], 10), (["--nice", "3"], 3), (["--nice", "0"], 0)])
def test_worker_priority(tmp_path: Path, arguments: list[str], expected: int) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with running_worker(tmp_path, *arguments) as worker:
        deadline = time.monotonic() + 30
        while os.getpriority(os.PRIO_PROCESS, worker.pid) == base and expected and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            time.sleep(0.05)
        time.sleep(0.2)  # settled
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, base + expected)


ROOT = Path(__file__).resolve().parent.parent


def worker_command(tmp_path: Path, *arguments: str) -> list[str]:
    """``offload worker`` for the behaviour app on a SQLite store of the test's own, with ``arguments``."""
    command = [sys.executable, "-m", "offload", "worker", "tests.behaviour.apps:wsgi_app"]
    return [*command, "--url", f"sqlite:///{tmp_path}/offload.sqlite3", *arguments]


@contextlib.contextmanager
def running_worker(
    tmp_path: Path, *arguments: str, env: dict[str, str] | None = None, preexec_fn: Callable[[], None] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process (see :func:`worker_command`), stopped with SIGTERM at the end."""
    worker = subprocess.Popen(
        worker_command(tmp_path, *arguments),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        if worker.stderr is not None:
            worker.stderr.close()


def refused(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """A worker started with ``arguments`` that is expected to refuse them and exit."""
    return subprocess.run(
        worker_command(tmp_path, *arguments), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def _policy(pid: int | str, thread: str | None = None) -> int:
    """The scheduling class of a process's main thread, or of one of its threads, as the kernel reports it."""
    path = f"/proc/{pid}/task/{thread}/sched" if thread else f"/proc/{pid}/sched"
    with open(path, encoding="ascii") as sched:
        for line in sched:
            if line.startswith("policy"):
                return int(line.rpartition(":")[2])
    raise AssertionError(f"no policy line in {path}")


def _threads_policies(pid: int) -> dict[str, int]:
    return {thread: _policy(pid, thread) for thread in os.listdir(f"/proc/{pid}/task")}


def _wait_policy(pid: int, expected: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while os.sched_getscheduler(pid) != expected and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.05)
    time.sleep(0.5)  # the job threads started, inheriting the class


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
@pytest.mark.parametrize(("policy", "expected"), [("idle", "SCHED_IDLE"), ("batch", "SCHED_BATCH")])
def test_worker_sched(tmp_path: Path, policy: str, expected: str) -> None:
    """--sched puts the worker and every one of its threads in that class; batch keeps the nice value."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with running_worker(tmp_path, "--concurrency", "3", "--sched", policy) as worker:
        _wait_policy(worker.pid, getattr(os, expected), worker)
        policies = _threads_policies(worker.pid)
        assert len(policies) > 1, "the worker runs job threads"
        assert set(policies.values()) == {getattr(os, expected)}, policies
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, base + 10)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_serve_passes_sched_to_its_workers(tmp_path: Path) -> None:
    """OFFLOAD_SCHED reaches the job workers `offload serve` starts; its web processes keep the normal class."""
    with serving(tmp_path, {"OFFLOAD_SCHED": "idle"}) as (serve, workers, server):
        for pid in workers:
            _wait_policy(pid, os.SCHED_IDLE, serve)
            assert set(_threads_policies(pid).values()) == {os.SCHED_IDLE}
        assert all(os.sched_getscheduler(pid) == os.SCHED_OTHER for pid in server)


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], list[int], list[int]]]:
    """`offload serve` with two job workers and one web process: the process, the workers' pids, the server's."""
    command = [sys.executable, "-m", "offload", "serve", "tests.behaviour.apps:wsgi_app", "--bind", "127.0.0.1:0"]
    command += ["--url", f"sqlite:///{tmp_path}/offload.sqlite3", "--job-workers", "2", "--web-processes", "1"]
    serve = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            assert serve.poll() is None, serve.stderr.read().decode() if serve.stderr else ""
            workers = [pid for pid in _children(serve.pid) if b"worker" in _cmdline(pid).split(b"\0")]
            time.sleep(0.1)
        assert len(workers) == 2
        server = [pid for pid in _children(serve.pid) if pid not in workers]
        assert server, "the HTTP server runs"
        yield serve, workers, server
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        if serve.stderr is not None:
            serve.stderr.close()


def test_sched_refused_where_it_cannot_apply(tmp_path: Path) -> None:
    """A class the command does not know is a usage error before the worker starts."""
    done = refused(tmp_path, "--sched", "fifo")
    assert done.returncode == 2
    assert "--sched" in done.stderr and "idle" in done.stderr


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as children:
        return [int(child) for child in children.read().split()]


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_worker_keeps_the_class_it_was_started_in(tmp_path: Path) -> None:
    """Without --sched a worker changes no class: one started in SCHED_BATCH (by chrt, systemd) stays there."""
    env = {key: value for key, value in os.environ.items() if key != "OFFLOAD_SCHED"}

    def batch() -> None:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))

    with running_worker(tmp_path, "--concurrency", "2", env=env, preexec_fn=batch) as worker:
        _wait_niced(worker)
        policies = _threads_policies(worker.pid)
        assert len(policies) > 1, "the worker runs job threads"
        assert set(policies.values()) == {os.SCHED_BATCH}, policies


def _wait_niced(process: subprocess.Popen[bytes]) -> None:
    """Wait until the worker has lowered its priority (it is set up), and a moment more for its job threads."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    deadline = time.monotonic() + 30
    while os.getpriority(os.PRIO_PROCESS, process.pid) == base and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.05)
    time.sleep(0.5)


def _affinities(pid: int) -> dict[str, set[int]]:
    """The CPUs each thread of a process may run on, as the kernel reports them."""
    return {thread: os.sched_getaffinity(int(thread)) for thread in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="2 CPUs")
def test_worker_cpus_keeps_every_thread_on_its_cpus(tmp_path: Path) -> None:
    """--cpus keeps the worker and each of its threads (those started before and after) on the CPUs it names."""
    cpu = max(os.sched_getaffinity(0))
    with running_worker(tmp_path, "--concurrency", "3", "--cpus", str(cpu)) as worker:
        deadline = time.monotonic() + 30
        while os.sched_getaffinity(worker.pid) != {cpu} and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            time.sleep(0.05)
        time.sleep(0.5)  # the job threads started, inheriting it
        affinities = _affinities(worker.pid)
        assert len(affinities) > 3, "the worker runs its job threads"
        assert all(cpus == {cpu} for cpus in affinities.values()), affinities


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity")
@pytest.mark.parametrize("cpus", ["1-x", "3-1", "", str(max(os.sched_getaffinity(0)) + 64)])
def test_worker_cpus_refuses_what_it_cannot_run_on(tmp_path: Path, cpus: str) -> None:
    """A list that is not one, or names a CPU the worker may not use, is a usage error with the reason."""
    done = refused(tmp_path, "--cpus", cpus, "--burst")
    assert done.returncode == 2, done.stderr
    assert "--cpus" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="2 CPUs")
def test_serve_passes_cpus_to_its_workers(tmp_path: Path) -> None:
    """OFFLOAD_CPUS reaches the job workers `offload serve` starts; its web processes keep every CPU."""
    every, cpu = os.sched_getaffinity(0), max(os.sched_getaffinity(0))
    with serving(tmp_path, {"OFFLOAD_CPUS": str(cpu)}) as (_, workers, server):
        deadline = time.monotonic() + 30
        for pid in workers:
            while os.sched_getaffinity(pid) != {cpu} and time.monotonic() < deadline:
                time.sleep(0.05)
            assert os.sched_getaffinity(pid) == {cpu}
        assert all(os.sched_getaffinity(pid) == every for pid in server)
