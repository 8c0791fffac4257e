"""The command line refuses bad input before it starts anything: one line on stderr, a non-zero exit.

And the inspection commands use an app's own configuration (``--app``),
never create a store, and every log line the commands print has a time.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples import Example, example, wait_for

APP = """
from flask import Flask

import offload

app = Flask(__name__)


@app.get("/report")
def report():
    return {"total": 42}


app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app, url=URL)
"""

BROKEN = """
import offload

app = offload.WSGIMiddleware(lifespan)
"""

#: A log line's start: offload's format, or gunicorn's own.
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} |\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] )")


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Example]:
    with example(tmp_path) as made:
        (tmp_path / "store").mkdir()
        (tmp_path / "myapp.py").write_text(APP.replace("URL", repr(f"sqlite:///{tmp_path}/store/app.sqlite3")))
        (tmp_path / "broken.py").write_text(BROKEN)
        yield made


def one_line_error(done: object, exit_code: int, *words: str) -> None:
    returncode, stderr = getattr(done, "returncode", None), str(getattr(done, "stderr", ""))
    assert returncode == exit_code, f"exit {returncode}: {stderr}"
    assert len(stderr.strip().splitlines()) == 1, f"one line, not:\n{stderr}"
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, stderr


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("foo://x", ["--url", "unknown backend URL 'foo://x'"]),
        ("redis:/host", ["--url", "'redis:/host' is not a backend URL: write redis://HOST:6379/0"]),
        ("redis://", ["names no host"]),
        ("redis://host:port/0", ["Port could not be cast"]),
        ("sqlite://", ["names no file"]),
    ],
)
@pytest.mark.parametrize("command", ["worker myapp:app --burst", "serve myapp:app --bind 127.0.0.1:0"])
def test_a_bad_url_is_one_line_and_exit_code_2(ex: Example, command: str, url: str, words: list[str]) -> None:
    one_line_error(ex.run(f"offload {command} --url '{url}'", timeout=30), 2, *words)


def test_a_bad_url_in_the_environment_is_named_as_such(ex: Example) -> None:
    ex.env["OFFLOAD_URL"] = "foo://x"
    one_line_error(ex.run("offload worker myapp:app --burst"), 2, "OFFLOAD_URL", "unknown backend URL")
    del ex.env["OFFLOAD_URL"]
    one_line_error(ex.run("offload worker myapp:app --burst --cache 'memcached:/x'"), 2, "--cache", "memcached://")


def test_an_app_whose_module_fails_is_one_line_with_the_place(ex: Example) -> None:
    one_line_error(ex.run("offload worker broken:app --burst"), 2, "NameError", "lifespan", "broken.py, line 4")
    one_line_error(ex.run("offload serve broken:app"), 2, "NameError")
    one_line_error(ex.run("offload serve myapp:Flask.name"), 2, "not a WSGI or ASGI app")


def test_an_app_configured_with_a_bad_url_is_refused_by_serve_and_worker(ex: Example) -> None:
    (ex.directory / "typo.py").write_text(APP.replace("URL", repr("redis:/localhost")))
    for command in ("worker typo:app --burst", "serve typo:app --bind 127.0.0.1:0"):
        one_line_error(ex.run(f"offload {command}"), 2, "typo:app", "not a backend URL")


def test_a_queue_run_by_its_own_workers_is_not_offload_workers_to_run(ex: Example) -> None:
    (ex.directory / "rqlike.py").write_text(
        "import offload\n"
        "class Jobs:\n"
        "    def enqueue(self, func, *args): ...\n"
        "def bare(environ, start_response): ...\n"
        "app = offload.WSGIMiddleware(bare, queue=Jobs())\n"
    )
    one_line_error(ex.run("offload worker rqlike:app --burst"), 2, "run by its own workers", "OFFLOAD_APP")


def test_status_and_expire_never_create_a_store(ex: Example) -> None:
    for command in ("status", "expire /report", "status --json"):
        one_line_error(ex.run(f"offload {command}"), 1, "no offload store at", "offload.sqlite3", "--app")
    one_line_error(ex.run("offload status --url sqlite:///elsewhere.db"), 1, "elsewhere.db")
    one_line_error(ex.run("offload status --url memory://"), 1, "inside the process")
    assert (
        sorted(path.name for path in ex.directory.iterdir() if "sqlite" in path.name or "elsewhere" in path.name) == []
    )


def test_status_and_expire_use_the_apps_own_backend_and_namespace(ex: Example) -> None:
    worker = ex.run("offload worker myapp:app --burst")  # creates the app's store, in store/
    assert worker.returncode == 0, worker.stderr
    ex.listen_on(ex.port)
    ex.start("offload serve myapp:app")
    assert ex.poll("/report").status == 200
    counts = ex.run("offload status --app myapp:app --json")
    assert counts.returncode == 0, counts.stderr
    assert json.loads(counts.stdout)["cached"] == 1
    ex.env["OFFLOAD_APP"] = "myapp:app"
    text = ex.run("offload status")
    assert "namespace myapp" in text.stdout and "store/app.sqlite3" in text.stdout, text.stdout + text.stderr
    expired = ex.run("offload expire /report")
    assert expired.stdout.strip() == "expired 1 cached answer", expired.stderr
    assert ex.get("/report").status == 202


PARTS_APP = """
from flask import Flask

import offload
from offload.backends import open_backend

app = Flask(__name__)


@app.get("/report")
def report():
    return {"total": 42}


app.wsgi_app = offload.WSGIMiddleware(
    app.wsgi_app, cache="sqlite:///store/parts.sqlite3", queue=open_backend("sqlite:///store/parts.sqlite3").queue
)
"""


def test_status_names_the_parts_an_app_passed_instead_of_a_url(ex: Example) -> None:
    """An app configured with ``cache=`` and ``queue=`` is not on the default SQLite file: status says what it is on."""
    (ex.directory / "partsapp.py").write_text(PARTS_APP, encoding="utf-8")
    worker = ex.run("offload worker partsapp:app --burst")
    assert worker.returncode == 0, worker.stderr
    status = ex.run("offload status --app partsapp:app")
    assert status.returncode == 0, status.stderr
    first = status.stdout.splitlines()[0]
    assert first == ("backend  cache sqlite:///store/parts.sqlite3, queue offload.backends.sqlite.SQLiteQueue"), (
        status.stdout
    )
    assert not (ex.directory / "offload.sqlite3").exists()


def test_serve_calls_its_counts_by_name_and_refuses_w(ex: Example) -> None:
    one_line_error(ex.run("offload serve myapp:app -w 2"), 2, "ambiguous", "--job-workers", "--web-processes")
    one_line_error(ex.run("offload serve myapp:app --workers 1 --job-workers 2"), 2, "--workers")
    help_text = ex.run("offload serve --help").stdout
    assert "--job-workers" in help_text and "--web-processes" in help_text


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        yield other.getsockname()[1]


def test_demo_and_serve_refuse_a_busy_port(ex: Example, busy_port: int) -> None:
    one_line_error(ex.run(f"offload demo --exit --bind 127.0.0.1:{busy_port}"), 2, f"127.0.0.1:{busy_port}")
    one_line_error(ex.run(f"offload serve myapp:app --bind 127.0.0.1:{busy_port}"), 2, "another port")


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_every_line_serve_prints_has_a_time(ex: Example, app: str) -> None:
    down = "redis://127.0.0.1:9/0"  # nothing listens there: a backend outage, logged by the server process
    if app == "wsgi":
        (ex.directory / "down.py").write_text(APP.replace("URL", repr(down)))
    else:
        (ex.directory / "down.py").write_text(
            "from offload import ASGIMiddleware\n"
            "async def bare(scope, receive, send):\n"
            "    pass\n"
            f"app = ASGIMiddleware(bare, url={down!r})\n"
        )
    process = ex.start("offload serve down:app --web-processes 1")
    wait_for(ex.listening, 60, "the server")
    assert ex.get("/report").status == 503
    wait_for(lambda: "backend unavailable" in ex.logs(), 30, "the outage's log line")
    ex.stop()
    lines = [line for line in ex.logs().splitlines()[1:] if line.strip()]
    untimed = [line for line in lines if not TIMESTAMP.match(line)]
    assert lines and not untimed, f"lines without a time (exit {process.returncode}):\n" + "\n".join(untimed)
