"""The README's "Scaling out" examples, run as printed against real servers: the same Flask app on every backend.

Each example's files are written out as the README prints them and its
commands run as printed (``tests/examples.py``); only the servers' addresses
are the test's own: its Redis database, its PostgreSQL schema, its memcached,
and a Celery queue of its own on the shared broker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples import ROOT, Document, Example, example
from tests.servers import MemcachedServer

README = Document(ROOT / "README.md")

#: The first Flask example, which "Scaling out" takes as myapp.py.
FLASK = "app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app, ttl=600)"


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Example]:
    with example(tmp_path) as made:
        yield made


def served(ex: Example) -> None:
    """The README's app answers {"total": 42}, computed by the README's worker."""
    hit = ex.poll("/report")
    assert (hit.status, json.loads(hit.body)) == (200, {"total": 42}), ex.logs()


def test_one_machine_sqlite(ex: Example) -> None:
    ex.write(README.block(FLASK))
    ex.shell(README.block("offload serve myapp:app --job-workers 2 --web-processes 2"))
    served(ex)


def test_redis(ex: Example, redis_url: str) -> None:
    ex.addresses["redis://localhost:6379/0"] = redis_url
    ex.write(README.block(FLASK))
    ex.shell(README.block("export OFFLOAD_URL=redis://"))
    served(ex)


def test_postgresql(ex: Example, postgres_url: str) -> None:
    ex.addresses["postgresql://localhost/app"] = postgres_url
    ex.write(README.block('url="postgresql://localhost/app"'))
    ex.shell(README.block("offload migrate --url"))
    served(ex)


def test_memcached_and_redis(ex: Example, memcached: MemcachedServer, redis_url: str) -> None:
    ex.addresses.update({"memcached://localhost:11211": memcached.url, "redis://localhost:6379/0": redis_url})
    ex.write(README.block(FLASK))
    ex.shell(README.block("export OFFLOAD_CACHE_URL=memcached://"))
    served(ex)
    status = ex.run("offload status --app myapp:app --json")
    assert json.loads(status.stdout)["cached"] == 1, status.stderr


def test_rq(ex: Example, redis_url: str) -> None:
    ex.addresses["redis://localhost:6379/0"] = redis_url
    ex.write(README.block("from rq import Queue"))
    ex.shell(README.block("rq worker offload"))
    served(ex)


def test_celery(ex: Example, redis_url: str, broker_url: str) -> None:
    queue = f"offload-readme-{uuid.uuid4().hex[:8]}"  # a queue of this test's own on the shared broker
    ex.addresses.update(
        {
            "amqp://guest:guest@localhost:5672//": broker_url,
            "redis://localhost:6379/0": redis_url,
            'queue="offload"': f'queue="{queue}"',
            "-Q offload": f"-Q {queue}",
        }
    )
    ex.write(README.block("from celery import Celery"))
    ex.shell(README.block("celery -A myapp:celery worker"))
    served(ex)
