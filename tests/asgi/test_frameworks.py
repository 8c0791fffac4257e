"""FastAPI, Starlette, Quart, Django and a plain ASGI callable through the middleware, in-process.

The web side is called through httpx's ASGI transport; the jobs run through
the same app object in worker threads, lifespan included.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.asgi.frameworks import APPS, GREETING, load_fresh, needs_own_process, run_in_own_process, run_jobs


@pytest.fixture(params=sorted(APPS))
def app(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app, loaded fresh; None when the test ran (and passed) in a child interpreter instead."""
    if needs_own_process(request.param):
        run_in_own_process(request.node.nodeid)
        yield None
        return
    monkeypatch.setenv("OFFLOAD_URL", f"sqlite:///{tmp_path / 'offload.sqlite3'}")
    with ExitStack() as stack:
        if request.param == "django":
            from django.test.utils import override_settings

            importlib.import_module(APPS["django"][0])  # configures Django unless a test did already
            # Configured by the app's module, or by whoever imported Django first: route to this app.
            stack.enter_context(override_settings(ROOT_URLCONF=APPS["django"][0], ALLOWED_HOSTS=["*"]))
        yield load_fresh(request.param)


def test_a_miss_is_202_then_the_worker_answer_is_served_byte_for_byte(app: Any) -> None:
    if app is None:
        return

    async def scenario() -> None:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = await client.get("/report", params={"name": "ada"})
            assert first.status_code == 202
            assert first.content == b""
            assert first.headers["retry-after"] == "1"
            assert first.headers["cache-control"] == "no-store"
            assert (await client.get("/report", params={"name": "ada"})).status_code == 202
            assert await asyncio.to_thread(run_jobs, app) == 1, "two misses, one job"
            hit = await client.get("/report", params={"name": "ada"})
            again = await client.get("/report", params={"name": "ada"})
            head = await client.head("/report", params={"name": "ada"})

        assert hit.status_code == 200
        assert hit.text == f"{GREETING} ada, computed by process {os.getpid()}"
        assert hit.headers["content-type"].startswith("text/plain")
        assert (again.content, again.headers.multi_items()) == (hit.content, hit.headers.multi_items())
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers.multi_items() == hit.headers.multi_items(), "HEAD has the GET's headers"

    asyncio.run(scenario())


def test_other_methods_reach_the_app(app: Any) -> None:
    if app is None:
        return

    async def scenario() -> int:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post("/report")
            return response.status_code

    # No framework answers POST /report (a 405, or 200 for the plain app); none of them answer 202.
    assert asyncio.run(scenario()) != 202
