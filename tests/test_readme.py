"""The README's Python examples run, and do what the README says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.behaviour.harness import WSGIHarness

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def block_containing(text: str) -> str:
    matches = [block for block in python_blocks() if text in block]
    assert len(matches) == 1, f"expected one README example containing {text!r}"
    return matches[0]


@pytest.fixture
def readme_url(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> str:
    monkeypatch.setenv("OFFLOAD_URL", sqlite_url)
    return sqlite_url


def test_flask_example(readme_url: str) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_flask"}
    exec(block_containing("from flask import Flask"), namespace)
    harness = WSGIHarness.around(namespace["app"].wsgi_app)
    hit = harness.get_after_work("/report")
    assert hit.status == 200
    assert hit.body.strip() == b'{"total":42}'
    exec(block_containing("offload.expire("), namespace)
    assert harness.request("GET", "/report").status == 200, "expire() of other paths keeps /report"
    assert namespace["offload"].expire("/rep*") == 1
    assert harness.request("GET", "/report").status == 202


def test_plain_wsgi_example(readme_url: str) -> None:
    namespace: dict[str, Any] = {}
    exec(block_containing("def slow_app"), namespace)
    assert WSGIHarness.around(namespace["app"]).get_after_work("/anything").body == b"computed slowly\n"


def test_django_example(readme_url: str) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF="tests.test_readme",
            SECRET_KEY="readme-test",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()
    from django.test.utils import override_settings

    namespace: dict[str, Any] = {}
    exec(block_containing("get_wsgi_application"), namespace)
    # Another test module may have configured Django first: route to this module's view either way.
    with override_settings(ROOT_URLCONF="tests.test_readme", ALLOWED_HOSTS=["*"], MIDDLEWARE=[]):
        hit = WSGIHarness.around(namespace["application"]).get_after_work("/django-report")
    assert (hit.status, hit.body) == (200, b"django report")


def _django_view(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(b"django report")


def __getattr__(name: str) -> Any:
    # Django reads urlpatterns from ROOT_URLCONF lazily; build it only when asked.
    if name == "urlpatterns":
        from django.urls import path

        return [path("django-report", _django_view)]
    raise AttributeError(name)


@pytest.mark.parametrize(
    ("marker", "source"),
    [
        ("from fastapi import FastAPI, Request", "fastapi_app.py"),
        ("from starlette.applications import Starlette", "starlette_app.py"),
        ("from django.core.asgi import get_asgi_application", "django_app.py"),
        ("from quart import Quart, request", "quart_app.py"),
    ],
)
def test_asgi_examples_are_the_tested_apps(marker: str, source: str) -> None:
    """Each ASGI snippet is code of an app that tests/asgi serves end to end; every line is there."""
    app_source = (Path(__file__).parent / "asgi" / "apps" / source).read_text(encoding="utf-8")
    app_lines = {line.split("  #")[0].rstrip() for line in app_source.splitlines()}
    for line in block_containing(marker).splitlines():
        line = line.split("  #")[0]
        assert line.rstrip() in app_lines, f"README line {line!r} is not in tests/asgi/apps/{source}"
