"""Celery: ``queue=CeleryQueue(celery_app)``, the job run as a task by a normal ``celery worker`` process.

Redis is the cache: these tests need the broker and Redis, nothing else.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offload.errors import QueueFull
from tests.integrations import flask_app
from tests.integrations.stacks import (
    BIN,
    ROOT,
    assert_served_from_cache,
    concurrent_misses,
    eventually,
    get,
    worker_env,
)

pytest.importorskip("celery")


@pytest.fixture
def celery_stack(broker_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    stack = {
        "queue": "celery",
        "broker": broker_url,
        "celery_queue": f"offload-test-{uuid.uuid4().hex[:8]}",
        "cache": redis_url,
    }
    yield stack
    _, _, celery_app = flask_app.build(stack)
    with celery_app.connection_for_write() as connection:  # leave no test queue behind in the broker
        connection.default_channel.queue_delete(stack["celery_queue"])


@pytest.fixture
def celery_worker(celery_stack: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start a prefork ``celery worker`` on the stack's queue when called; stop it after the test."""
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "celery.log"

    def start() -> None:
        command = [
            str(BIN / "celery"), "-A", "tests.integrations.flask_app:celery", "worker",
            "-Q", celery_stack["celery_queue"], "--concurrency", "2", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--logfile", str(log),
        ]  # fmt: skip
        started.append(subprocess.Popen(command, env=worker_env(celery_stack), cwd=ROOT))

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_full_cycle_with_celery_worker(
    celery_stack: dict[str, str], celery_worker: Any, count_dir: Path, make_app: Any
) -> None:
    app = make_app(celery_stack)
    queue = app.wsgi_app.offloader.queue

    assert concurrent_misses(app, "/report/q4") == [202] * 8
    assert queue.stats() == {"queued": 1}  # one task for eight misses, waiting in the broker
    assert flask_app.executions("q4") == 0

    celery_worker()
    assert eventually(lambda: get(app, "/report/q4").status_code == 200), "the celery worker never stored the answer"
    assert flask_app.executions("q4") == 1
    assert_served_from_cache(app, "q4")
    assert queue.stats() == {"queued": 0}


def test_backpressure_counts_the_broker_queue(celery_stack: dict[str, str], count_dir: Path, make_app: Any) -> None:
    app = make_app(celery_stack)
    offloader = app.wsgi_app.offloader
    offloader.queue.push("k1", b"offload/1\n{}", limit=1)
    assert eventually(lambda: offloader.queue.stats() == {"queued": 1}, within=10)
    with pytest.raises(QueueFull):
        offloader.queue.push("k2", b"offload/1\n{}", limit=1)
