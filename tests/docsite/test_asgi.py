"""docs/ASGI.md as printed: each ASGI app written out, served (offload serve, or uvicorn and a worker), answered.

The page's apps start at once, each in a folder of its own, so that their
servers come up side by side; the tests then ask each for its answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.examples import ROOT, Document, Example, example, stop_all, wait_for

ASGI = Document(ROOT / "docs" / "ASGI.md")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Example]]:
    """The page's apps, by framework, each served as the page says."""
    with ExitStack() as stack:
        apps = {
            name: stack.enter_context(example(tmp_path_factory.mktemp(name)))
            for name in ("fastapi", "starlette", "quart", "django", "plain")
        }
        apps["fastapi"].write(ASGI.block("from fastapi import FastAPI"))
        apps["fastapi"].shell(ASGI.block("$ offload serve main:app"))

        apps["starlette"].write(ASGI.block("from starlette.applications import Starlette"))
        apps["starlette"].shell(ASGI.block("offload serve shop:app"))

        apps["quart"].write(ASGI.block("from quart import Quart, request"))
        apps["quart"].shell(ASGI.block("uvicorn hello:app\noffload worker hello:app"))

        django = apps["django"]
        django.shell(ASGI.block("django-admin startproject myproject ."))
        django.write(ASGI.block("# myproject/urls.py"))
        django.write(ASGI.block("# myproject/asgi.py"))
        django.shell(ASGI.block("uvicorn myproject.asgi:application\noffload worker myproject.asgi:application"))

        apps["plain"].write(ASGI.block("# plain.py"))
        apps["plain"].shell(ASGI.block("offload serve plain:app"))
        yield apps
        stop_all(apps.values())  # side by side, before each folder's own close


def test_fastapi_with_its_lifespan_in_the_worker(served: dict[str, Example]) -> None:
    ex = served["fastapi"]
    wait_for(ex.listening, 60, f"offload serve main:app\n{ex.logs()}")
    assert ex.get("/report?name=you").status == 202
    assert ex.poll("/report?name=you").body == b"hello you", "request.state holds what the lifespan opened"


def test_starlette_with_its_lifespan_in_the_worker(served: dict[str, Example]) -> None:
    assert served["starlette"].poll("/report?name=you").body == b"hello you"


def test_quart_served_by_uvicorn_with_a_worker(served: dict[str, Example]) -> None:
    assert json.loads(served["quart"].poll("/report?name=you").body) == {"report": "for you"}


def test_django_under_asgi(served: dict[str, Example]) -> None:
    assert served["django"].poll("/report?name=you").body == b"hello you"


def test_any_asgi_app(served: dict[str, Example]) -> None:
    answer = served["plain"].poll("/anything")
    assert (answer.status, answer.body) == (200, b"computed slowly\n")
    assert (answer.header("Cache-Status") or "").startswith("offload; hit; ttl="), answer.headers
