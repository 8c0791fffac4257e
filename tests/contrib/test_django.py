"""offload.contrib.django in a real project layout, served by gunicorn, its jobs run by ``manage.py offload_worker``.

The project (``tests/contrib/djangoproject``) is what ``startproject`` makes
plus what the README says to add: the app, the middleware first, ``OFFLOAD``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.examples import Example, wait_for

PROJECT = Path(__file__).resolve().parent / "djangoproject"


def project(directory: Path, offload: dict[str, object] | None = None) -> Example:
    made = Example(directory)
    made.env.update(
        DJANGO_SETTINGS_MODULE="mysite.settings",
        PYTHONPATH=f"{PROJECT}:{made.env['PYTHONPATH']}",
        REPORTS_WORK_DIR=str(directory),
        REPORTS_CALLS_LOG=str(directory / "calls.log"),
    )
    if offload is not None:
        made.env["REPORTS_OFFLOAD"] = json.dumps(offload)
    return made


def runs(ex: Example, view: str) -> int:
    """How many times ``view`` ran, in any process."""
    log = ex.directory / "calls.log"
    return sum(1 for line in log.read_text().splitlines() if line.split()[0] == view) if log.exists() else 0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    ex = project(tmp_path_factory.mktemp("django"))
    try:
        ex.start("gunicorn mysite.wsgi --workers 2")
        ex.start(f"python {PROJECT}/manage.py offload_worker")
        wait_for(ex.listening, 60, "gunicorn")
        yield ex
    finally:
        ex.close()


def test_a_marked_view_is_computed_once_by_the_worker_then_served_from_the_cache(site: Example) -> None:
    assert site.get("/report?q=1").status == 202
    hit = site.poll("/report?q=1")
    assert (hit.status, hit.body, hit.header("Content-Type")) == (200, b"report 1", "text/plain")
    assert hit.header("X-Frame-Options") == "DENY", "the replay went through the whole stack"
    assert "hit" in (site.get("/report?q=1").header("Cache-Status") or "")
    assert runs(site, "report") == 1


def test_views_are_offloaded_when_marked_or_listed_in_paths_and_never_when_marked_no(site: Example) -> None:
    plain = site.get("/plain")
    assert (plain.status, plain.body) == (200, b"plain"), "not marked, not in paths: the app answers"
    live = site.get("/reports/live")
    assert (live.status, live.body) == (200, b"live"), "@no_offload wins over paths"
    for target, body in [
        ("/reports/q3", b"pattern q3"),
        ("/class-report", b"class report"),
        ("/marked-as-view", b"as_view report"),
        ("/sub/report?q=2", b"report 2"),
    ]:
        assert site.get(target).status == 202, target
        assert site.poll(target).body == body


def test_an_answer_that_sets_cookies_is_delivered_once_with_every_cookie(site: Example) -> None:
    assert site.get("/cookies").status == 202
    answer = site.poll("/cookies")
    cookies = [value for name, value in answer.headers if name.lower() == "set-cookie"]
    assert [cookie.split("=")[0] for cookie in cookies] == ["first", "second"], answer.headers
    assert "HttpOnly" in cookies[1]
    assert site.get("/cookies").status == 202, "an answer for one client is not served again"


def test_the_client_script_and_the_management_commands(site: Example) -> None:
    script = site.get("/_offload/offload.js")
    assert script.status == 200 and b"offloadFetch" in script.body
    site.poll("/report?q=status")
    status = site.run(f"python {PROJECT}/manage.py offload_status --json")
    assert json.loads(status.stdout)["cached"] >= 1, status.stderr
    expired = site.run(f"python {PROJECT}/manage.py offload_expire /report --param q=status")
    assert expired.stdout.strip() == "expired 1 cached answer", expired.stderr
    assert site.get("/report?q=status").status == 202
    generic = site.run("offload status --app mysite.wsgi:application --json")
    assert generic.returncode == 0 and json.loads(generic.stdout)["cached"] >= 1, generic.stderr


def test_djangos_cache_can_hold_the_answers(tmp_path: Path) -> None:
    settings = {"cache": "default", "url": f"sqlite:///{tmp_path}/jobs.sqlite3", "paths": ["*"]}
    with closing(project(tmp_path, settings)) as ex:
        ex.start("gunicorn mysite.wsgi")
        ex.start(f"python {PROJECT}/manage.py offload_worker")
        assert ex.poll("/plain").body == b"plain"
        assert any((tmp_path / "cache").iterdir()), "the answer is in Django's file cache"


def test_a_wrong_option_stops_the_project_at_startup(tmp_path: Path) -> None:
    with closing(project(tmp_path, {"ttl": 60, "tll": 5})) as ex:
        done = ex.run(f"python {PROJECT}/manage.py check")
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and "unknown option(s) tll" in done.stderr
