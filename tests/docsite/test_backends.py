"""docs/howto/backends.md as printed: the tutorial's app on Redis, PostgreSQL, memcached with a Redis queue, a cluster.

Only the servers' addresses are the test's own: its Redis database, its
PostgreSQL schema, its memcached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples import ROOT, Document, Example, assert_prints, example
from tests.servers import MemcachedServer

BACKENDS = Document(ROOT / "docs" / "howto" / "backends.md")
TUTORIAL = Document(ROOT / "docs" / "tutorial.md")
CLUSTER = Document(ROOT / "docs" / "operations" / "redis-cluster.md")


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Example]:
    with example(tmp_path) as made:
        made.write(TUTORIAL.block("# myapp.py"))
        yield made


def served(ex: Example) -> None:
    """The tutorial's app answers {"total": 42}, computed by a worker."""
    hit = ex.poll("/report")
    assert (hit.status, json.loads(hit.body)) == (200, {"total": 42}), ex.logs()


def test_redis_with_web_and_worker_machines(ex: Example, redis_url: str) -> None:
    ex.addresses["redis://localhost:6379/0"] = redis_url
    ex.write(BACKENDS.block('url="redis://localhost:6379/0"'))
    ex.shell(BACKENDS.block("offload serve myapp:app --job-workers 0"))
    served(ex)


def test_postgresql_migrated_first(ex: Example, postgres_url: str) -> None:
    ex.addresses["postgresql://localhost/app"] = postgres_url
    ex.write(BACKENDS.block('url="postgresql://localhost/app"'))
    ex.shell(BACKENDS.block("offload migrate --url postgresql://localhost/app"))
    served(ex)


def test_memcached_with_a_redis_queue_and_the_status_of_both(
    ex: Example, memcached: MemcachedServer, redis_url: str
) -> None:
    ex.addresses.update({"memcached://localhost:11211": memcached.url, "redis://localhost:6379/0": redis_url})
    ex.write(BACKENDS.block('cache="memcached://localhost:11211"'))
    (serve, nothing), (status, printed) = BACKENDS.block("$ offload status --app myapp:app").printed()
    assert nothing == []
    ex.start(ex.substituted(serve))
    served(ex)
    done = ex.run(status)
    assert done.returncode == 0, done.stderr
    assert_prints([ex.substituted(line) for line in printed], done.stdout)


def test_redis_cluster(ex: Example, redis_cluster_url: str) -> None:
    """docs/operations/redis-cluster.md's command, on the tests' own cluster of three masters and three replicas."""
    install, serve = CLUSTER.block("offload serve myapp:app --url 'redis+cluster://").commands()
    assert install.startswith("pip install -e")  # the checkout is installed already
    ex.addresses["redis+cluster://10.0.0.1:7000/?seeds=10.0.0.2:7000,10.0.0.3:7000"] = redis_cluster_url
    ex.start(ex.substituted(serve))
    served(ex)
