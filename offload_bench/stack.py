"""One scenario's processes on one backend: web servers, workers, load clients, and what they recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload_bench.client import Spec, Tally
from offload_bench.procs import (
    Child,
    HarnessError,
    ProcessSet,
    accepting,
    child_env,
    free_port,
    leaf_descendants,
    rss_kib,
    wait_for,
)

APP = "offload_bench.app:app"


@dataclass(frozen=True)
class Execution:
    """One run of the app's handler, as the app wrote it down."""

    target: str
    pid: int
    started: float


@dataclass
class Load:
    """The merged tallies of every client process of one load."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    worst_latency: float = 0.0
    hangs: int = 0
    resent: int = 0
    problems: int = 0
    samples: list[str] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    unfinished: set[str] = field(default_factory=set)
    first: dict[str, int] = field(default_factory=dict)

    def add(self, tally: Tally) -> None:
        self.requests += tally.requests
        self.statuses.update({int(code): count for code, count in tally.statuses.items()})
        self.worst_latency = max(self.worst_latency, tally.worst_latency)
        self.hangs += tally.hangs
        self.resent += tally.resent
        self.problems += tally.problems
        self.samples.extend(tally.samples[: max(0, 10 - len(self.samples))])
        self.done.update(tally.done)
        self.unfinished.update(tally.unfinished)
        self.first.update(tally.first)

    def merge(self, other: Load) -> None:
        self.requests += other.requests
        self.statuses.update(other.statuses)
        self.worst_latency = max(self.worst_latency, other.worst_latency)
        self.hangs += other.hangs
        self.resent += other.resent
        self.problems += other.problems
        self.samples.extend(other.samples[: max(0, 10 - len(self.samples))])
        self.done.update(other.done)
        self.unfinished.update(other.unfinished)
        self.first.update(other.first)


class Clients:
    """Load client processes (:mod:`offload_bench.client`) running in the background."""

    def __init__(self, directory: Path, specs: list[Spec], env: dict[str, str]) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.deadline = max(spec.deadline for spec in specs) + max(spec.timeout for spec in specs) + 30
        for n, spec in enumerate(specs):
            process = subprocess.Popen(
                [sys.executable, "-m", "offload_bench.client"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=(directory / f"client-{n}.log").open("ab"),
                env=env,
                start_new_session=True,
            )
            assert process.stdin is not None
            process.stdin.write(json.dumps(spec.__dict__).encode())
            process.stdin.close()
            process.stdin = None  # written and closed: communicate() has nothing to send
            self.processes.append(process)

    def running(self) -> bool:
        return any(process.poll() is None for process in self.processes)

    def wait(self) -> Load:
        load = Load()
        try:
            for process in self.processes:
                try:  # reading while waiting: a tally larger than a pipe's buffer must not block its writer
                    output, _ = process.communicate(timeout=max(1.0, self.deadline - time.time()))
                except subprocess.TimeoutExpired:
                    load.hangs += 1
                    load.problems += 1
                    load.samples.append("a client process did not finish by its deadline")
                    continue
                if process.returncode != 0 or not output:
                    load.problems += 1
                    load.samples.append(f"a client process failed with exit code {process.returncode}")
                    continue
                load.add(Tally(**json.loads(output)))
        finally:
            self.kill()
        return load

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


class Stack:
    """The web servers and workers of one scenario on one backend URL."""

    def __init__(
        self, directory: Path, url: str, *, lease: float, max_queued: int = 10_000, pending_ttl: float = 600
    ) -> None:
        self.directory = directory
        self.url = url
        self.executions_file = directory / "executions.log"
        self.env = child_env(
            {
                "OFFLOAD_URL": url,
                "OFFLOAD_BENCH_LOG": str(self.executions_file),
                "OFFLOAD_BENCH_LEASE": str(lease),
                "OFFLOAD_BENCH_MAX_QUEUED": str(max_queued),
                "OFFLOAD_BENCH_PENDING_TTL": str(pending_ttl),
            }
        )
        #: Log lines this scenario causes on purpose (a web process it SIGKILLed), not problems.
        self.tolerated: set[str] = set()
        self.processes = ProcessSet(directory, self.env)
        self.servers: list[tuple[Child, int]] = []
        self.workers: list[Child] = []
        self.retired: list[Child] = []  # workers that were killed or stopped
        self._count = 0

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.processes.stop_all(5)

    # -- processes -----------------------------------------------------------------

    def serve(self, servers: int = 2, web_processes: int = 2) -> list[str]:
        """Start ``servers`` ``offload serve`` instances (no workers of their own); return their base URLs."""
        for _ in range(servers):
            port = free_port()
            command = ["-m", "offload", "serve", APP, "--url", self.url, "--bind", f"127.0.0.1:{port}"]
            command += ["--workers", "0", "--web-processes", str(web_processes), "--log-level", "warning"]
            self.servers.append((self.processes.python(f"serve-{port}", *command), port))
        for child, port in self.servers:
            self._wait_listening(child, port)
        return [f"http://127.0.0.1:{port}" for _, port in self.servers]

    @staticmethod
    def _wait_listening(child: Child, port: int) -> None:
        wait_for(lambda: accepting(port) or not child.alive(), 90, f"the web server on port {port}")
        if not child.alive():
            raise HarnessError(f"the web server on port {port} exited:\n{child.text()[-2000:]}")

    def worker(self, concurrency: int = 2) -> Child:
        self._count += 1
        command = ["-m", "offload", "worker", APP, "--url", self.url, "--concurrency", str(concurrency)]
        child = self.processes.python(f"worker-{self._count}", *command, "--log-level", "warning")
        self.workers.append(child)
        return child

    def web_processes(self) -> list[int]:
        """The pids of the processes that answer requests (gunicorn's workers under each server)."""
        return [pid for child, _ in self.servers for pid in leaf_descendants(child.pid)]

    def retire(self, worker: Child) -> None:
        self.workers.remove(worker)
        self.retired.append(worker)

    def clients(self, specs: list[Spec]) -> Clients:
        return Clients(self.directory, specs, self.env)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "offload", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def status(self) -> dict[str, int] | None:
        """The counts of ``offload status``, every namespace of the store added up."""
        done = self.cli("status", "--json", "--url", self.url)
        if done.returncode != 0:
            return None
        totals = {"queued": 0, "running": 0, "dead": 0, "cached": 0, "failed": 0}
        for counts in json.loads(done.stdout).values():
            for name, value in counts.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    # -- what happened -----------------------------------------------------------------

    def executions(self) -> list[Execution]:
        try:
            text = self.executions_file.read_text("utf-8", "replace")
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            target, pid, started = line.rsplit(" ", 2)
            found.append(Execution(target, int(pid), float(started)))
        return found

    def web_rss(self) -> int:
        """The largest resident set of any web process, in KiB."""
        return max((rss_kib(pid) for pid in self.web_processes()), default=0)

    def worker_rss(self) -> int:
        return max((rss_kib(worker.pid) for worker in self.workers if worker.alive()), default=0)

    def log_problems(self) -> list[str]:
        """What the process logs say went wrong: a traceback, a web process killed or restarted."""
        signs = {
            "Traceback (most recent call last)": "a traceback",
            "WORKER TIMEOUT": "a web process timed out",
            "was sent SIGKILL": "a web process was killed",
            "Worker exiting": "a web process exited",
        }
        found = []
        for child in self.processes.children:
            text = child.text()
            found += [
                f"{meaning} in {child.log.name}"
                for sign, meaning in signs.items()
                if sign in text and sign not in self.tolerated
            ]
        return found


def verdict_on_executions(
    executions: list[Execution], paths: list[str], explained: Any = None
) -> tuple[int, int, list[str]]:
    """Jobs run and duplicates for ``paths``, and the duplicates nothing explains.

    ``explained(execution)`` says whether an execution may be followed by
    another of the same URL (its worker was killed, or it overlapped an outage).
    """
    by_target: dict[str, list[Execution]] = {}
    for execution in executions:
        by_target.setdefault(execution.target, []).append(execution)
    wanted = set(paths)
    jobs = sum(len(runs) for target, runs in by_target.items() if target in wanted)
    duplicates = 0
    unexplained = []
    for target, runs in sorted(by_target.items()):
        if target not in wanted:
            unexplained.append(f"{target} ran {len(runs)} time(s) though no client asked for it")
            continue
        if len(runs) < 2:
            continue
        duplicates += len(runs) - 1
        ok = sum(1 for run in runs if explained is not None and explained(run))
        if ok < len(runs) - 1:
            pids = ", ".join(str(run.pid) for run in runs)
            unexplained.append(f"{target} ran {len(runs)} times (pids {pids}) with no worker killed or outage")
    return jobs, duplicates, unexplained
