"""The isolation model, through real servers and real workers, on WSGI and ASGI, SQLite, Redis and PostgreSQL.

An answer only ever reaches the requests it was computed for, and a failure is
never kept as a success. Each test names the rule of docs/SECURITY.md it
holds offload to.
"""

from __future__ import annotations

import time

from tests.deployments import Site, wait_for


def test_hosts_never_share_an_answer(site: Site, run: str) -> None:
    """Host and scheme are keyed: a forged Host gets its own answer, never another client's."""
    target = f"/echo?run={run}"
    forged = site.poll(target, {"Host": "evil.test"})
    assert forged.json()["host"] == "evil.test"
    assert forged.header("Location") == "http://evil.test/next"
    mine = site.get(target)
    assert mine.status == 202, f"a client was served the answer computed for another Host: {mine.body!r}"
    mine = site.poll(target)
    assert mine.json()["host"] == f"127.0.0.1:{site.port}"
    assert mine.header("Location") == f"http://127.0.0.1:{site.port}/next"
    assert site.get(target, {"Host": "evil.test"}).json()["host"] == "evil.test"


def test_headers_outside_the_key_never_reach_the_app(site: Site, run: str) -> None:
    """An X-Api-Key (or Accept-Language, X-Forwarded-*, Origin) that is not keyed is not replayed."""
    target = f"/echo?run={run}"
    sent = {"X-Api-Key": "alice-secret", "X-Forwarded-For": "10.1.2.3", "Origin": "https://alice.test"}
    alice = site.poll(target, sent)
    seen = alice.json()
    assert "alice-secret" not in alice.body.decode() and "10.1.2.3" not in alice.body.decode()
    assert set(seen["headers"]) == {"host"}, f"unkeyed headers reached the app: {seen['headers']}"
    assert seen["client"] == "", "the client address is not keyed, so it is not replayed"
    bob = site.get(target, {"X-Api-Key": "bob-secret"})
    assert bob.status == 200 and bob.body == alice.body, "one URL, no keyed difference: one shared answer"


def test_credentials_are_keyed_and_replayed(site: Site, run: str) -> None:
    target = f"/echo?run={run}"
    alice = site.poll(target, {"Authorization": "Bearer alice", "Cookie": "session=a"})
    assert alice.json()["headers"]["authorization"] == "Bearer alice"
    bob = site.get(target, {"Authorization": "Bearer bob", "Cookie": "session=a"})
    assert bob.status == 202
    assert (
        site.poll(target, {"Authorization": "Bearer bob", "Cookie": "session=a"}).json()["headers"]["authorization"]
        == "Bearer bob"
    )
    anonymous = site.poll(target)
    assert "authorization" not in anonymous.json()["headers"]


def test_an_answer_that_sets_a_cookie_is_delivered_once(site: Site, run: str) -> None:
    """Every anonymous client gets a token of its own; a delivered Set-Cookie answer is never a hit."""
    target = f"/cookie?run={run}"
    tokens = set()
    for _ in range(3):
        got = site.poll(target)
        token = got.body.decode()
        assert got.header("Set-Cookie") == f"token={token}; Path=/"
        assert token not in tokens, "two clients got the same Set-Cookie"
        tokens.add(token)
    assert site.get(target).status == 202, "a delivered answer for one client was served again"


def test_answers_for_one_client_are_delivered_once(site: Site, run: str) -> None:
    """Cache-Control: private (without credentials), no-store, no-cache and Vary: * are never shared."""
    for path in ("/private", "/no-store", "/no-cache", "/vary-star"):
        target = f"{path}?run={run}"
        first = site.poll(target)
        assert first.status == 200
        again = site.get(target)
        assert again.status == 202, f"{path}: an answer for one client was served to the next"
        second = site.poll(target)
        assert second.body != first.body


def test_private_answers_are_kept_for_the_credential_they_were_computed_for(site: Site, run: str) -> None:
    target = f"/private?run={run}"
    alice = {"Authorization": "Bearer alice"}
    first = site.poll(target, alice)
    assert site.get(target, alice).body == first.body, "private, and keyed by the credential: alice's own copy"
    assert site.get(target, {"Authorization": "Bearer bob"}).status == 202


def test_the_apps_vary_is_learned_and_honoured(site: Site, run: str) -> None:
    target = f"/lang?run={run}"
    assert site.poll(target, {"Accept-Language": "fr"}).body == b"lang=fr"
    assert site.poll(target, {"Accept-Language": "de"}).body == b"lang=de"
    assert site.poll(target).body == b"lang=none"
    assert site.get(target, {"Accept-Language": "fr"}).body == b"lang=fr"


def test_a_5xx_is_retried_then_kept_only_for_error_ttl(site: Site, run: str) -> None:
    target = f"/fail?run={run}"
    failed = site.poll(target)
    assert (failed.status, failed.body) == (500, b"the view failed")
    assert len(site.notes(f"fail-{run}")) == 2, "max_attempts=2: the 500 was retried once"
    assert site.get(target).status == 500, "the failure is served for error_ttl"
    again = wait_for(lambda: site.get(target).status == 202, 15, "the failure to expire after error_ttl=2")
    assert again
    assert site.poll(target).status == 500
    assert len(site.notes(f"fail-{run}")) == 4, "a new job ran after error_ttl"


def test_a_header_that_cannot_be_sent_on_is_a_502(site: Site, run: str) -> None:
    started = time.monotonic()
    got = site.poll(f"/bad-header?run={run}", timeout=30)
    assert got.status == 502 and got.header("X-Bad") is None
    assert time.monotonic() - started < 20


def test_a_job_past_job_timeout_is_a_504_and_the_worker_goes_on(site: Site, run: str) -> None:
    started = time.monotonic()
    hung = site.poll(f"/hang?s=30&run={run}", timeout=40)
    assert hung.status == 504
    assert time.monotonic() - started < 15, "job_timeout=3 must end the job within seconds"
    after = site.poll(f"/echo?after={run}", timeout=30)
    assert after.status == 200, "the worker serves other jobs while the hung handler sleeps"


def test_an_expiry_during_a_job_wins(site: Site, run: str) -> None:
    (site.directory / "version").write_text("1")
    target = f"/versioned?s=2&run={run}"
    assert site.get(target).status == 202
    wait_for(lambda: site.notes(f"versioned-{run}"), 30, "the job to start")
    (site.directory / "version").write_text("2")
    expired = site.cli("expire", "/versioned", "--url", site.url)
    assert expired.returncode == 0, expired.stderr
    got = site.poll(target, timeout=60)
    assert got.body == b"version 2", "an answer computed before the expiry was stored after it"
