"""The rules of freshness and delivery, as pure functions: lifetimes, what a request finds, validators."""

from __future__ import annotations

import random

import pytest

from offload.delivery import deliver, not_modified
from offload.freshness import (
    EXPIRED,
    FRESH,
    ON_ERROR,
    RETRYING,
    REVALIDATING,
    keeps_for_errors,
    lifetimes,
    look,
    mark_stale,
    with_validator,
)
from offload.records import CachedResponse
from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness

DATE = "Mon, 01 Jan 2024 00:00:00 GMT"  # 1704067200


def answer(*headers: tuple[str, str], **fields: float) -> CachedResponse:
    return CachedResponse(200, tuple(headers), b"body", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], (300.0, 5.0, 60.0)),
        ([("Cache-Control", "max-age=10")], (10.0, 5.0, 60.0)),
        ([("Cache-Control", "max-age=10, s-maxage=2")], (2.0, 5.0, 60.0)),
        ([("cache-control", "S-MAXAGE=7")], (7.0, 5.0, 60.0)),
        ([("Expires", "Mon, 01 Jan 2024 00:01:00 GMT"), ("Date", DATE)], (60.0, 5.0, 60.0)),
        ([("Expires", "not a date")], (0.0, 5.0, 60.0)),
        ([("Expires", "Mon, 01 Jan 2024 00:01:00 GMT"), ("Cache-Control", "max-age=3")], (3.0, 5.0, 60.0)),
        ([("Cache-Control", "max-age=1, stale-while-revalidate=30, stale-if-error=600")], (1.0, 30.0, 600.0)),
        ([("Cache-Control", "max-age=1, must-revalidate, stale-while-revalidate=30")], (1.0, 0.0, 0.0)),
        ([("Cache-Control", "max-age=nonsense")], (300.0, 5.0, 60.0)),
        ([("Cache-Control", "max-age=-5")], (0.0, 5.0, 60.0)),
    ],
)
def test_lifetimes_follow_rfc_9111_and_5861(headers: list[tuple[str, str]], expected: tuple[float, ...]) -> None:
    life = lifetimes(answer(*headers), 300, 5, 60, now=1704067200.0)
    assert (life.fresh, life.stale, life.stale_if_error) == expected


def test_what_a_request_finds_over_an_answers_life() -> None:
    stored = answer(expires=100.0, stale=10.0, stale_if_error=60.0)
    assert look(stored, 99.0) == FRESH
    assert look(stored, 105.0) == REVALIDATING
    assert look(stored, 120.0) == EXPIRED, "past the stale window, before any failed refresh: a miss"
    failed_refresh = answer(expires=100.0, stale=10.0, stale_if_error=60.0, retry_at=125.0)
    assert look(failed_refresh, 120.0) == ON_ERROR, "a refresh failed: the good copy, no refresh before retry_at"
    assert look(failed_refresh, 130.0) == RETRYING, "after the cooldown: the good copy, and one more refresh"
    assert look(failed_refresh, 170.0) == EXPIRED
    failure = CachedResponse(500, (), b"", failed=True, expires=100.0, stale=10.0)
    assert look(failure, 99.0) == FRESH and look(failure, 101.0) == EXPIRED, "a failure is never served stale"


def test_early_refresh_follows_xfetch_with_a_seeded_random_source() -> None:
    """XFetch: refresh when now - duration * beta * ln(random()) >= expiry; more likely as expiry nears."""
    stored = answer(expires=100.0, duration=1.0)
    draws = random.Random(7)
    early = [look(stored, now, 1.0, draws.random).refresh for now in (90.0, 95.0, 99.0, 99.9) for _ in range(200)]
    far, mid, near, nearest = (sum(early[n * 200 : (n + 1) * 200]) for n in range(4))
    assert far == 0, "10 durations before expiry, practically never"
    assert far <= mid <= near <= nearest and nearest > 150, "almost always in the last tenth of a duration"
    assert not look(stored, 99.9, 0.0, draws.random).refresh, "beta 0 turns it off"


def test_an_early_refresh_runs_through_the_middleware_and_keeps_serving() -> None:
    harness = WSGIHarness(apps.wsgi_app, url="memory://early-refresh", ttl=1, early_refresh=1.0)
    harness.get_after_work("/slow", "s=0.3")
    harness.offloader.random.seed(1)  # the draws are the test's: a refresh is due, and one is queued
    harness.offloader.random.random = lambda: 1e-9  # type: ignore[method-assign]
    hit = harness.request("GET", "/slow", "s=0.3")
    assert hit.status == 200, "a hit that queues an early refresh is still served at once"
    assert harness.offloader.queue.stats()["queued"] == 1
    assert harness.work() == 1


def test_a_soft_purge_keeps_the_answer_stale() -> None:
    stored = answer(expires=10_000_000_000.0, stale=30.0)
    restamped = CachedResponse.decode(mark_stale(stored.encode()) or b"")
    assert restamped.expires <= 10_000_000_000.0 and look(restamped, restamped.expires + 1).detail
    assert mark_stale(b"not a record") is None


def test_computed_validators_depend_on_the_body_only() -> None:
    first = with_validator(CachedResponse(200, (("X", "1"),), b"same"))
    second = with_validator(CachedResponse(200, (("X", "2"),), b"same"))
    assert first[-1] == second[-1] and first[-1][0] == "ETag"
    assert with_validator(CachedResponse(404, (), b"same")) == (), "only 2xx answers get one"
    assert with_validator(CachedResponse(200, (("ETag", '"app"'),), b"x")) == (("ETag", '"app"'),)


@pytest.mark.parametrize(
    ("if_none_match", "matches"),
    [('"v1"', True), ('W/"v1"', True), ('"v0", "v1"', True), ("*", True), ('"v2"', False), ('"v1,x"', False)],
)
def test_if_none_match_uses_weak_comparison(if_none_match: str, matches: bool) -> None:
    stored = answer(("ETag", 'W/"v1"'))
    assert not_modified(stored, (if_none_match, None)) is matches


def test_if_modified_since_and_the_304_headers() -> None:
    stored = answer(
        ("Content-Type", "text/plain"),
        ("Last-Modified", DATE),
        ("Cache-Control", "max-age=60"),
        ("ETag", '"e"'),
        expires=10_000_000_000.0,
        created=1.0,
    )
    assert not_modified(stored, (None, "Tue, 02 Jan 2024 00:00:00 GMT"))
    assert not not_modified(stored, (None, "Sun, 31 Dec 2023 00:00:00 GMT"))
    assert not not_modified(stored, ('"other"', "Tue, 02 Jan 2024 00:00:00 GMT")), "If-None-Match decides first"
    delivered = deliver(stored, 100.0, FRESH, ('"e"', None))
    assert (delivered.status, delivered.body) == (304, b"")
    names = [name for name, _ in delivered.headers]
    assert names == ["Cache-Control", "ETag", "Age", "Cache-Status"], "the 304 carries what RFC 9110 asks, no more"


def test_keeps_for_errors_only_good_shared_answers_within_their_window() -> None:
    assert keeps_for_errors(answer(expires=100.0, stale_if_error=60.0), 150.0)
    assert not keeps_for_errors(answer(expires=100.0, stale_if_error=60.0), 170.0)
    assert not keeps_for_errors(CachedResponse(500, (), failed=True, expires=100.0, stale_if_error=60.0), 120.0)
