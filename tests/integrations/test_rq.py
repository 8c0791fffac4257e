"""RQ: ``queue=rq.Queue(...)``, the job run by a plain ``rq worker`` process, memcached or Redis as the cache.

Only the tests whose cache is memcached start one: where Redis is the cache,
they need Redis alone.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from offload.integrations.rq import RQQueue
from tests.integrations import flask_app
from tests.integrations.stacks import BIN, assert_served_from_cache, concurrent_misses, get, run, worker_env
from tests.servers import MemcachedServer

rq = pytest.importorskip("rq")


def rq_stack(redis_url: str, request: pytest.FixtureRequest, serializer: str, cache_client: str) -> dict[str, str]:
    """The stack of one test; ``cache_client`` ``url`` and ``pymemcache`` use the module's memcached."""
    if cache_client == "redis":
        cache = redis_url
    else:
        memcached: MemcachedServer = request.getfixturevalue("memcached")
        cache = memcached.url if cache_client == "url" else memcached.address
    stack = {
        "queue": "rq",
        "redis": redis_url,
        "rq_queue": f"offload-test-{uuid.uuid4().hex[:8]}",
        "serializer": serializer,
        "cache": cache,
    }
    if cache_client != "url":
        stack["cache_client"] = cache_client
    return stack


def burst_worker(stack: dict[str, str]) -> None:
    serializer = "rq.serializers.JSONSerializer" if stack["serializer"] == "json" else "rq.serializers.PickleSerializer"
    done = run(
        [str(BIN / "rq"), "worker", stack["rq_queue"], "--burst", "--url", stack["redis"], "--serializer", serializer],
        worker_env(stack),
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("serializer", "cache_client"), [("json", "url"), ("pickle", "pymemcache"), ("json", "redis")])
def test_full_cycle_with_rq_worker(
    redis_url: str,
    request: pytest.FixtureRequest,
    count_dir: Path,
    make_app: Any,
    serializer: str,
    cache_client: str,
) -> None:
    stack = rq_stack(redis_url, request, serializer, cache_client)
    app = make_app(stack)
    offloader = app.wsgi_app.offloader  # type: ignore[attr-defined]
    assert isinstance(offloader.queue, RQQueue)

    assert concurrent_misses(app, "/report/q3") == [202] * 8
    assert offloader.queue.queue.count == 1  # one job for eight misses
    assert flask_app.executions("q3") == 0  # nothing computed in the web process

    burst_worker(stack)
    assert flask_app.executions("q3") == 1
    assert_served_from_cache(app, "q3")
    assert offloader.queue.stats() == {"queued": 0, "running": 0}
    assert offloader.cache.stats() == {"cached": 1, "failed": 0}  # the client's keys are listed for status
    assert offloader.expire("/report/*") == 1
    assert get(app, "/report/q3").status_code == 202


def test_a_key_runs_again_after_its_answer_expires(
    redis_url: str, request: pytest.FixtureRequest, count_dir: Path, make_app: Any
) -> None:
    """A finished job must not block the next one for its key (RQ keeps job ids of finished jobs)."""
    stack = rq_stack(redis_url, request, "json", "redis")
    app = make_app(stack)
    assert get(app, "/report/again").status_code == 202
    burst_worker(stack)
    assert_served_from_cache(app, "again")

    assert app.wsgi_app.expire("/report/*") == 1  # type: ignore[attr-defined]
    assert get(app, "/report/again").status_code == 202
    assert app.wsgi_app.offloader.queue.queue.count == 1  # type: ignore[attr-defined]
    burst_worker(stack)
    assert flask_app.executions("again") == 2
    assert_served_from_cache(app, "again")


def test_a_failed_job_does_not_block_its_key(
    redis_url: str, request: pytest.FixtureRequest, count_dir: Path, make_app: Any
) -> None:
    """A worker without OFFLOAD_APP fails the job; once configured, the next miss runs it."""
    stack = rq_stack(redis_url, request, "json", "redis")
    app = make_app(stack)
    assert get(app, "/report/broken").status_code == 202
    env = worker_env(stack)
    del env["OFFLOAD_APP"]
    done = run(
        [str(BIN / "rq"), "worker", stack["rq_queue"], "--burst", "--url", redis_url, "--serializer", "json"], env
    )
    assert "OFFLOAD_APP" in done.stdout + done.stderr
    queue = app.wsgi_app.offloader.queue.queue  # type: ignore[attr-defined]
    assert queue.failed_job_registry.count == 1

    app.wsgi_app.offloader.cache.delete(app.wsgi_app.offloader.pending_key(next(iter(_keys(queue)))))  # type: ignore[attr-defined]
    assert get(app, "/report/broken").status_code == 202
    assert queue.count == 1
    burst_worker(stack)
    assert_served_from_cache(app, "broken")


def _keys(queue: object) -> list[str]:
    registry = queue.failed_job_registry  # type: ignore[attr-defined]
    return [job_id.removeprefix("offload-") for job_id in registry.get_job_ids()]
