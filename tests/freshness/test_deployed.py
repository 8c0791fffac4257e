"""Freshness through real servers and real workers, on WSGI and ASGI, SQLite, Redis and PostgreSQL.

Stale-while-revalidate, stale-if-error, the app's own lifetimes, Cache-Status
and Age, ETags and 304s, soft purges and tags, as a client sees them.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

from tests.deployments import Answer, Site, wait_for


def counter(run: str, cache_control: str | None = None) -> str:
    target = f"/counter?run={run}"
    return target if cache_control is None else f"{target}&cc={quote(cache_control)}"


def runs(site: Site, run: str) -> int:
    """How many times ``/counter`` ran for ``run`` (read again if the app is writing the file just then)."""
    path = site.directory / f"counter-{run}"
    for _ in range(50):
        text = path.read_text() if path.exists() else "0"
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} stays empty")


def test_stale_while_revalidate_answers_at_once_and_refreshes_once(site: Site, run: str) -> None:
    target = counter(run, "max-age=2, stale-while-revalidate=30")
    assert site.poll(target).body == b"count 1"
    time.sleep(2.1)  # past max-age=2
    answers: list[Answer] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def one() -> None:
        barrier.wait(timeout=30)
        got = site.get(target)
        with lock:
            answers.append(got)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [answer.status for answer in answers] == [200] * 20, "a stale answer is served at once, never a 202"
    stale = [answer for answer in answers if answer.body == b"count 1"]
    assert stale and all("detail=stale-while-revalidate" in (a.header("Cache-Status") or "") for a in stale)
    assert {answer.body for answer in answers} <= {b"count 1", b"count 2"}
    wait_for(lambda: site.get(target).body == b"count 2", 30, "the one refresh to land")
    assert runs(site, run) == 2, "20 stale requests ran exactly one refresh"


def test_stale_if_error_serves_the_good_copy_never_the_error(site: Site, run: str) -> None:
    """With no stale-while-revalidate window: 202 while the refresh runs, then the good copy once it failed."""
    target = counter(run, "max-age=1, stale-if-error=60")
    assert site.poll(target).body == b"count 1"
    (site.directory / f"fail-{run}").write_text("")
    time.sleep(1.1)
    seen: list[Answer] = []

    def served() -> Answer | None:
        got = site.get(target)
        seen.append(got)
        return got if got.status != 202 else None

    good = wait_for(served, 30, "the good copy after the failed refresh")
    assert (good.status, good.body) == (200, b"count 1")
    assert "detail=stale-if-error" in (good.header("Cache-Status") or "")
    assert 500 not in [answer.status for answer in seen], "the failure was served instead of the good copy"
    assert runs(site, run) >= 2
    for _ in range(5):  # and it stays so: no 500, no 202 once the good copy is served
        assert site.get(target).status == 200


def test_the_apps_own_lifetimes_beat_ttl(site: Site, run: str) -> None:
    for cache_control in ("max-age=1", "s-maxage=1, max-age=300"):
        target = counter(f"{run}-{cache_control[:3]}", cache_control)
        assert site.poll(target).status == 200
        assert site.get(target).status == 200
        time.sleep(1.1)
        expired = site.get(target)
        assert expired.status == 202, f"{cache_control}: served past its own lifetime (ttl=300)"
        assert expired.header("Cache-Status") in ("offload; fwd=stale", "offload; fwd=uri-miss")


def test_cache_status_and_age_on_miss_hit_and_pass_through(site: Site, run: str) -> None:
    target = counter(run)
    first = site.get(target)
    assert (first.status, first.header("Cache-Status")) == (202, "offload; fwd=uri-miss")
    again = site.get(target)
    assert again.status != 202 or again.header("Cache-Status") == "offload; fwd=uri-miss; collapsed"
    hit = site.poll(target)
    assert (hit.header("Cache-Status") or "").startswith("offload; hit; ttl=")
    assert int(hit.header("Age") or "-1") >= 0
    time.sleep(1.1)
    older = site.get(target)
    assert int(older.header("Age") or "0") >= 1
    posted = site.request("POST", target)
    assert posted.header("Cache-Status") == "offload; fwd=method"


def test_etags_and_304s_with_computed_and_app_validators(site: Site, run: str) -> None:
    target = counter(run)
    hit = site.poll(target)
    etag = hit.header("ETag")
    assert etag is not None and etag.startswith('"'), "offload gives every cached 2xx a strong validator"
    for condition in (etag, f'"nope", {etag}', f"W/{etag}", "*"):
        not_modified = site.get(target, {"If-None-Match": condition})
        assert (not_modified.status, not_modified.body) == (304, b""), condition
        assert not_modified.header("ETag") == etag and not_modified.header("Age") is not None
    assert site.get(target, {"If-None-Match": '"nope"'}).status == 200
    app = site.poll(f"/validators?run={run}")
    assert app.header("ETag") == 'W/"app-v1"', "the app's own validator is kept"
    assert site.get(f"/validators?run={run}", {"If-None-Match": '"app-v1"'}).status == 304
    since = {"If-Modified-Since": "Tue, 02 Jan 2024 00:00:00 GMT"}
    assert site.get(f"/validators?run={run}", since).status == 304
    assert site.get(f"/validators?run={run}", {"If-Modified-Since": "Sun, 31 Dec 2023 00:00:00 GMT"}).status == 200


def test_a_soft_purge_serves_stale_and_refreshes_once(site: Site, run: str) -> None:
    target = counter(run, "max-age=300, stale-while-revalidate=60")
    assert site.poll(target).body == b"count 1"
    purged = site.cli("expire", "/counter", "--soft", "--url", site.url)
    assert purged.returncode == 0 and "expired" in purged.stdout, purged.stderr
    stale = site.get(target)
    assert (stale.status, stale.body) == (200, b"count 1")
    assert "detail=stale-while-revalidate" in (stale.header("Cache-Status") or "")
    wait_for(lambda: site.get(target).body == b"count 2", 30, "the refresh after the soft purge")
    assert runs(site, run) == 2


def test_a_purge_with_refresh_renders_again_at_once(site: Site, run: str) -> None:
    target = counter(run, "max-age=300, stale-while-revalidate=60")
    assert site.poll(target).body == b"count 1"
    purged = site.cli("expire", "/counter", "-p", f"run={run}", "--soft", "--refresh", "--url", site.url)
    assert purged.returncode == 0, purged.stderr
    wait_for(lambda: runs(site, run) == 2, 30, "the refresh queued by the purge itself")
    wait_for(lambda: site.get(target).body == b"count 2", 30, "the new answer")


def test_tags_expire_exactly_the_tagged_answers(site: Site, run: str) -> None:
    first, second = f"/tagged?run={run}&tag=report", f"/tagged?run={run}&tag=reports"
    for target in (first, second):
        answer = site.poll(target)
        assert answer.header("Offload-Tags") is None, "the tags never reach clients"
    expired = site.cli("expire", "--tag", "report", "--url", site.url)
    assert expired.returncode == 0, expired.stderr
    assert site.get(first).status == 202
    assert site.get(second).status == 200, "'reports' is not 'report'"
    site.cli("expire", "--tag", f"run-{run}", "--url", site.url)
    assert site.get(second).status == 202
