"""How soon a waiting client gets its answer (``Prefer: wait``), and what a waiting connection costs.

``python -m offload_bench.waiting [--jobs 60] [--connections 1000]`` serves an
ASGI app with ``offload serve`` (uvicorn, one web process, one worker) on each
backend, and for each:

* latency: a client asks for a new URL with ``Prefer: wait=10``; the app
  sleeps 100 ms and answers the time it finished; the client notes when the
  200 arrives. The difference is the time from the job's end to the waiting
  client's answer (storing it, the backend's notification, the web process
  reading it back): median and p99 over ``--jobs`` URLs.
* memory: ``--connections`` clients wait on one slow URL at once; the web
  process's resident memory before and while they wait, per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from offload import ASGIMiddleware
from offload_bench.procs import ROOT, accepting, free_port, wait_for
from offload_bench.servers import PostgresServer, RedisServer, SQLiteFiles

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def job(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """``/job?ms=N``: sleeps N ms, answers the time it finished."""
    if scope["type"] != "http":
        return
    await asyncio.sleep(int(parse_qs(scope["query_string"].decode()).get("ms", ["100"])[0]) / 1000)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": repr(time.time()).encode()})


app = ASGIMiddleware(job, max_wait=60, lease=10)


def serve(url: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, "-m", "offload", "serve", "offload_bench.waiting:app", "--url", url]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--web-processes", "1", "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(directory)}
    process = subprocess.Popen(command, cwd=directory, env=env, start_new_session=True)
    wait_for(lambda: accepting(port), 60, "offload serve to listen")
    return process, port


def latencies(port: int, jobs: int) -> list[float]:
    found = []
    for n in range(jobs):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/job?ms=100&n={n}-{time.time()}")
        request.add_header("Prefer", "wait=10")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            arrived = time.time()
        if response.status == 200:
            found.append(arrived - float(body))
    return found


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def web_pid(supervisor: int) -> int:
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        if b"uvicorn" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise RuntimeError("no uvicorn process")


def memory_per_connection(port: int, pid: int, connections: int) -> dict[str, float]:
    async def one(target: str, ready: list[int]) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nPrefer: wait=30\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        ready[0] += 1
        data = await asyncio.wait_for(reader.read(), 90)
        writer.close()
        return int(data.split(b" ", 2)[1])

    async def run() -> tuple[float, list[int]]:
        ready = [0]
        target = f"/job?ms=5000&m={time.time()}"
        tasks = [asyncio.create_task(one(target, ready)) for _ in range(connections)]
        while ready[0] < connections:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        during = rss_mib(pid)
        return during, await asyncio.gather(*tasks)

    before = rss_mib(pid)
    during, statuses = asyncio.run(run())
    return {
        "before_mib": before,
        "waiting_mib": during,
        "kib_per_connection": (during - before) * 1024 / connections,
        "answered": statuses.count(200),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args(argv)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8 * args.connections)), hard))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        servers = {"sqlite": SQLiteFiles(directory / "sqlite"), "redis": RedisServer(directory / "redis")}
        if PostgresServer.missing() is None:
            servers["postgres"] = PostgresServer(directory / "postgres")
        for name, server in servers.items():
            server.launch()
            try:
                process, port = serve(server.url_for("waiting"), directory)
                try:
                    found = sorted(latencies(port, args.jobs))
                    memory = memory_per_connection(port, web_pid(process.pid), args.connections)
                finally:
                    process.terminate()
                    process.wait(60)
            finally:
                server.close()
            p99 = found[min(len(found) - 1, int(len(found) * 0.99))]
            results[name] = {"median_ms": statistics.median(found) * 1000, "p99_ms": p99 * 1000, **memory}
            print(
                f"{name:9} job end -> 200: median {results[name]['median_ms']:.1f} ms, p99 {p99 * 1000:.1f} ms; "
                f"{args.connections} waiting: {memory['before_mib']:.1f} -> {memory['waiting_mib']:.1f} MiB "
                f"({memory['kib_per_connection']:.1f} KiB each), {memory['answered']:.0f} answered",
                flush=True,
            )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
