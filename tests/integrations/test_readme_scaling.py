"""The README's "Scaling out" snippets, each run for real: the same Flask app on every backend.

Each snippet replaces the last line of the README's Flask example; the result
is written out as ``myapp.py``, served in-process by Flask's test client, and
its jobs are run by the worker command the README gives (``offload worker``,
``rq worker``, ``celery worker``), against real servers. Only the server
addresses are swapped for the test's own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integrations.stacks import ROOT, eventually
from tests.servers import MemcachedServer

README = (ROOT / "README.md").read_text(encoding="utf-8")
SCALING = README.split("## Scaling out", 1)[1].split("\n## ", 1)[0]


def readme_block(text: str, section: str = README) -> str:
    blocks = [block for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if text in block]
    assert len(blocks) == 1, f"expected one README example containing {text!r}"
    return blocks[0]


def myapp_source(snippet: str, addresses: dict[str, str]) -> str:
    base = readme_block("from flask import Flask").rstrip().splitlines()
    assert base[-1].startswith("app.wsgi_app = "), "the Flask example must end with the line the snippets replace"
    source = "\n".join(base[:-1]) + "\n" + snippet
    for old, new in addresses.items():
        assert old in source, f"the README snippet no longer uses {old}"
        source = source.replace(old, new)
    return source


class MyApp:
    """``myapp.py`` in a directory of its own, importable here and by worker processes."""

    def __init__(self, directory: Path, source: str, env: dict[str, str]) -> None:
        self.directory = directory
        (directory / "myapp.py").write_text(source, encoding="utf-8")
        self.env = dict(os.environ, **env)
        self.env["OFFLOAD_APP"] = "myapp:app"
        self.env["PYTHONPATH"] = os.pathsep.join([str(directory), str(ROOT)])
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            # Imported as "myapp", as the worker imports it: a Flask app is named by its module (namespaces).
            spec = importlib.util.spec_from_file_location("myapp", directory / "myapp.py")
            assert spec is not None and spec.loader is not None
            self.module: Any = importlib.util.module_from_spec(spec)
            sys.modules["myapp"] = self.module
            spec.loader.exec_module(self.module)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        self.processes: list[subprocess.Popen[bytes]] = []

    def get(self) -> Any:
        with self.module.app.test_client() as client:
            return client.get("/report")

    def start(self, command: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            command, cwd=self.directory, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        sys.modules.pop("myapp", None)
        offloader = self.module.app.wsgi_app.offloader
        offloader.cache.close()
        offloader.queue.close()
        celery = getattr(self.module, "celery", None)
        if celery is not None:
            celery.close()  # its broker connection pool
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(30)
            if process.stderr is not None:
                process.stderr.close()


@pytest.fixture
def myapp(tmp_path: Path) -> Iterator[Any]:
    made: list[MyApp] = []

    def make(snippet: str, addresses: dict[str, str], env: dict[str, str] | None = None) -> MyApp:
        app = MyApp(tmp_path, myapp_source(snippet, addresses), env or {})
        made.append(app)
        return app

    yield make
    for app in made:
        app.stop()


def full_cycle(app: MyApp, worker: list[str]) -> None:
    """A miss answers 202; the README's worker command computes it; then it is served from the cache."""
    assert app.get().status_code == 202
    process = app.start(worker)
    assert eventually(lambda: app.get().status_code == 200, within=90), _stderr(process)
    hit = app.get()
    assert hit.get_json() == {"total": 42}


def _stderr(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        process.kill()
        process.wait(30)
    return process.stderr.read().decode(errors="replace")[-3000:] if process.stderr else ""


OFFLOAD_WORKER = [sys.executable, "-m", "offload", "worker", "myapp:app", "--burst"]


def test_sqlite_default(myapp: Any, tmp_path: Path) -> None:
    snippet = readme_block("from flask import Flask").rstrip().splitlines()[-1]
    app = myapp(snippet, {}, env={"OFFLOAD_URL": f"sqlite:///{tmp_path}/offload.sqlite3"})
    full_cycle(app, OFFLOAD_WORKER)


def test_redis(myapp: Any, redis_url: str) -> None:
    app = myapp(readme_block('url="redis://', SCALING), {"redis://localhost:6379/0": redis_url})
    full_cycle(app, OFFLOAD_WORKER)


def test_postgresql(myapp: Any, postgres_url: str) -> None:
    app = myapp(readme_block('url="postgresql://', SCALING), {"postgresql://localhost/app": postgres_url})
    full_cycle(app, OFFLOAD_WORKER)


def test_memcached_and_redis(myapp: Any, memcached: MemcachedServer, redis_url: str) -> None:
    addresses = {"memcached://localhost:11211": memcached.url, "redis://localhost:6379/0": redis_url}
    app = myapp(readme_block('cache="memcached://', SCALING), addresses)
    full_cycle(app, OFFLOAD_WORKER)


def test_rq(myapp: Any, redis_url: str) -> None:
    addresses = {"Redis()": f"Redis.from_url({redis_url!r})", "redis://localhost:6379/0": redis_url}
    app = myapp(readme_block("from rq import Queue", SCALING), addresses)
    rq = str(Path(sys.executable).parent / "rq")
    full_cycle(
        app, [rq, "worker", "offload", "--serializer", "rq.serializers.JSONSerializer", "--burst", "--url", redis_url]
    )


def test_celery(myapp: Any, redis_url: str, broker_url: str) -> None:
    addresses = {"amqp://guest:guest@localhost:5672//": broker_url, "redis://localhost:6379/0": redis_url}
    app = myapp(readme_block("from celery import Celery", SCALING), addresses)
    queue = f"offload-readme-{uuid.uuid4().hex[:8]}"  # a queue of this test's own on the shared broker
    app.module.app.wsgi_app.offloader.queue.queue_name = queue
    celery = str(Path(sys.executable).parent / "celery")
    full_cycle(app, [celery, "-A", "myapp:celery", "worker", "--pool", "solo", "-Q", queue, "--without-heartbeat"])
