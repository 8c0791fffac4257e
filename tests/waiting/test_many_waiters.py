"""A thousand requests waiting on one ASGI process (``Prefer: wait``): no thread each, bounded memory, all answered.

uvicorn serves the waiting app with one web process and one worker; a
thousand connections ask for one slow URL with ``Prefer: wait=30``. While
they wait, the web process's resident memory is read from /proc; when the one
job lands, every connection gets the 200. The bound asserted is the one
docs/PERFORMANCE.md documents.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.asgi import BACKEND_THREADS
from tests.deployments import Site, serving

CONNECTIONS = 1000
#: The documented bound: what a thousand waiting connections may add to the web process.
MAX_GROWTH_MIB = 64


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * CONNECTIONS:  # the server, inheriting it, holds one socket per connection too
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * CONNECTIONS), hard))
    site = Site("asgi", "sqlite", f"sqlite:///{tmp_path / 'offload.sqlite3'}", tmp_path)
    with serving(site, "tests.waiting.site:asgi_app"):
        yield site


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def web_process(site: Site) -> int:
    """The uvicorn process serving the site: the child of ``offload serve`` that listens."""
    supervisor = site.processes[0].pid
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for child in children:
        command = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"uvicorn" in command:
            return int(child)
    raise AssertionError(f"no uvicorn among {children}")


async def one(port: int, target: str, connected: asyncio.Event, counter: list[int]) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nPrefer: wait=30\r\nConnection: close\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    counter[0] += 1
    if counter[0] == CONNECTIONS:
        connected.set()
    data = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def test_a_thousand_waiting_connections_cost_no_thread_and_bounded_memory(site: Site, run: str) -> None:
    pid = web_process(site)
    target = f"/slow?run={run}&s=4"
    assert site.get(f"/slow?run=warm-{run}", {"Prefer": "wait=10"}).status == 200  # every module loaded
    before = rss_mib(pid)
    threads_before = len(os.listdir(f"/proc/{pid}/task"))
    peak: list[float] = []

    async def scenario() -> list[tuple[int, bytes]]:
        connected = asyncio.Event()
        counter = [0]
        tasks = [asyncio.create_task(one(site.port, target, connected, counter)) for _ in range(CONNECTIONS)]
        await asyncio.wait_for(connected.wait(), 60)
        await asyncio.sleep(1.0)  # every request reached the middleware and waits
        peak.append(rss_mib(pid))
        peak.append(len(os.listdir(f"/proc/{pid}/task")))
        return await asyncio.gather(*tasks)

    started = time.monotonic()
    answers = asyncio.run(scenario())
    assert time.monotonic() - started < 40
    assert [status for status, _ in answers] == [200] * CONNECTIONS
    assert all(f"done {run}".encode() in body for _, body in answers)  # (chunked: the body inside its frame)
    growth = peak[0] - before
    assert growth < MAX_GROWTH_MIB, f"{CONNECTIONS} waiting connections grew the web process by {growth:.1f} MiB"
    assert peak[1] <= threads_before + BACKEND_THREADS + 4, "waiting requests must not hold a thread each"
    print(f"{CONNECTIONS} waiting: {before:.1f} -> {peak[0]:.1f} MiB, {threads_before} -> {peak[1]:.0f} threads")
