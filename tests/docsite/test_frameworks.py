"""docs/howto/frameworks.md as printed: each framework's app written out and served with its workers.

Every app of the page starts at once, each in a folder of its own, so that
their servers come up side by side; the tests then ask each for its answer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.examples import ROOT, Document, Example, example, stop_all

FRAMEWORKS = Document(ROOT / "docs" / "howto" / "frameworks.md")

PASSWORD = "correct horse"
STAFF = {"Authorization": "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Example]]:
    """The page's apps, by name, each served as the page says."""
    with ExitStack() as stack:
        apps = {
            name: stack.enter_context(example(tmp_path_factory.mktemp(name)))
            for name in ("flask", "gunicorn", "django", "plain", "fastapi")
        }
        for ex in apps.values():
            ex.env["DASHBOARD_PASSWORD"] = PASSWORD

        flask = apps["flask"]
        flask.write(FRAMEWORKS.block("# myapp.py\n"))
        flask.write(FRAMEWORKS.block("# myapp.py (add at the end)"))
        flask.shell(FRAMEWORKS.block("offload serve myapp:app"))

        gunicorn = apps["gunicorn"]  # the same app, run by gunicorn and a worker of its own
        gunicorn.write(FRAMEWORKS.block("# myapp.py\n"))
        gunicorn.shell(FRAMEWORKS.block("gunicorn myapp:app\noffload worker myapp:app"))

        django = apps["django"]
        django.shell(FRAMEWORKS.block("django-admin startproject mysite ."))
        django.write(FRAMEWORKS.block("# mysite/urls.py"))
        django.write(FRAMEWORKS.block("# mysite/wsgi.py"))
        django.shell(FRAMEWORKS.block("offload serve mysite.wsgi:application"))

        plain = apps["plain"]
        plain.write(FRAMEWORKS.block("# slow.py"))
        plain.shell(FRAMEWORKS.block("offload serve slow:app"))

        fastapi = apps["fastapi"]
        fastapi.write(FRAMEWORKS.block("# main.py\n"))
        fastapi.write(FRAMEWORKS.block("# main.py (add at the end)"))
        fastapi.shell(FRAMEWORKS.block("offload serve main:app"))
        yield apps
        stop_all(apps.values())  # side by side, before each folder's own close


def test_flask_served_by_offload_serve_and_by_gunicorn_with_a_worker(served: dict[str, Example]) -> None:
    for name in ("flask", "gunicorn"):
        answer = served[name].poll("/report")
        assert (answer.status, json.loads(answer.body)) == (200, {"total": 42}), name


def test_django_wsgi(served: dict[str, Example]) -> None:
    answer = served["django"].poll("/report")
    assert (answer.status, json.loads(answer.body)) == (200, {"total": 42})


def test_any_wsgi_callable(served: dict[str, Example]) -> None:
    assert served["plain"].poll("/anything").body == b"computed slowly\n"


def test_fastapi(served: dict[str, Example]) -> None:
    answer = served["fastapi"].poll("/report?name=you")
    assert json.loads(answer.body) == {"report": "for you"}


@pytest.mark.parametrize("name", ["flask", "fastapi"])
def test_the_mounted_tools_answer_at_once_and_the_dashboard_asks_for_the_password(
    served: dict[str, Example], name: str
) -> None:
    ex = served[name]
    ex.poll("/report")  # the server is up, and one answer was counted
    metrics = ex.get("/metrics/")
    assert metrics.status == 200, (metrics, "the metrics are never offloaded")
    assert "offload" not in (metrics.header("Cache-Status") or ""), "excluded: the metrics app's own answer"
    if name == "flask":  # offload.metrics.install(...) counts this app's requests
        assert b'offload_requests_total{namespace="myapp"' in metrics.body, metrics.body[:300]
    assert ex.get("/offload/").status == 401
    page = ex.get("/offload/", headers=STAFF)
    assert page.status == 200 and b"<html" in page.body.lower(), page
    if name == "fastapi":
        assert "offload" not in (page.header("Cache-Status") or ""), "excluded: the dashboard's own answer"
