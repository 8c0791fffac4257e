"""What a push costs PostgreSQL when many workers wait: ``python -m offload_bench.wakeups``.

A push sends ``NOTIFY``, which PostgreSQL delivers to every session that
listens. This starts ``--waiters`` threads (each claim is a session of its
own, as each worker process's is) waiting on an empty queue of a throwaway
PostgreSQL server, measures what they cost while idle, then pushes ``--jobs``
jobs one at a time, ``--gap`` seconds apart. It prints the server's
transactions per job above the idle rate (every statement is one: claims
that find nothing, lock waits, the push, the ack), and the pickup time from
push to claim.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from offload_bench.servers import PostgresServer


def transactions(conninfo: str) -> int:
    """Transactions committed in the server's databases so far (statistics flushed after a short pause)."""
    import psycopg

    time.sleep(1.5)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT sum(xact_commit + xact_rollback)::bigint FROM pg_stat_database").fetchone()
    return int(row[0]) if row else 0


def measure(url: str, waiters: int, jobs: int, gap: float, idle: float) -> dict[str, float]:
    from offload.backends import open_backend
    from offload.backends.postgres import PostgresQueue

    queue = open_backend(url).queue
    assert isinstance(queue, PostgresQueue)
    pickups: list[float] = []
    stop = threading.Event()

    def wait_for_jobs() -> None:
        while not stop.is_set():
            claim = queue.claim(lease=60, wait=1.0)
            if claim is not None:
                pickups.append(time.time() - float(claim.payload))
                queue.ack(claim)

    threads = [threading.Thread(target=wait_for_jobs, daemon=True) for _ in range(waiters)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)  # every waiter in its wait
        before = transactions(queue.db.conninfo)
        started = time.monotonic()
        time.sleep(idle)
        idle_rate = (transactions(queue.db.conninfo) - before) / (time.monotonic() - started)
        before, started = transactions(queue.db.conninfo), time.monotonic()
        for number in range(jobs):
            queue.push(f"job-{number}", repr(time.time()).encode())
            time.sleep(gap)
        deadline = time.monotonic() + 30
        while len(pickups) < jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        spent = transactions(queue.db.conninfo) - before
        seconds = time.monotonic() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        queue.close()
    ms = sorted(pickup * 1000 for pickup in pickups)
    return {
        "waiters": waiters,
        "jobs": jobs,
        "picked_up": len(pickups),
        "idle_transactions_per_s": idle_rate,
        "transactions_per_job": (spent - idle_rate * seconds) / jobs,
        "pickup_p50_ms": statistics.median(ms) if ms else float("nan"),
        "pickup_p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.wakeups", description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", default="1,8,32,64", help="waiting workers, per measurement")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.03, help="seconds between pushes")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle cost measured first")
    parser.add_argument("--json", type=Path, default=Path("wakeups.json"))
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="offload-wakeups-") as tmp, PostgresServer(Path(tmp) / "pg") as server:
        for waiters in (int(n) for n in args.waiters.split(",")):
            row = measure(server.url_for(f"wake-{waiters}"), waiters, args.jobs, args.gap, args.idle)
            results.append(row)
            print(
                f"{waiters} waiting: {row['transactions_per_job']:.1f} transactions per job above "
                f"{row['idle_transactions_per_s']:.0f}/s idle; pickup p50 {row['pickup_p50_ms']:.1f} ms, "
                f"p99 {row['pickup_p99_ms']:.1f} ms ({row['picked_up']}/{row['jobs']} picked up)",
                file=sys.stderr,
                flush=True,
            )
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
