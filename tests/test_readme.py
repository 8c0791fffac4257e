"""The README's examples, run as printed: each file written out, each command run, each answer checked.

The backends' examples (Scaling out) are run in ``tests/integrations/test_readme_scaling.py``,
the browser page in ``tests/test_client_js.py``. Every code block of the README
is claimed by one of these tests (``README.block("...")``), or said here why not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.examples import (
    ROOT,
    Answer,
    Document,
    Example,
    claimed_markers,
    example,
    fetched_then_stored,
    file_server_upstream,
    wait_for,
)

README = Document(ROOT / "README.md")

#: Files whose tests claim README blocks with ``README.block("marker")``.
CLAIMING = ["tests/test_readme.py", "tests/integrations/test_readme_scaling.py", "tests/test_client_js.py"]

#: Blocks no test runs, by a text each holds, and why.
NOT_RUN = {
    "make demo": "make demo serves until stopped, and make test is the suite itself: CI runs make test",
    'pip install -e "/path/to/offload': "installing into a fresh virtual environment is CI's (.ci/run)",
    "python -m build --wheel": "CI builds the wheel and installs it into a fresh virtual environment (.ci/run)",
}


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Example]:
    with example(tmp_path) as made:
        yield made


def test_every_code_block_is_run_or_said_why() -> None:
    markers = set(NOT_RUN).union(*(claimed_markers(name) for name in CLAIMING))
    for block in README.blocks:
        assert block.language in ("python", "sh", "html", "text"), f"README line {block.line}: say the language"
        if block.language == "text":
            continue
        holders = [marker for marker in markers if marker in block.text]
        assert holders, f"README line {block.line}: no test runs this block:\n{block.text}"
        if block.language in ("python", "html"):
            assert block.file is not None, f"README line {block.line}: a file's first line says its name"


def test_install_commands_are_the_ones_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert "-m build" in ci and "twine check" in ci
    assert re.search(r"pip install .*dist/offload-\*\.whl", ci), "CI installs the wheel the README tells users to build"


def test_flask(ex: Example) -> None:
    ex.write(README.block("app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app, ttl=600)"))
    ex.shell(README.block("offload serve myapp:app\ncurl -i"))  # the curl line runs once the server listens
    assert ex.poll("/report").body == b'{"total":42}\n'
    curl = ex.run(ex.substituted(README.block("curl -i").commands()[1]))
    assert curl.returncode == 0 and curl.stdout.startswith("HTTP/1.1 200"), curl.stdout + curl.stderr

    ex.write(README.block("# fetch_report.py"))
    ex.shell(README.block("python fetch_report.py"))
    fetched = ex.run("python fetch_report.py")
    assert fetched.stdout.strip() == "{'total': 42}", fetched.stderr

    ex.write(README.block("# refresh.py"))
    ex.shell(README.block("python refresh.py"))  # and offload expire '/rep*' --app myapp:app
    assert ex.get("/report").status == 202, "expired: the next request queues a job"


def test_flask_extension(ex: Example) -> None:
    ex.write(README.block("from offload.contrib.flask import Offload, offload"))
    ex.shell(README.block("flask --app myapp offload worker"))
    hit = ex.poll("/report")
    assert (hit.status, json.loads(hit.body)) == (200, {"total": 42})
    assert ex.get("/").body == b"not offloaded: no @offload", "a view without the mark is the app's at once"
    script = ex.get("/_offload/offload.js")
    assert script.status == 200 and b"function offloadFetch" in script.body
    status = ex.run("flask --app myapp offload status --json")
    assert json.loads(status.stdout)["cached"] == 1, status.stderr


def test_django_wsgi_then_asgi(ex: Example) -> None:
    ex.shell(README.block("django-admin startproject mysite ."))
    ex.write(README.block("# mysite/settings.py (add at the end)"))
    ex.write(README.block("# mysite/views.py"))
    ex.write(README.block("# mysite/urls.py"))
    ex.shell(README.block("python manage.py offload_worker"))
    hit = ex.poll("/report")
    assert (hit.status, json.loads(hit.body)) == (200, {"total": 42}), ex.logs()

    ex.stop("gunicorn")
    ex.shell(README.block("uvicorn mysite.asgi:application"))
    asgi = ex.poll("/report?served=asgi")
    assert (asgi.status, json.loads(asgi.body)) == (200, {"total": 42}), ex.logs()

    status = ex.run("python manage.py offload_status --json")
    assert json.loads(status.stdout)["cached"] == 2, status.stderr


def test_plain_wsgi(ex: Example) -> None:
    ex.write(README.block("def slow_app"))
    ex.shell(README.block("offload serve slow:app"))
    assert ex.poll("/anything").body == b"computed slowly\n"


def test_fastapi(ex: Example) -> None:
    ex.write(README.block("from fastapi import FastAPI"))
    ex.shell(README.block("offload serve main:app\n"))
    hit = ex.poll("/report?name=you")
    assert json.loads(hit.body) == {"report": "for you"}
    assert ex.get("/openapi.json").status == 200, "a route without the mark is the app's at once"


def test_starlette(ex: Example) -> None:
    ex.write(README.block("from starlette.applications import Starlette"))
    ex.shell(README.block("offload serve main:app --job-workers 2"))
    assert ex.poll("/report?name=you").body == b"report for you"


def test_quart(ex: Example) -> None:
    ex.write(README.block("from quart import Quart, request"))
    ex.shell(README.block("uvicorn main:app\noffload worker main:app"))
    assert json.loads(ex.poll("/report?name=you").body) == {"report": "for you"}


def test_answers_never_go_cold(ex: Example) -> None:
    ex.write(README.block("# dashboard.py"))
    block = README.block("offload expire /dashboard --soft --refresh")
    serve, expire = block.commands()
    ex.start(ex.substituted(serve))
    first = ex.poll("/dashboard")
    computed = json.loads(first.body)["computed_at"]
    assert first.status == 200 and "ttl=" in (first.header("Cache-Status") or ""), first.headers

    done = ex.run(expire)
    assert done.returncode == 0 and done.stdout.strip() == "expired 1 cached answer", done.stdout + done.stderr
    stale = ex.get("/dashboard")
    assert stale.status == 200, "soft expiry: the old answer is still served"
    if json.loads(stale.body)["computed_at"] == computed:  # unless the refresh (1 s) already landed
        assert "detail=stale-while-revalidate" in (stale.header("Cache-Status") or ""), stale.headers

    def refreshed() -> Answer | None:
        answer = ex.get("/dashboard")
        assert answer.status == 200, "never back to 202 while stale answers may be served"
        return answer if json.loads(answer.body)["computed_at"] != computed else None

    fresh = wait_for(refreshed, 60, "the refresh --refresh queued to land")
    assert "detail=" not in (fresh.header("Cache-Status") or ""), fresh.headers


def test_three_ways_to_wait(ex: Example) -> None:
    ex.write(README.block("app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app, ttl=600)"))
    ex.start(ex.substituted("offload serve myapp:app"))
    wait_for(ex.listening, 60, "the server")
    poll, wait, watch = (ex.run(ex.substituted(line)) for line in README.block("Prefer: wait=10").commands())
    assert poll.stdout.strip() == "202", poll.stdout + poll.stderr
    assert json.loads(wait.stdout) == {"total": 42}, wait.stdout + wait.stderr + ex.logs()

    head, _, _ = watch.stdout.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 202"), watch.stdout
    location = re.search(r"(?im)^location: (\S+)", head)
    assert location is not None and "/_offload/jobs/" in location.group(1), head

    monitor = urlsplit(location.group(1)).path

    def done() -> Answer | None:
        answer = ex.get(monitor)
        if answer.status == 200:
            assert json.loads(answer.body)["state"] in ("queued", "running", "retrying"), answer.body
            return None
        return answer

    finished = wait_for(done, 60, "the status monitor to point at the answer")
    assert finished.status == 303 and urlsplit(finished.header("Location") or "").path == "/report", finished.headers
    assert ex.get("/report?for=monitor").body == b'{"total":42}\n'


def test_proxy(ex: Example) -> None:
    """``offload proxy`` in front of a server in another program: the answer, then the same answer from the cache."""
    file_server_upstream(ex)
    ex.addresses["0.0.0.0:8000"] = f"127.0.0.1:{ex.port}"
    install, proxy = README.block("offload proxy --upstream http://127.0.0.1:8080").commands()
    assert install.startswith("pip install -e")  # the package is installed already
    ex.start(ex.substituted(proxy))
    fetched_then_stored(ex)
