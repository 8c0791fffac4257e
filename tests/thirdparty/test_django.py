"""A Django project behind offload, laid out as its users lay theirs out (``djangoproject/``).

``manage.py migrate`` builds its SQLite database in a temporary directory;
gunicorn serves it bare (``django.core.wsgi:get_wsgi_application()``) and
wrapped (``mysite.wsgi``, which wraps it in offload with ``error_ttl=2`` and
``max_attempts=2``), and ``offload worker mysite.wsgi:application`` replays.
Sessions, CSRF, security and clickjacking middleware are on, DEBUG is off.

The deterministic pages are compared byte for byte with the bare site: the
slow report, the greeting in each language, the private account page, the
404 page. Left out of the comparison: the headers gunicorn adds itself
(``Date``, ``Server``, ``Connection``, ``Keep-Alive``, ``Transfer-Encoding``);
no other header. The export form and the visit counter set a fresh cookie
(and the form a fresh token) on every call: they are only in the isolation
tests.

Request headers at replay: Django needs ``Host`` (checked against
``ALLOWED_HOSTS``: any other host is answered 400), ``Accept-Language``
for the greeting and ``Cookie`` for sessions and CSRF; offload replays all
three, and ``Host`` plus ``Accept-Language`` requests are answered
identically by the bare site and by the replay.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.thirdparty.harness import (
    CHEAP_BACKENDS,
    ROOT,
    Headers,
    Server,
    assert_no_shared_cookie,
    assert_same_answer,
    backend_url,
    processes,
    require,
)

PROJECT = ROOT / "tests" / "thirdparty" / "djangoproject"
BARE = "django.core.wsgi:get_wsgi_application()"
WRAPPED = "mysite.wsgi:application"
HOST = [("Host", "django.test")]

#: Deterministic pages and the request headers (besides Host) both sides get.
PAGES: list[tuple[str, Headers]] = [
    ("/report?year=2024", []),
    ("/report?year=1999", []),
    ("/greeting", []),
    ("/greeting?as=fr", [("Accept-Language", "fr")]),
    ("/greeting?as=de", [("Accept-Language", "de-DE,de;q=0.9")]),
    ("/account", []),
    ("/no-such-page", []),
]


@dataclass
class Site:
    server: Server
    calls_log: Path

    def calls(self, view: str) -> int:
        """How many times ``view`` ran, in the web process or in the worker."""
        if not self.calls_log.exists():
            return 0
        return sum(1 for line in self.calls_log.read_text("utf-8").splitlines() if line.split(" ")[0] == view)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site's SQLite database, migrated by ``manage.py migrate`` as a user does."""
    require("django", "Django")
    path = tmp_path_factory.mktemp("django-db") / "db.sqlite3"
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "REPORTS_DATABASE": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return path


def gunicorn(app: str) -> Callable[[int], list[str]]:
    def args(port: int) -> list[str]:
        return ["-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning", app]

    return args


@pytest.fixture(scope="module")
def bare(database: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """gunicorn serving the Django site as it is."""
    directory = tmp_path_factory.mktemp("django-bare")
    calls = directory / "calls.log"
    env = {
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
        "REPORTS_DATABASE": str(database),
        "REPORTS_CALLS_LOG": str(calls),
    }
    with processes(directory, PROJECT) as started:
        yield Site(started.serve("gunicorn-bare", gunicorn(BARE), env, PROJECT), calls)


@pytest.fixture(scope="module", params=CHEAP_BACKENDS)
def offloaded(
    request: pytest.FixtureRequest, database: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """gunicorn serving ``mysite.wsgi`` (wrapped in offload) and one ``offload worker``, on one backend."""
    directory = tmp_path_factory.mktemp(f"django-{request.param}")
    calls = directory / "calls.log"
    with backend_url(request.param, request, directory) as url, processes(directory, PROJECT) as started:
        env = {"OFFLOAD_URL": url, "REPORTS_DATABASE": str(database), "REPORTS_CALLS_LOG": str(calls)}
        server = started.serve(f"gunicorn-{request.param}", gunicorn(WRAPPED), env, PROJECT)
        started.worker(f"worker-{request.param}", WRAPPED, env, PROJECT)
        yield Site(server, calls)


@pytest.mark.parametrize(("target", "headers"), PAGES)
def test_each_page_is_the_bare_sites_byte_for_byte(target: str, headers: Headers, bare: Site, offloaded: Site) -> None:
    request = [*HOST, *headers]
    expected = bare.server.get(target, request)
    assert_same_answer(expected, offloaded.server.poll(target, request))
    again = offloaded.server.get(target, request)
    if expected.header("Cache-Control") == "private":  # for that client only: delivered once, never a hit
        assert again.status == 202
    else:
        assert_same_answer(expected, again)  # a hit: the same again


# Isolation: what offload must guarantee. Each uses URLs no other test asks for, so they are independent.


@pytest.mark.parametrize(("target", "cookie"), [("/export", "csrftoken"), ("/visit", "sessionid")])
def test_a_cookie_set_for_one_anonymous_client_is_never_given_to_another(
    target: str, cookie: str, offloaded: Site
) -> None:
    """``{% csrf_token %}`` and a session write set a cookie for each new client: CSRF token, session id."""
    assert_no_shared_cookie(offloaded.server, target, HOST, cookie)


def test_a_refused_host_does_not_poison_the_page_for_others(bare: Site, offloaded: Site) -> None:
    """Django answers 400 to a ``Host`` outside ``ALLOWED_HOSTS``: that 400 must not become everyone's answer."""
    target = "/report?year=2023"
    forged = [("Host", "evil.test")]
    refused = offloaded.server.poll(target, forged)
    assert_same_answer(bare.server.get(target, forged), refused)
    assert refused.status == 400, refused.describe()
    assert_same_answer(bare.server.get(target, HOST), offloaded.server.poll(target, HOST))


def test_a_private_answer_is_not_served_to_another_anonymous_client(offloaded: Site) -> None:
    """``Cache-Control: private``: the answer is for the client that asked; the next client's is computed for it."""
    target = "/account?isolation=private"
    first = offloaded.server.poll(target, HOST)
    assert first.header("Cache-Control") == "private", first.describe()
    computed = offloaded.calls("account")
    offloaded.server.poll(target, HOST)  # another anonymous client
    assert offloaded.calls("account") > computed, "the second client got the first client's private answer"


def test_each_language_gets_its_own_greeting(bare: Site, offloaded: Site) -> None:
    """``Vary: Accept-Language``: a French and a German client each get their own language."""
    target = "/greeting?isolation=vary"
    for language, expected in (("fr", b"Bonjour\n"), ("de", b"Hallo\n"), ("en", b"Hello\n")):
        request = [*HOST, ("Accept-Language", language)]
        answer = offloaded.server.poll(target, request)
        assert answer.body == expected, f"Accept-Language: {language} got {answer.body!r}"
        assert_same_answer(bare.server.get(target, request), answer)


def test_an_error_page_is_not_kept_as_a_success(offloaded: Site) -> None:
    """A view that raises is a 500 from Django; with ``error_ttl=2`` it is served a few seconds, then tried again."""
    target = "/boom"
    first = offloaded.server.poll(target, HOST)
    assert first.status == 500, first.describe()
    attempts = offloaded.calls("boom")
    assert 1 <= attempts <= 2, f"{attempts} attempts before the first 500; max_attempts is 2"
    statuses: list[int] = []
    deadline = time.monotonic() + 10  # error_ttl=2, and a backoff of 1s between the 2 attempts
    while time.monotonic() < deadline and not (offloaded.calls("boom") > attempts and set(statuses) - {500}):
        statuses.append(offloaded.server.get(target, HOST).status)
        time.sleep(0.1)
    assert set(statuses) - {500}, f"/boom kept answering its 500 for 10s (answers: {statuses})"
    assert offloaded.calls("boom") > attempts, f"no new attempt at /boom in 10s (answers: {statuses})"
