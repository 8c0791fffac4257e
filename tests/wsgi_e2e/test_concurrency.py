"""The SQLite backend shared by several web processes, worker processes and client processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.wsgi_e2e.conftest import Stack, wait_for

CLIENTS = 4
THREADS_PER_CLIENT = 8


def test_concurrent_misses_from_many_processes_run_the_handler_once(stack: Stack) -> None:
    server = stack.serve(workers=2, web_processes=3)
    target = "/slow?race=1&s=1"
    start_at = time.time() + 3  # every client process is up and waiting by then
    command = [sys.executable, "-m", "tests.wsgi_e2e.burst_client", str(server.port), target]
    command += [str(start_at), str(THREADS_PER_CLIENT)]
    clients = [
        subprocess.Popen(
            command,
            cwd=stack.directory,
            env=stack.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(CLIENTS)
    ]
    stack.processes.extend(clients)
    statuses: list[int] = []
    for client in clients:
        out, _ = client.communicate(timeout=120)
        assert client.returncode == 0
        statuses += json.loads(out)
    assert len(statuses) == CLIENTS * THREADS_PER_CLIENT
    assert set(statuses) <= {202, 200}
    assert 202 in statuses

    hit = server.poll(target)
    assert (hit.status, hit.body) == (200, b"GET /slow?race=1&s=1")
    wait_for(stack.idle, what="the queue to be empty")
    assert len(stack.events(target=target)) == 1, "N concurrent misses ran the handler exactly once"
    jobs_ever = stack.sql("SELECT seq FROM sqlite_sequence WHERE name = 'offload_jobs'")
    assert jobs_ever == [(1,)], "and enqueued exactly one job"
    assert len(stack.events("end", target=target)) == 1
