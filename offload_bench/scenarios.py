"""The chaos scenarios: each builds a stack on one backend, does harm, and checks the invariants."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from offload.core import CLAIM_WINDOW
from offload_bench.client import Spec
from offload_bench.procs import Child, wait_for
from offload_bench.servers import BackendServer, RedisClusterServer
from offload_bench.stack import Execution, Load, Stack, verdict_on_executions

#: Seconds of a job's lease in the scenarios: short, so that a killed worker's job comes back soon.
LEASE = 5.0
#: A request that takes longer than this is a hang.
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is in one mode."""

    urls: int
    kill_urls: int  # at least this many URLs asked for while workers are killed
    kill_for: float
    kill_every: float
    outage: float
    storm_urls: int
    storm_clients: int  # per URL and client process
    long_jobs: int
    flood_urls: int
    max_queued: int
    soak: float


SHORT = Sizes(
    urls=150,
    kill_urls=100,
    kill_for=8,
    kill_every=1.5,
    outage=4,
    storm_urls=16,
    storm_clients=10,
    long_jobs=4,
    flood_urls=500,
    max_queued=40,
    soak=0,
)
LONG = Sizes(
    urls=1000,
    kill_urls=1000,
    kill_for=60,
    kill_every=3,
    outage=15,
    storm_urls=60,
    storm_clients=12,
    long_jobs=8,
    flood_urls=5000,
    max_queued=200,
    soak=600,
)


@dataclass
class Row:
    """One line of the table, and what went wrong."""

    scenario: str
    backend: str
    requests: int = 0
    jobs: int = 0
    lost: int = 0
    duplicates: int = 0
    unavailable: int = 0
    resent: int = 0
    worst_latency: float = 0.0
    web_rss: tuple[int, int] = (0, 0)
    worker_rss: tuple[int, int] = (0, 0)
    note: str = ""
    violations: list[str] = field(default_factory=list)

    def take(self, load: Load, paths: list[str]) -> None:
        """Fill the request figures from a load, and flag what no scenario tolerates."""
        self.requests += load.requests
        self.resent += load.resent
        self.unavailable += load.statuses.get(503, 0)
        self.worst_latency = max(self.worst_latency, load.worst_latency)
        self.lost += sum(1 for path in paths if path not in load.done or path in load.unfinished)
        other = {code: count for code, count in load.statuses.items() if code >= 500 and code != 503}
        if other:
            self.violations.append(f"answers {other}: a 5xx other than 503")
        if load.hangs:
            self.violations.append(f"{load.hangs} request(s) hung past {REQUEST_TIMEOUT:g}s")
        if load.problems:
            self.violations.append(f"{load.problems} bad answer(s), for example: {'; '.join(load.samples[:3])}")

    def finish(self, stack: Stack) -> None:
        if self.lost:
            self.violations.append(f"{self.lost} URL(s) never got their answer")
        self.violations += stack.log_problems()
        if self.resent:
            self.note += f"; {self.resent} GET(s) resent on a closed keep-alive connection"


def paths_for(name: str, count: int, ms: Callable[[int], int]) -> list[str]:
    run = random.randrange(16**6)
    return [f"/{name}/{run:06x}/{n}?ms={ms(n)}" for n in range(count)]


def poll_specs(
    bases: list[str], paths: list[str], processes: int, concurrency: int, seconds: float, hits: int = 0
) -> list[Spec]:
    """Split ``paths`` over ``processes`` polling clients that must finish within ``seconds``."""
    now = time.time()
    return [
        Spec(
            bases=bases[n % len(bases) :] + bases[: n % len(bases)],
            paths=paths[n::processes],
            concurrency=concurrency,
            hits=hits,
            timeout=REQUEST_TIMEOUT,
            deadline=now + seconds,
        )
        for n in range(processes)
    ]


def snapshot(stack: Stack) -> tuple[int, int]:
    """The largest web and worker RSS, once the load has reached the workers (imports done)."""
    wait_for(stack.executions, 90, "the first job to run")
    return stack.web_rss(), stack.worker_rss()


def settle(stack: Stack, row: Row, load: Load, rss_before: tuple[int, int]) -> tuple[list[str], list[str]]:
    """Take a finished load's figures and RSS into the row; the URLs asked and the unexplained second runs."""
    web1, worker1 = snapshot(stack)
    asked = sorted(load.done | load.unfinished)
    row.take(load, asked)
    row.web_rss, row.worker_rss = (rss_before[0], web1), (rss_before[1], worker1)
    row.jobs, row.duplicates, unexplained = verdict_on_executions(stack.executions(), asked)
    return asked, unexplained


# -- 1. worker kills -----------------------------------------------------------------------


def worker_kills(stack: Stack, sizes: Sizes, row: Row) -> None:
    bases = stack.serve()
    for _ in range(3):
        stack.worker(concurrency=2)
    # New URLs for as long as workers are being killed, at least ``sizes.urls`` of them.
    paths = paths_for("kills", sizes.kill_urls * 50, lambda n: 20 + (n * 37) % 130)
    specs = poll_specs(bases, paths, 2, 30, sizes.kill_for + 120, hits=1)
    for spec in specs:
        spec.stop_new_at = time.time() + sizes.kill_for
    clients = stack.clients(specs)
    web0, worker0 = snapshot(stack)
    killed: set[int] = set()
    stop_at = time.monotonic() + sizes.kill_for
    while time.monotonic() < stop_at:
        time.sleep(sizes.kill_every)
        victim = random.choice(stack.workers)
        victim.signal(signal.SIGKILL)
        victim.process.wait()
        killed.add(victim.pid)
        stack.retire(victim)
        stack.worker(concurrency=2)
    load = clients.wait()
    web1, worker1 = snapshot(stack)
    asked = sorted(load.done | load.unfinished)
    row.take(load, asked)
    row.web_rss, row.worker_rss = (web0, web1), (worker0, worker1)
    row.jobs, row.duplicates, unexplained = verdict_on_executions(
        stack.executions(), asked, lambda run: run.pid in killed
    )
    row.violations += unexplained
    if len(asked) < sizes.kill_urls:
        row.violations.append(f"only {len(asked)} URLs asked for, fewer than {sizes.kill_urls}")
    row.note = f"{len(asked)} URLs, {len(killed)} workers killed"


# -- 1b. web process kills --------------------------------------------------------------------


def web_kills(stack: Stack, sizes: Sizes, row: Row) -> None:
    """SIGKILL web processes mid-request under load: every URL asked for gets its answer, one job each."""
    bases = stack.serve()
    for _ in range(2):
        stack.worker(concurrency=2)
    stack.tolerated.add("was sent SIGKILL")  # gunicorn's word for the processes killed here
    paths = paths_for("webkills", sizes.kill_urls * 50, lambda n: 20 + (n * 37) % 130)
    specs = poll_specs(bases, paths, 2, 30, sizes.kill_for + CLAIM_WINDOW + 120)
    for spec in specs:
        spec.stop_new_at = time.time() + sizes.kill_for
    clients = stack.clients(specs)
    web0, worker0 = snapshot(stack)
    killed = 0
    stop_at = time.monotonic() + sizes.kill_for
    while time.monotonic() < stop_at:
        time.sleep(sizes.kill_every)
        victims = stack.web_processes()
        if victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(random.choice(victims), signal.SIGKILL)
                killed += 1
    load = clients.wait()
    asked, unexplained = settle(stack, row, load, (web0, worker0))
    row.violations += unexplained  # no worker was harmed: any second run of a URL is a violation
    if len(asked) < sizes.kill_urls:
        row.violations.append(f"only {len(asked)} URLs asked for, fewer than {sizes.kill_urls}")
    if killed == 0:
        row.violations.append("no web process was killed")
    row.note = f"{len(asked)} URLs, {killed} web processes killed"


# -- 2. backend restart ---------------------------------------------------------------------


def backend_restart(stack: Stack, sizes: Sizes, row: Row, server: BackendServer) -> None:
    bases = stack.serve()
    for _ in range(2):
        stack.worker(concurrency=2)
    paths = paths_for("restart", sizes.urls, lambda n: 50 + (n * 37) % 150)
    clients = stack.clients(poll_specs(bases, paths, 2, 20, sizes.outage + 150))
    web0, worker0 = snapshot(stack)
    time.sleep(1)
    down = time.time()
    server.stop()
    try:
        probe = outage_probe(bases[0], "/restart/probe-during-outage?ms=1")
        time.sleep(max(0.0, sizes.outage - (time.time() - down)))
    finally:
        server.start()
    up = time.time()
    load = clients.wait()
    web1, worker1 = snapshot(stack)
    row.take(load, paths)
    row.web_rss, row.worker_rss = (web0, web1), (worker0, worker1)

    def during_outage(run: Execution) -> bool:  # its answer may not have been stored, or was lost
        return run.started <= up + 1

    row.jobs, row.duplicates, unexplained = verdict_on_executions(stack.executions(), paths, during_outage)
    row.violations += unexplained
    if probe != 503:
        row.violations.append(f"a new URL during the outage got {probe}, not 503: the outage did not happen")
    row.unavailable += probe == 503
    row.note = f"backend down {up - down:.1f}s"


# -- 2b. failover (Redis Cluster) ----------------------------------------------------------------


def failover(stack: Stack, sizes: Sizes, row: Row, server: BackendServer) -> None:
    """Kill the master holding the cache (and the queue shards it serves) under load; its replica takes over.

    Meanwhile requests get 202 or 503 (never another 5xx, never a traceback);
    afterwards every URL gets its answer. A job that ran around the failover
    may run again: its answer may have been acked by the old master only.
    """
    if not isinstance(server, RedisClusterServer):
        raise ValueError("the failover scenario needs a Redis Cluster")
    bases = stack.serve()
    for _ in range(2):
        stack.worker(concurrency=2)
    paths = paths_for("failover", sizes.urls, lambda n: 50 + (n * 37) % 150)
    clients = stack.clients(poll_specs(bases, paths, 2, 20, sizes.outage + CLAIM_WINDOW + 150))
    web0, worker0 = snapshot(stack)
    time.sleep(1)
    down = time.time()
    port = server.fail_over()
    up = time.time()
    load = clients.wait()
    web1, worker1 = snapshot(stack)
    row.take(load, paths)
    row.web_rss, row.worker_rss = (web0, web1), (worker0, worker1)

    def around_failover(run: Execution) -> bool:
        return run.started <= up + 1

    row.jobs, row.duplicates, unexplained = verdict_on_executions(stack.executions(), paths, around_failover)
    row.violations += unexplained
    row.note = f"master on port {port} killed, replica serving after {up - down:.1f}s"


def outage_probe(base: str, target: str) -> int | str:
    """The status of a GET for a URL no client asked for: a miss must write, so it gets 503 while the backend is down.

    (Polls of URLs already queued may go on answering 202 from what can still be
    read, as SQLite's readers do while a writer holds the lock.)
    """
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", target)
        return connection.getresponse().status
    except OSError as error:
        return f"no answer ({error})"
    finally:
        connection.close()


# -- 3. storm ---------------------------------------------------------------------------------


def storm(stack: Stack, sizes: Sizes, row: Row) -> None:
    bases = stack.serve()
    for _ in range(2):
        stack.worker(concurrency=4)
    paths = paths_for("storm", sizes.storm_urls, lambda n: 1000)
    start = time.time() + 3  # every client process is up and waiting by then
    specs = [
        Spec(
            bases=bases[n % len(bases) :] + bases[: n % len(bases)],
            paths=paths,
            mode="storm",
            per_path=sizes.storm_clients,
            timeout=REQUEST_TIMEOUT,
            start_at=start,
            deadline=start + 120,
        )
        for n in range(3)
    ]
    clients = stack.clients(specs)
    web0, worker0 = snapshot(stack)
    load = clients.wait()
    web1, worker1 = snapshot(stack)
    row.take(load, paths)
    row.web_rss, row.worker_rss = (web0, web1), (worker0, worker1)
    executions = stack.executions()
    row.jobs, row.duplicates, unexplained = verdict_on_executions(executions, paths)
    row.violations += unexplained
    counts = {path: sum(1 for run in executions if run.target == path) for path in paths}
    wrong = {path: count for path, count in counts.items() if count != 1}
    if wrong:
        row.violations.append(f"executions per URL not exactly 1: {wrong}")
    row.note = f"{3 * sizes.storm_clients} clients per URL, 3 processes"


# -- 4. SIGTERM during long jobs ---------------------------------------------------------------------


def sigterm(stack: Stack, sizes: Sizes, row: Row) -> None:
    """One worker gets one SIGTERM (it must finish its jobs), another two (it hands them back)."""
    bases = stack.serve(servers=1)
    job_ms = int(LEASE * 1000 * 1.6)  # longer than the lease: the heartbeat must keep it
    graceful, abrupt = stack.worker(concurrency=sizes.long_jobs // 2), stack.worker(concurrency=sizes.long_jobs // 2)
    paths = paths_for("sigterm", sizes.long_jobs, lambda n: job_ms)
    clients = stack.clients(poll_specs(bases, paths, 1, sizes.long_jobs, 180))

    def running_on(worker: Child) -> list[Execution]:
        return [run for run in stack.executions() if run.pid == worker.pid]

    wait_for(lambda: running_on(graceful) and running_on(abrupt), 60, "both workers to start a long job")
    web0, worker0 = snapshot(stack)
    time.sleep(0.5)
    finishing = {run.target for run in running_on(graceful)}
    graceful.signal(signal.SIGTERM)
    abrupt.signal(signal.SIGTERM)
    time.sleep(0.3)
    abrupt.signal(signal.SIGTERM)
    stack.worker(concurrency=2)
    try:
        abrupt.process.wait(60)
        graceful.process.wait(job_ms / 1000 + 60)
    except Exception:
        row.violations.append("a worker did not exit after SIGTERM")
    web1, worker1 = snapshot(stack)
    load = clients.wait()
    row.take(load, paths)
    row.web_rss, row.worker_rss = (web0, web1), (worker0, worker1)
    executions = stack.executions()
    row.jobs, row.duplicates, unexplained = verdict_on_executions(executions, paths, lambda run: run.pid == abrupt.pid)
    row.violations += unexplained
    for target in finishing:
        runs = [run for run in executions if run.target == target]
        if len(runs) != 1:
            row.violations.append(f"{target} was running on the worker told to finish, yet ran {len(runs)} times")
    if graceful.process.returncode != 0:
        row.violations.append(f"the worker given one SIGTERM exited with {graceful.process.returncode}, not 0")
    stack.retire(graceful)
    stack.retire(abrupt)
    row.note = f"{len(finishing)} finished on SIGTERM, others handed back"


# -- 5. backpressure ---------------------------------------------------------------------------------


def backpressure(stack: Stack, sizes: Sizes, row: Row) -> None:
    began = time.monotonic()
    bases = stack.serve()
    stack.worker(concurrency=1)
    paths = paths_for("flood", sizes.flood_urls, lambda n: 100)
    now = time.time()
    specs = [
        Spec(bases=bases, paths=paths[n::2], mode="once", concurrency=40, timeout=REQUEST_TIMEOUT, deadline=now + 120)
        for n in range(2)
    ]
    clients = stack.clients(specs)
    web0, worker0 = snapshot(stack)
    most_queued = 0
    statuses = 0

    def watch() -> None:
        nonlocal most_queued, statuses
        while clients.running():
            status = stack.status()
            if status is not None:
                statuses += 1
                most_queued = max(most_queued, status["queued"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    flood = clients.wait()
    watcher.join(60)
    web1 = stack.web_rss()
    after = stack.status()
    if after is not None:
        most_queued = max(most_queued, after["queued"])
    refused = [path for path, status in flood.first.items() if status == 503]
    if not refused:
        row.violations.append("no 503 past max_queued")
    if most_queued > sizes.max_queued:
        row.violations.append(f"{most_queued} jobs queued, past max_queued={sizes.max_queued}")
    # The refusals are logged, but a flood must not turn into a flood of log lines.
    lines = sum(child.text().count("max_queued=") for child, _ in stack.servers)
    allowed = 4 * (2 + (time.monotonic() - began) / 10)  # per web process: one line per 10 s, and slack
    if lines > allowed:
        row.violations.append(f"{lines} log lines about the full queue for {len(refused)} refusals")
    if web1 - web0 > 64 * 1024:
        row.violations.append(f"a web process grew by {(web1 - web0) // 1024} MiB during the flood")
    # Recovery: a sample of refused and accepted URLs gets its answer, with more workers now.
    for _ in range(2):
        stack.worker(concurrency=2)
    accepted = [path for path, status in flood.first.items() if status == 202]
    sample = random.sample(refused, min(30, len(refused))) + random.sample(accepted, min(20, len(accepted)))
    recovery = stack.clients(poll_specs(bases, sample, 1, 25, 180)).wait()
    flood.merge(recovery)
    flood.done = recovery.done
    flood.unfinished = recovery.unfinished
    row.take(flood, sample)
    row.web_rss, row.worker_rss = (web0, web1), (worker0, stack.worker_rss())
    row.jobs, row.duplicates, unexplained = verdict_on_executions(stack.executions(), paths)
    row.violations += unexplained
    row.note = f"max_queued={sizes.max_queued}, most queued seen {most_queued} ({statuses} status checks)"


# -- 6. soak ---------------------------------------------------------------------------------------------


def soak(stack: Stack, sizes: Sizes, row: Row) -> None:
    bases = stack.serve()
    for _ in range(3):
        stack.worker(concurrency=2)
    paths = paths_for("soak", 200_000, lambda n: 10 + (n * 37) % 90)
    specs = poll_specs(bases, paths, 2, 20, sizes.soak + 120, hits=5)
    for spec in specs:
        spec.stop_new_at = time.time() + sizes.soak
    clients = stack.clients(specs)
    time.sleep(min(30.0, sizes.soak / 10))  # past start-up: imports done, pools filled
    web0, worker0 = snapshot(stack)
    load = clients.wait()
    asked, unexplained = settle(stack, row, load, (web0, worker0))
    row.violations += unexplained
    for name, (before, after) in (("web", row.web_rss), ("worker", row.worker_rss)):
        if after - before > 64 * 1024:
            row.violations.append(f"a {name} process grew from {before // 1024} to {after // 1024} MiB")
    row.note = f"{sizes.soak / 60:g} min mixed load, {len(asked)} URLs"


SCENARIOS = ("worker-kills", "web-kills", "backend-restart", "failover", "storm", "sigterm", "backpressure", "soak")


def run_scenario(name: str, server: BackendServer, sizes: Sizes, directory: Path) -> Row:
    row = Row(name, server.name)
    folder = directory / server.name / name
    folder.mkdir(parents=True)
    url = server.url_for(name)
    max_queued = sizes.max_queued if name == "backpressure" else 100_000
    with Stack(folder, url, lease=LEASE, max_queued=max_queued) as stack:
        try:
            if name == "worker-kills":
                worker_kills(stack, sizes, row)
            elif name == "web-kills":
                web_kills(stack, sizes, row)
            elif name == "failover":
                failover(stack, sizes, row, server)
            elif name == "backend-restart":
                backend_restart(stack, sizes, row, server)
            elif name == "storm":
                storm(stack, sizes, row)
            elif name == "sigterm":
                sigterm(stack, sizes, row)
            elif name == "backpressure":
                backpressure(stack, sizes, row)
            elif name == "soak":
                soak(stack, sizes, row)
            else:
                raise ValueError(f"unknown scenario {name!r}")
        except Exception as error:
            row.violations.append(f"the scenario failed: {type(error).__name__}: {error}")
        row.finish(stack)
    return row
