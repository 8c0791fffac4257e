"""Garbage and pickles planted in the SQLite store: a miss and a log line, never code execution."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offload.keys import request_key, target_from_url
from offload.records import MAGIC, PendingMarker
from tests.wsgi_e2e.conftest import Stack, wait_for


class Exploit:
    """Unpickling this creates the directory ``marker``: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.marker,)


def poisons(marker: Path) -> dict[str, bytes]:
    exploit = pickle.dumps(Exploit(marker))
    return {
        "pickle": exploit,
        "pickle-after-magic": MAGIC + exploit,
        "garbage": b"\x00\xff garbage \x80",
        "bad-json": MAGIC + b"{not json\n",
        "truncated": MAGIC
        + b'{"kind":"response","status":200,"headers":[],"length":99,"created":0,"failed":false}\nshort',
        "wrong-kind": MAGIC + b'{"kind":"request"}\n',
    }


def test_the_exploit_really_runs_when_unpickled(tmp_path: Path) -> None:
    """The planted payload is a live one: a store that unpickled it would create the marker."""
    probe = tmp_path / "probe"
    code = "import pickle, sys; pickle.loads(bytes.fromhex(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, pickle.dumps(Exploit(probe)).hex()], check=True, timeout=60)
    assert probe.exists()


#: The namespace of the plain app (offload.namespaces derives it from the app itself).
NAMESPACE = "tests-wsgi_e2e-apps-plain-bare"


def _key(port: int, path: str, query: str) -> str:
    """The key of a GET the test client sends (Host 127.0.0.1:PORT, no credentials)."""
    target = target_from_url(f"http://127.0.0.1:{port}{path}?{query}")
    return request_key(target, [("authorization", None), ("cookie", None)])


def _plant_answer(stack: Stack, port: int, path: str, query: str, value: bytes) -> None:
    key = f"{NAMESPACE}:r:" + _key(port, path, query)
    stack.sql(
        "INSERT OR REPLACE INTO offload_cache (key, value, expires, path, query, failed, namespace) "
        "VALUES (?, ?, ?, ?, ?, 0, ?)",
        (key, value, time.time() + 3600, path, query, NAMESPACE),
    )


def test_poisoned_cached_answers_are_misses_and_log_lines(stack: Stack) -> None:
    marker = stack.directory / "unpickled"
    assert stack.cli("migrate", "--url", stack.db_url).returncode == 0
    planted = poisons(marker)
    server = stack.serve(workers=1)
    for name, value in planted.items():
        _plant_answer(stack, server.port, "/hello", f"poison={name}", value)
    for name in planted:
        target = f"/hello?poison={name}"
        assert server.get(target).status == 202, name
    for name in planted:
        target = f"/hello?poison={name}"
        assert server.poll(target).body == f"GET {target}".encode(), "the worker replaced the poison"
    wait_for(lambda: server.log().count("not in offload's format") >= len(planted), 30, "one log line per poison")
    assert "Traceback" not in server.log()
    assert not marker.exists(), "nothing read from the store was unpickled"


@pytest.mark.parametrize("key_matches", [True, False], ids=["job-key-of-a-real-url", "foreign-key"])
def test_poisoned_jobs_are_dropped_and_the_worker_keeps_working(stack: Stack, key_matches: bool) -> None:
    marker = stack.directory / "unpickled"
    assert stack.cli("migrate", "--url", stack.db_url).returncode == 0
    planted = poisons(marker)
    server = stack.serve(workers=1)
    key = _key(server.port, "/hello", "job=poisoned") if key_matches else "not-a-key"
    # As a real miss would, mark the key pending: a dropped job must not leave the URL stuck at 202.
    pending = PendingMarker("queued", time.time()).encode()
    stack.sql(
        "INSERT INTO offload_cache (key, value, expires, namespace) VALUES (?, ?, ?, ?)",
        (f"{NAMESPACE}:p:" + key, pending, time.time() + 600, NAMESPACE),
    )
    for value in planted.values():
        stack.sql("INSERT INTO offload_jobs (key, payload, namespace) VALUES (?, ?, ?)", (key, value, NAMESPACE))
    wait_for(stack.idle, 60, "the worker to drop the poisoned jobs")
    assert stack.sql("SELECT COUNT(*) FROM offload_jobs") == [(0,)]
    worker_log = server.log()
    assert worker_log.count("not in offload's format") >= len(planted)
    assert "Traceback" not in worker_log
    assert not marker.exists(), "nothing read from the queue was unpickled"

    assert server.get("/hello?job=after").status == 202
    assert server.poll("/hello?job=after").body == b"GET /hello?job=after", "the worker still works"
    if key_matches:  # the URL whose job was poisoned is not stuck behind a pending marker
        assert server.get("/hello?job=poisoned").status == 202
        assert server.poll("/hello?job=poisoned").body == b"GET /hello?job=poisoned"
