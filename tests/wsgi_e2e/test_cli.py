"""The ``offload`` command run as a user runs it: status, expire, worker errors, demo, help."""

from __future__ import annotations

import pytest

from tests.wsgi_e2e.conftest import PLAIN, Stack

#: The namespace the plain app of the end-to-end tests gets (offload.namespaces): its module and name.
NAMESPACE = "tests-wsgi_e2e-apps-plain-bare"


def test_status_counts_queued_cached_and_failed(stack: Stack) -> None:
    server = stack.serve(workers=0)
    for target in ("/hello?s=1", "/hello?s=2", "/boom"):
        assert server.get(target).status == 202
    assert stack.status() == {"queued": 3, "running": 0, "dead": 0, "cached": 0, "failed": 0}

    drained = stack.cli("worker", PLAIN, "--url", stack.db_url, "--burst")
    assert drained.returncode == 0, drained.stderr
    assert stack.status() == {"queued": 0, "running": 0, "dead": 0, "cached": 2, "failed": 1}

    text = stack.cli("status", "--url", stack.db_url)
    assert text.returncode == 0, text.stderr
    lines = dict(line.split(None, 1) for line in text.stdout.splitlines())
    assert lines["namespace"] == NAMESPACE, "one namespace: the plain app's, derived from the app itself"
    assert {name: lines[name] for name in ("queued", "running", "cached", "failed")} == {
        "queued": "0",
        "running": "0",
        "cached": "2",
        "failed": "1",
    }
    assert lines["backend"] == stack.db_url


def test_expire_matches_params_exactly(stack: Stack) -> None:
    server = stack.serve(workers=1)
    queries = ["a=1", "a=1&b=2", "aa=10", "a=10", "b=1"]
    for query in queries:
        server.get(f"/items?{query}")
    for query in queries:
        assert server.poll(f"/items?{query}").status == 200

    done = stack.cli("expire", "/items", "--param", "a=1", "--url", stack.db_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "expired 2 cached answers"
    assert server.get("/items?a=1").status == 202
    assert server.get("/items?b=2&a=1").status == 202
    for kept in ("aa=10", "a=10", "b=1"):
        assert server.get(f"/items?{kept}").status == 200, f"a=1 must not match {kept}"

    for query in ("a=1", "a=1&b=2"):  # the misses above had them computed again
        assert server.poll(f"/items?{query}").status == 200
    wildcard = stack.cli("expire", "/it*", "--url", stack.db_url)
    assert wildcard.returncode == 0, wildcard.stderr
    assert wildcard.stdout.strip() == "expired 5 cached answers"
    assert server.get("/items?aa=10").status == 202
    bad = stack.cli("expire", "/items", "--param", "novalue", "--url", stack.db_url)
    assert bad.returncode == 2
    assert "KEY=VALUE" in bad.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_anywhere:app", "cannot import module"),
        ("tests.wsgi_e2e.apps.plain:no_such_attribute", "has no attribute"),
        ("not-a-spec", "MODULE:ATTR"),
    ],
)
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_bad_app_is_reported_clearly_with_exit_code_2(stack: Stack, spec: str, message: str, command: str) -> None:
    extra = ["--burst"] if command == "worker" else ["--bind", "127.0.0.1:0", "--workers", "0"]
    done = stack.cli(command, spec, "--url", stack.db_url, *extra)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_shows_202_then_200_and_exits_0(stack: Stack) -> None:
    done = stack.cli("demo", "--bind", "127.0.0.1:0", "--delay", "1", "--exit", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-> 202" in done.stdout
    assert "-> 200" in done.stdout
    assert done.stdout.index("-> 202") < done.stdout.index("-> 200")


def test_python_dash_m_offload_help(stack: Stack) -> None:
    done = stack.cli("--help")
    assert done.returncode == 0, done.stderr
    for command in ("worker", "serve", "expire", "status", "demo"):
        assert command in done.stdout
    version = stack.cli("--version")
    assert version.returncode == 0 and version.stdout.strip()


def test_serve_wraps_a_bare_app_and_its_worker_replays_through_it(stack: Stack) -> None:
    server = stack.serve("tests.wsgi_e2e.apps.plain:bare", workers=1)
    assert server.get("/hello?bare=1").status == 202
    hit = server.poll("/hello?bare=1")
    assert (hit.status, hit.body) == (200, b"GET /hello?bare=1")
    assert len(stack.events(target="/hello?bare=1")) == 1
