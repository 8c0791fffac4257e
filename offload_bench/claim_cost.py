"""What a claim costs the backend as running jobs pile up: ``python -m offload_bench.claim_cost``.

At 1,000 workers, 1,000 jobs or more hold a lease at any moment. This
leaves ``running`` jobs leased (claimed, never acked) in a throwaway Redis
or PostgreSQL server, then times ``cycles`` rounds of push, claim and ack of
one more job, and ``cycles`` claims that find nothing (what every idle
worker thread does once a second), through offload's own queue classes,
from one process. The time per operation against the number of running
jobs shows which operations scan the running set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offload_bench.servers import PostgresServer, RedisServer


def timed(operation: Any, cycles: int) -> float:
    """Median microseconds of ``operation()`` over ``cycles`` calls."""
    samples = []
    for _ in range(cycles):
        started = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def push_claim_ack(queue: Any, limit: int | None = None) -> Callable[[], None]:
    """One more job's round: push it (with ``limit``), claim it at once, acknowledge it."""
    counter = iter(range(10**9))

    def cycle() -> None:
        queue.push(f"job-{next(counter)}", b"x", limit)
        claim = queue.claim(3600, 0)
        if claim is None:
            raise RuntimeError("the job just pushed could not be claimed")
        queue.ack(claim)

    return cycle


def measure(url: str, running: int, cycles: int, limit: int | None) -> dict[str, float]:
    from offload.backends import open_backend

    queue = open_backend(url, f"cost{running}").queue
    assert queue is not None
    try:
        for n in range(running):
            queue.push(f"held-{n}", b"x", None)
        for _ in range(running):
            if queue.claim(3600, 0) is None:
                raise RuntimeError("a pushed job could not be claimed")
        return {
            "running": running,
            "push_claim_ack_us": timed(push_claim_ack(queue, limit), cycles),
            "empty_claim_us": timed(lambda: queue.claim(3600, 0), cycles),
        }
    finally:
        queue.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.claim_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--running", default="0,100,1000,5000", help="jobs left leased, per measurement")
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--limit", type=int, default=10_000, help="max_queued of each push (the default); 0: none")
    parser.add_argument("--json", type=Path, default=Path("claim-cost.json"))
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="offload-claim-") as tmp:
        for kind in (RedisServer, PostgresServer):
            with kind(Path(tmp) / kind.name) as server:
                for running in (int(n) for n in args.running.split(",")):
                    row = measure(server.url_for(f"claim-{running}"), running, args.cycles, args.limit or None)
                    results.setdefault(kind.name, []).append(row)
                    print(
                        f"{kind.name}: {running} running: push+claim+ack {row['push_claim_ack_us']:.0f} us, "
                        f"empty claim {row['empty_claim_us']:.0f} us",
                        file=sys.stderr,
                        flush=True,
                    )
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
