"""Frontend isolation per scheduling class: ``python -m offload_bench.isolation [--rounds N] [--seconds S]``.

The isolation scenario of :mod:`offload_bench.bench` (gunicorn on core 1
serving a hit to a paced wrk load on core 0, then the same load while one
``offload worker`` per core burns 100 ms of CPU per job), run once per
``--sched`` class in every round: ``normal`` (``--nice 10`` alone, the
default), ``batch`` and ``idle``. The classes take turns in a shuffled order
within a round, each against the idle figure of that same round, so the
ratios do not mix two states of a shared machine. Prints a table and writes
the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from offload_bench.bench import QUICK, Bench, bench_run, enqueue_offload, say, warm
from offload_bench.load import Server, cores, log_lines, wrk

POLICIES = ("normal", "batch", "idle")
APP = "offload_bench.bench_apps:wsgi_offload"


def busy_workers(bench: Bench, url: str, policy: str, log: Path) -> list[Any]:
    """One ``offload worker`` per core in the scheduling class ``policy`` (with the default ``--nice 10``)."""
    command = [sys.executable, "-m", "offload", "worker", APP, "--url", url, "--log-level", "warning"]
    command += ["--sched", policy]
    return [
        bench.processes.start(f"worker-{policy}-{n}-{time.monotonic_ns()}", command, env=bench.env(url, log))
        for n in range(cores())
    ]


def jobs_per_second(log: Path, start: float, end: float) -> float:
    """Jobs the workers started between ``start`` and ``end``, per second: what the class costs the jobs."""
    return sum(1 for _, started in log_lines(log) if start <= started < end) / (end - start)


def measure(bench: Bench, rounds: int, seconds: float) -> dict[str, Any]:
    url = bench.url("redis", "isolation-sched")
    server = Server(bench.processes, "gunicorn", "wsgi", "wsgi_offload", bench.env(url))
    figures: dict[str, list[dict[str, Any]]] = {name: [] for name in ("quiet", *POLICIES)}
    try:
        warm(bench, server, url, "redis")
        jobs = int((seconds + 4) * rounds * len(POLICIES) * cores() * 10 * 1.5)  # 100 ms each: more than enough
        enqueue_offload(url, jobs, "/cpu/", "cpu=100")
        for round_ in range(rounds):
            idle = wrk(server.url("/hit"), connections=8, seconds=seconds, delay_ms=10)
            figures["quiet"].append(vars(idle))
            order = list(POLICIES)
            random.Random(round_).shuffle(order)
            for policy in order:
                log = bench.log_file(f"isolation-{policy}")
                workers = busy_workers(bench, url, policy, log)
                try:
                    time.sleep(2)  # the workers started and took their first jobs
                    start = time.time()
                    busy = wrk(server.url("/hit"), connections=8, seconds=seconds, delay_ms=10)
                    end = time.time()
                finally:
                    for worker in workers:
                        worker.stop(10)
                figures[policy].append(vars(busy) | {"jobs_per_s": jobs_per_second(log, start, end)})
            say(
                f"round {round_ + 1}: quiet p99 {idle.p99:.2f} ms; "
                + ", ".join(f"{p} {figures[p][-1]['p99']:.2f} ms" for p in POLICIES)
            )
    finally:
        server.stop()
    return figures


def table(figures: dict[str, Any]) -> str:
    idle = figures["quiet"]
    lines = [
        "| workers | hit p50 ms | hit p99 ms | busy / quiet p99 | jobs/s (100 ms of CPU each) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| quiet (no jobs) | {statistics.median(r['p50'] for r in idle):.2f} "
        f"| {statistics.median(r['p99'] for r in idle):.2f} | | |",
    ]
    labels = {"normal": "busy, --nice 10 (default)", "batch": "busy, --sched batch", "idle": "busy, --sched idle"}
    for policy in POLICIES:
        runs = figures[policy]
        ratio = statistics.median(busy["p99"] / base["p99"] for busy, base in zip(runs, idle, strict=True))
        lines.append(
            f"| {labels[policy]} | {statistics.median(r['p50'] for r in runs):.2f} "
            f"| {statistics.median(r['p99'] for r in runs):.2f} | {ratio:.2f}x "
            f"| {statistics.median(r['jobs_per_s'] for r in runs):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.isolation", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    parser.add_argument("--json", type=Path, default=Path("isolation-results.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="offload-isolation-") as tmp, bench_run(QUICK, Path(tmp)) as bench:
        figures = measure(bench, args.rounds, args.seconds)
    args.json.write_text(json.dumps(figures, indent=1))
    print(table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
