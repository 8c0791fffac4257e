"""A full queue and an unusable backend, seen through a real server: 503 with Retry-After, then recovery."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.wsgi_e2e.conftest import Stack, wait_for

CAP = 3


def test_past_the_queue_cap_a_miss_answers_503_and_queues_nothing(stack: Stack) -> None:
    server = stack.serve(workers=0, OFFLOAD_E2E_MAX_QUEUED=str(CAP))
    answers = [server.get(f"/hello?n={n}") for n in range(12)]
    assert [answer.status for answer in answers] == [202] * CAP + [503] * (12 - CAP)
    for refused in answers[CAP:]:
        assert refused.header("Retry-After") == "1"
        assert refused.header("Cache-Control") == "no-store"
        assert refused.body == b""
    assert stack.status()["queued"] == CAP
    assert server.get("/hello?n=11").status == 503, "a refused URL left no pending marker behind"
    assert stack.status()["queued"] == CAP

    stack.worker()
    for n in range(CAP):
        assert server.poll(f"/hello?n={n}").body == f"GET /hello?n={n}".encode()
    wait_for(stack.idle, what="the worker to drain the queue")
    assert server.get("/hello?n=11").status == 202, "once drained, misses are queued again"
    assert server.poll("/hello?n=11").status == 200
    for n in range(CAP, 11):
        assert stack.events(target=f"/hello?n={n}") == [], "a refused request never runs"


def _missing_directory(directory: Path) -> Path:
    return directory / "not-yet" / "offload.sqlite3"


def _directory_in_the_way(directory: Path) -> Path:
    database = directory / "blocked" / "offload.sqlite3"
    database.mkdir(parents=True)
    return database


def _repair(database: Path) -> None:
    if database.is_dir():
        shutil.rmtree(database)
    database.parent.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("breakage", [_missing_directory, _directory_in_the_way], ids=["no-directory", "dir-as-file"])
def test_an_unusable_backend_answers_503_then_recovers_by_itself(
    stack: Stack, breakage: Callable[[Path], Path]
) -> None:
    database = breakage(stack.directory)
    server = stack.serve(workers=1, url=f"sqlite:///{database}")
    down = server.get("/hello?outage=1")
    assert down.status == 503
    assert down.header("Retry-After") == "1"
    assert down.header("Cache-Control") == "no-store"
    assert down.body == b"", "no traceback page"
    assert server.request("POST", "/echo", body=b"still served").status == 201, "other methods are unaffected"
    wait_for(lambda: "backend unavailable" in server.log(), 30, "a log line about the outage")
    assert "Traceback" not in server.log()

    _repair(database)

    def recovered() -> int | None:
        status = server.get("/hello?outage=1").status
        return None if status == 503 else status

    assert wait_for(recovered, 60, "the backend to be usable again") == 202
    hit = server.poll("/hello?outage=1", timeout=90)
    assert (hit.status, hit.body) == (200, b"GET /hello?outage=1")
