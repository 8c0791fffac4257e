"""The worker engines measured: ``python -m offload_bench.engine [--quick]``.

Two scenarios, each with its own throwaway Redis and PostgreSQL servers:

``async``
    500 queued jobs whose handler awaits ``asyncio.sleep(1)``, run by one
    ``offload worker --concurrency 500 --burst`` process (the async engine:
    tasks on one event loop). Wall time from the process's start to its exit,
    and its peak RSS (``ru_maxrss``); the thread engine with 64 threads runs
    the same jobs for comparison (more threads than redis-py's 100 pooled
    connections fail with ``MaxConnectionsError``).
``throughput``
    A backlog of trivial jobs, one worker process each, jobs/s from the first
    to the last job start: ``offload worker`` with threads (a WSGI app, one
    thread) and with the async engine (an ASGI app, ``--concurrency 64``,
    batched claims) on Redis and on PostgreSQL, against Celery's prefork
    worker (one child, Redis broker), rq's SimpleWorker, and procrastinate's
    worker on PostgreSQL (when installed), all in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from offload_bench.bench import APP, FULL, QUICK, Bench, bench_run, enqueue_celery, enqueue_offload, enqueue_rq, rate
from offload_bench.bench_apps import SLEEP_NAMESPACE
from offload_bench.load import log_lines
from offload_bench.procs import ROOT, child_env

#: Jobs per async round, and how long each sleeps.
SLEEPERS, SLEEP_MS = 500, 1000

#: How many jobs the async engine runs at once in the throughput scenario.
THROUGHPUT_CONCURRENCY = 64


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def worker_command(attr: str, url: str, *args: str) -> list[str]:
    command = [sys.executable, "-m", "offload", "worker", f"{APP}:{attr}", "--url", url, "--log-level", "warning"]
    return [*command, "--nice", "0", *args]


# -- async: many jobs on one event loop ----------------------------------------------------------


def sleepers(bench: Bench, engine: str, concurrency: int) -> dict[str, float]:
    """One burst worker runs SLEEPERS queued sleeping jobs; its wall time, peak RSS and job start spread."""
    url = bench.url("redis", f"async-{engine}")
    enqueue_offload(url, SLEEPERS, "/sleep/", f"sleep_ms={SLEEP_MS}", namespace=SLEEP_NAMESPACE)
    log = bench.log_file(f"sleepers-{engine}")
    command = worker_command("asgi_sleep", url, "--burst", "--engine", engine, "--concurrency", str(concurrency))
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **bench.env(url, log)})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    starts = sorted(at for _, at in log_lines(log))
    return {
        "jobs": len(starts),
        "wall_s": wall,
        "start_spread_s": starts[-1] - starts[0] if starts else 0.0,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "exit": float(process.returncode),
    }


def async_jobs(bench: Bench) -> None:
    figures: dict[str, list[dict[str, float]]] = {}
    for round_ in range(max(1, bench.mode.rounds - 2)):
        for label, engine, concurrency in (("async engine, 500 tasks", "async", 500), ("threads, 64", "threads", 64)):
            figures.setdefault(label, []).append(sleepers(bench, engine, concurrency))
        say(f"async jobs, round {round_ + 1}: " + ", ".join(f"{k} {v[-1]['wall_s']:.2f}s" for k, v in figures.items()))
    bench.results["async_jobs"] = figures


# -- throughput with batched claims --------------------------------------------------------------


def offload_rate(bench: Bench, backend: str, attr: str, args: list[str], timeout: float) -> dict[str, float]:
    url = bench.url(backend, "engine-throughput")
    namespace = None if attr == "wsgi_offload" else _asgi_namespace()
    enqueue_offload(url, bench.mode.backlog, "/t/", namespace=namespace)
    log = bench.log_file("engine-throughput")
    child = bench.processes.start(
        f"offload-{backend}-{attr}", worker_command(attr, url, *args), env=bench.env(url, log)
    )
    try:
        return rate(log, bench.mode.backlog, child, timeout)
    finally:
        child.stop(10)


def _asgi_namespace() -> str:
    from offload.namespaces import namespace_for
    from offload_bench.bench_apps import asgi_handler

    return namespace_for(asgi_handler)


def celery_rate(bench: Bench, timeout: float) -> dict[str, float]:
    redis_url = bench.redis.url_for("celery")
    enqueue_celery(redis_url, bench.mode.backlog)
    log = bench.log_file("celery")
    command = [sys.executable, "-m", "celery", "-A", f"{APP}:celery_app", "worker", "--pool", "prefork"]
    command += ["--concurrency", "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
    command += ["--without-heartbeat"]
    env = bench.env(log=log, redis=redis_url) | {"PYTHONPATH": str(ROOT)}
    child = bench.processes.start("celery", command, env=env)
    try:
        return rate(log, bench.mode.backlog, child, timeout)
    finally:
        child.stop(15)


def rq_rate(bench: Bench, timeout: float) -> dict[str, float]:
    redis_url = bench.redis.url_for("rq")
    enqueue_rq(redis_url, bench.mode.backlog)
    log = bench.log_file("rq")
    command = [str(Path(sys.executable).with_name("rq")), "worker", "--url", redis_url, "--burst", "--quiet", "bench"]
    command += ["--worker-class", "rq.worker.SimpleWorker"]
    child = bench.processes.start("rq-simple", command, env=bench.env(log=log))
    try:
        return rate(log, bench.mode.backlog, child, timeout)
    finally:
        child.stop(10)


def procrastinate_rate(bench: Bench, concurrency: int, timeout: float) -> dict[str, float] | None:
    """procrastinate's worker on PostgreSQL, ``concurrency`` jobs at once; None when it is not installed."""
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        return None
    if bench.postgres is None:
        return None
    dsn = bench.postgres.url_for("procrastinate")
    env = {**os.environ, "BENCH_POSTGRES": dsn, "PYTHONPATH": str(ROOT), "PGCLIENTENCODING": "UTF8"}
    setup = (
        "from offload_bench import bench_apps\n"
        "app = bench_apps.procrastinate_app\n"
        "with app.open():\n"
        "    app.schema_manager.apply_schema()\n"
        f"    for start in range(0, {bench.mode.backlog}, 500):\n"
        "        app.tasks['bench.job'].batch_defer(\n"
        f"            *[{{'target': f'/p/{{n}}'}} for n in range(start, min({bench.mode.backlog}, start + 500))])\n"
    )
    subprocess.run([sys.executable, "-c", setup], cwd=ROOT, env=env, check=True)
    log = bench.log_file("procrastinate")
    command = [str(Path(sys.executable).with_name("procrastinate")), "--app", f"{APP}.procrastinate_app"]
    command += ["--log-level", "warning", "worker", "--concurrency", str(concurrency), "--one-shot"]
    child = bench.processes.start(f"procrastinate-{concurrency}", command, env=bench.env(log=log) | env)
    try:
        return rate(log, bench.mode.backlog, child, timeout)
    finally:
        child.stop(10)


def throughput(bench: Bench) -> None:
    timeout = 60 if bench.mode is QUICK else 180
    many = ["--concurrency", str(THROUGHPUT_CONCURRENCY)]
    figures: dict[str, list[dict[str, float]]] = {}
    for round_ in range(max(1, bench.mode.rounds - 2)):
        runs: dict[str, dict[str, float] | None] = {
            "offload worker, threads (1), Redis": offload_rate(bench, "redis", "wsgi_offload", [], timeout),
            f"offload worker, async ({THROUGHPUT_CONCURRENCY}), Redis": offload_rate(
                bench, "redis", "asgi_offload", many, timeout
            ),
        }
        if bench.postgres is not None:
            runs["offload worker, threads (1), PostgreSQL"] = offload_rate(
                bench, "postgres", "wsgi_offload", [], timeout
            )
            runs[f"offload worker, async ({THROUGHPUT_CONCURRENCY}), PostgreSQL"] = offload_rate(
                bench, "postgres", "asgi_offload", many, timeout
            )
        runs["Celery prefork (1 process), Redis broker"] = celery_rate(bench, timeout)
        runs["rq SimpleWorker"] = rq_rate(bench, timeout)
        runs["procrastinate worker (1), PostgreSQL"] = procrastinate_rate(bench, 1, timeout)
        runs[f"procrastinate worker ({THROUGHPUT_CONCURRENCY}), PostgreSQL"] = procrastinate_rate(
            bench, THROUGHPUT_CONCURRENCY, timeout
        )
        for name, figure in runs.items():
            if figure is not None:
                figures.setdefault(name, []).append(figure)
        say(
            f"throughput, round {round_ + 1}: "
            + ", ".join(f"{k} {v[-1]['jobs_per_s']:.0f}/s" for k, v in figures.items())
        )
    bench.results["engine_throughput"] = figures


# -- report --------------------------------------------------------------------------------------


def tables(results: dict[str, Any]) -> str:
    """The figures as Markdown tables: medians over rounds, ratios of the same round's medians."""
    parts: list[str] = []
    if "async_jobs" in results:
        lines = [
            f"## Async jobs: {SLEEPERS} jobs of asyncio.sleep({SLEEP_MS / 1000:g}), one process",
            "| worker | jobs | wall s | job starts spread s | peak RSS MiB |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, runs in results["async_jobs"].items():
            med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            lines.append(
                f"| {name} | {med['jobs']:.0f} | {med['wall_s']:.2f} | {med['start_spread_s']:.2f} "
                f"| {med['peak_rss_mib']:.1f} |"
            )
        parts.append("\n".join(lines))
    if "engine_throughput" in results:
        runs = results["engine_throughput"]
        rates = {name: statistics.median(run["jobs_per_s"] for run in figures) for name, figures in runs.items()}
        celery = rates.get("Celery prefork (1 process), Redis broker") or 0.0
        simple = rates.get("rq SimpleWorker") or 0.0
        lines = [
            "## Worker throughput with batched claims (trivial job, backlog, one process)",
            "| worker | jobs/s | vs Celery prefork | vs rq SimpleWorker |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, value in rates.items():
            versus = [f"{value / base:.2f}x" if base else "" for base in (celery, simple)]
            lines.append(f"| {name} | {value:,.0f} | {versus[0]} | {versus[1]} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


SCENARIOS = {"async": async_jobs, "throughput": throughput}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller backlogs, one round")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--json", type=Path, default=Path("engine-results.json"), help="where to save the figures")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    os.environ.update(child_env({}))
    with tempfile.TemporaryDirectory(prefix="offload-engine-") as tmp, bench_run(mode, Path(tmp)) as bench:
        for name in args.only or list(SCENARIOS):
            SCENARIOS[name](bench)
            args.json.write_text(json.dumps(bench.results, indent=1))
    print(tables(bench.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
