"""Frontend isolation per scheduling class: ``python -m offload_bench.isolation [--rounds N] [--seconds S]``.

The isolation scenario of :mod:`offload_bench.bench` (gunicorn on core 1
serving a hit to a paced wrk load on core 0, then the same load while one
``offload worker`` per core burns 100 ms of CPU per job), run once per
``--sched`` class in every round: ``normal`` (``--nice 10`` alone, the
default), ``batch`` and ``idle``; and once with the workers on cores of
their own (``cpus``: ``--cpus`` naming every core but the web server's). The classes take turns in a shuffled order
within a round, and each busy run follows a quiet run of its own (no jobs),
so each ratio compares two runs a few seconds apart on a shared machine. Prints a table and writes
the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from offload_bench.bench import QUICK, Bench, bench_run, enqueue_offload, say, warm
from offload_bench.load import LOAD_CORE, SERVER_CORE, Server, cores, log_lines, pinned, wrk
from offload_bench.procs import leaf_descendants

POLICIES = ("normal", "batch", "idle", "cpus")
APP = "offload_bench.bench_apps:wsgi_offload"


def busy_workers(bench: Bench, url: str, policy: str, log: Path, pin: bool) -> list[Any]:
    """One ``offload worker`` per core in the scheduling class ``policy`` (with the default ``--nice 10``).

    With ``pin``, every worker runs on the web server's core, so that each
    hit competes with them directly: the class's effect, with less of the
    machine's other load mixed in.
    """
    command = [sys.executable, "-m", "offload", "worker", APP, "--url", url, "--log-level", "warning"]
    if policy == "cpus":  # every core but the web server's, in the default class
        others = sorted(os.sched_getaffinity(0) - {SERVER_CORE % cores()}) or [SERVER_CORE % cores()]
        command += ["--cpus", ",".join(map(str, others))]
    else:
        command += ["--sched", policy]
    if pin and policy != "cpus":
        command = pinned(SERVER_CORE, command)
    return [
        bench.processes.start(f"worker-{policy}-{n}-{time.monotonic_ns()}", command, env=bench.env(url, log))
        for n in range(cores())
    ]


def run_delay(server: Server) -> float:
    """Seconds the server's request process has spent runnable but waiting for a core (``/proc/PID/schedstat``).

    Its growth per request is what the workers' scheduling class decides,
    measured directly rather than through the tail of wrk's latencies.
    """
    total = 0
    for pid in leaf_descendants(server.child.pid) or [server.child.pid]:
        with contextlib.suppress(OSError):
            for thread in os.listdir(f"/proc/{pid}/task"):
                path = f"/proc/{pid}/task/{thread}/schedstat"
                with contextlib.suppress(OSError, ValueError, IndexError), open(path, encoding="ascii") as stat:
                    total += int(stat.read().split()[1])
    return total / 1e9


def paced(server: Server, seconds: float, core: int = LOAD_CORE) -> dict[str, Any]:
    """The paced hit load of the isolation scenario, with the server's run-queue wait per request in µs."""
    before = run_delay(server)
    result = wrk(server.url("/hit"), connections=8, seconds=seconds, delay_ms=10, core=core)
    waited = run_delay(server) - before
    return vars(result) | {"wait_us": waited / max(1, result.requests) * 1e6}


def jobs_per_second(log: Path, start: float, end: float) -> float:
    """Jobs the workers started between ``start`` and ``end``, per second: what the class costs the jobs."""
    return sum(1 for _, started in log_lines(log) if start <= started < end) / (end - start)


def measure(
    bench: Bench,
    rounds: int,
    seconds: float,
    pin: bool = False,
    policies: tuple[str, ...] = POLICIES,
    load_core: int = LOAD_CORE,
) -> dict[str, Any]:
    url = bench.url("redis", "isolation-sched")
    server = Server(bench.processes, "gunicorn", "wsgi", "wsgi_offload", bench.env(url))
    figures: dict[str, list[dict[str, Any]]] = {name: [] for name in ("quiet", *policies)}
    try:
        warm(bench, server, url, "redis")
        jobs = int((seconds + 4) * rounds * len(policies) * cores() * 10 * 1.5)  # 100 ms each: more than enough
        enqueue_offload(url, jobs, "/cpu/", "cpu=100")
        for round_ in range(rounds):
            order = list(policies)
            random.Random(round_).shuffle(order)
            for policy in order:
                quiet = paced(server, seconds, load_core)
                log = bench.log_file(f"isolation-{policy}")
                workers = busy_workers(bench, url, policy, log, pin)
                try:
                    time.sleep(2)  # the workers started and took their first jobs
                    start = time.time()
                    busy = paced(server, seconds, load_core)
                    end = time.time()
                finally:
                    for worker in workers:
                        worker.stop(10)
                figures["quiet"].append(quiet | {"policy": policy})
                figures[policy].append(busy | {"jobs_per_s": jobs_per_second(log, start, end), "quiet": quiet})
            say(
                f"round {round_ + 1}: "
                + ", ".join(
                    f"{p} {figures[p][-1]['quiet']['p99']:.2f} -> {figures[p][-1]['p99']:.2f} ms "
                    f"(wait {figures[p][-1]['quiet']['wait_us']:.0f} -> {figures[p][-1]['wait_us']:.0f} us)"
                    for p in policies
                )
            )
    finally:
        server.stop()
    return figures


def table(figures: dict[str, Any]) -> str:
    idle = figures["quiet"]
    lines = [
        "| workers | hit p50 ms | hit p99 ms | busy / quiet p99 | run-queue wait per hit µs "
        "| jobs/s (100 ms CPU each) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| quiet (no jobs) | {statistics.median(r['p50'] for r in idle):.2f} "
        f"| {statistics.median(r['p99'] for r in idle):.2f} | "
        f"| {statistics.median(r['wait_us'] for r in idle):.0f} | |",
    ]
    labels = {
        "normal": "busy, --nice 10 (default)",
        "batch": "busy, --sched batch",
        "idle": "busy, --sched idle",
        "cpus": "busy, --cpus (every core but the web server's)",
    }
    for policy in (name for name in POLICIES if name in figures):
        runs = figures[policy]
        ratio = statistics.median(busy["p99"] / busy["quiet"]["p99"] for busy in runs)
        lines.append(
            f"| {labels[policy]} | {statistics.median(r['p50'] for r in runs):.2f} "
            f"| {statistics.median(r['p99'] for r in runs):.2f} | {ratio:.2f}x "
            f"| {statistics.median(r['wait_us'] for r in runs):.0f} "
            f"| {statistics.median(r['jobs_per_s'] for r in runs):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.isolation", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    parser.add_argument("--json", type=Path, default=Path("isolation-results.json"))
    parser.add_argument("--pin", action="store_true", help="run the workers on the web server's core")
    parser.add_argument("--policies", default=",".join(POLICIES), help="which of " + ", ".join(POLICIES))
    parser.add_argument(
        "--load-on-server-core", action="store_true", help="run wrk on the web server's core, away from --cpus workers"
    )
    args = parser.parse_args(argv)
    policies = tuple(name for name in args.policies.split(",") if name)
    if not policies or not set(policies) <= set(POLICIES):
        parser.error(f"--policies: choose among {', '.join(POLICIES)}")
    load_core = SERVER_CORE if args.load_on_server_core else LOAD_CORE
    with tempfile.TemporaryDirectory(prefix="offload-isolation-") as tmp, bench_run(QUICK, Path(tmp)) as bench:
        figures = measure(bench, args.rounds, args.seconds, args.pin, policies, load_core)
    args.json.write_text(json.dumps(figures, indent=1))
    print(table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
