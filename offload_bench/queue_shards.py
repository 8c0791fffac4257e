"""How a queue spreads over a Redis Cluster's masters: ``python -m offload_bench.queue_shards``.

Starts a throwaway cluster (three masters and their replicas, see
:mod:`offload_bench.cluster`) and, for each shard count asked for
(``?queue_shards=``), pushes ``jobs`` jobs for distinct keys through
offload's own queue, counts the stream entries each master holds, then times
a claim that finds nothing (what an idle worker thread does once a second)
and a push, claim and ack of one job: median microseconds from one client.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from typing import Any

from offload_bench.claim_cost import push_claim_ack, timed
from offload_bench.cluster import RedisCluster


def entries_per_master(cluster: RedisCluster, namespace: str) -> dict[int, int]:
    """The stream entries of the namespace's queue on each master (its shards' streams there)."""
    import redis

    counts: dict[int, int] = {}
    for port in cluster.masters():
        with redis.Redis(port=port) as node:
            streams = list(node.scan_iter(match=f"*:{namespace}:jobs", count=1000))
            counts[port] = sum(int(node.xlen(stream)) for stream in streams)
    return counts


def measure(cluster: RedisCluster, shards: int, jobs: int, cycles: int) -> dict[str, Any]:
    from offload.backends import open_backend

    cluster.flush()  # the stored shard count too: this run's URL stores its own
    queue = open_backend(f"{cluster.url}&queue_shards={shards}", "bench").queue
    assert queue is not None
    try:
        for number in range(jobs):
            queue.push(f"/report?n={number}", b"x")
        spread = entries_per_master(cluster, "bench")
        while queue.claim_many(3600, 0, 1000):
            pass
        empty = timed(lambda: queue.claim(3600, 0), cycles)
        return {
            "shards": shards,
            "entries_per_master": spread,
            "empty_claim_us": empty,
            "push_claim_ack_us": timed(push_claim_ack(queue), cycles),
        }
    finally:
        queue.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.queue_shards", description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs pushed per shard count (default 10000)")
    parser.add_argument("--shards", default="1,16", help="shard counts to compare (default 1,16)")
    parser.add_argument("--cycles", type=int, default=300, help="timed calls per figure (default 300)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        print("redis-server and redis-cli are not installed", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="offload-queue-shards-") as directory:
        cluster = RedisCluster(server, cli, directory)
        cluster.start()
        try:
            for shards in (int(count) for count in options.shards.split(",")):
                results.append(measure(cluster, shards, options.jobs, options.cycles))
        finally:
            cluster.stop()
    if options.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        spread = ", ".join(f"{entries}" for entries in result["entries_per_master"].values())
        print(
            f"{result['shards']:>3} shards: entries per master {spread};"
            f" empty claim {result['empty_claim_us']:.0f} us, push + claim + ack {result['push_claim_ack_us']:.0f} us"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
