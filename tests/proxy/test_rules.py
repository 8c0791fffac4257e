"""The rules of proxy mode, one RFC requirement at a time: pure functions, no servers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from offload.core import Incoming
from offload.freshness import EXPIRED, FRESH
from offload.keys import Target
from offload.policy import FORWARD, QUEUE
from offload.proxy import fields
from offload.proxy.policy import MAX_STALE, SharedCache, pass_marker
from offload.proxy.ranges import ranged
from offload.proxy.upstream import freshened, invalidated
from offload.records import CachedResponse, StoredRequest
from offload.settings import Settings

POLICY = SharedCache()
SETTINGS = Settings(vary=(), stale_if_error=60.0, ttl=300.0, policy=POLICY)
TARGET = Target("http", "example.com", b"", b"/a", b"", b"/a")
NOW = 1_800_000_000.0


def request(**headers: str) -> StoredRequest:
    pairs = tuple((name.replace("_", "-").lower(), value.encode()) for name, value in headers.items())
    return StoredRequest("k", "k", TARGET, pairs)


def incoming(method: str = "GET", arrived: float = NOW, **headers: str) -> Incoming:
    given = {name.replace("_", "-").lower(): value.encode() for name, value in headers.items()}
    return Incoming(method, TARGET, (), given.get, lambda: list(given), 2, arrived=arrived)


def answer(*headers: tuple[str, str], status: int = 200, created: float = NOW, **kwargs: Any) -> CachedResponse:
    return CachedResponse(status, headers, b"body", created=created, **kwargs)


def stored(response: CachedResponse) -> CachedResponse:
    """The answer as a worker stores it: with the lifetimes the policy gives it."""
    life = POLICY.lifetimes(response, request(), SETTINGS, response.created)
    return CachedResponse(
        response.status,
        response.headers,
        response.body,
        created=response.created,
        expires=response.created + life.fresh,
        stale=life.stale,
        stale_if_error=life.stale_if_error,
    )


# -- what may be stored (RFC 9111 3, 3.5) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "asked", "why"),
    [
        ((("Cache-Control", "no-store, max-age=60"),), 200, {}, "no-store"),
        ((("Cache-Control", "no-store, must-understand, max-age=60"),), 200, {}, ""),
        ((("Cache-Control", "no-store, must-understand, max-age=60"),), 599, {}, "must-understand"),
        ((("Cache-Control", "private, max-age=60"),), 200, {}, "private"),
        ((("Cache-Control", "max-age=60"), ("Vary", "Accept, *")), 200, {}, "Vary is *"),
        ((("Cache-Control", "max-age=60"),), 200, {"authorization": "Basic eA=="}, "Authorization"),
        ((("Cache-Control", "max-age=60, public"),), 200, {"authorization": "Basic eA=="}, ""),
        ((("Cache-Control", "s-maxage=60"),), 200, {"authorization": "Basic eA=="}, ""),
        ((("ETag", '"x"'),), 201, {}, "without explicit freshness"),
        ((("Cache-Control", "max-age=60"),), 201, {}, ""),
        ((("Cache-Control", "max-age=60"), ("Set-Cookie", "a=1")), 200, {}, ""),
        ((), 206, {}, "206"),
        ((("Cache-Control", "max-age=60"),), 200, {"cache-control": "no-store"}, "no-store"),
    ],
)
def test_what_a_shared_cache_may_store(
    headers: tuple[tuple[str, str], ...], status: int, asked: dict[str, str], why: str
) -> None:
    reason = POLICY.unstorable(answer(*headers, status=status), request(**asked))
    assert (why in reason) if why else reason == ""


def test_vary_names_are_learned_and_set_cookie_does_not_make_an_answer_private() -> None:
    verdict = POLICY.judge(answer(("Cache-Control", "max-age=9"), ("Vary", "Accept-Language")), request(), SETTINGS)
    assert (verdict.private, verdict.learn) == (False, ("accept-language",))


# -- how long (RFC 9111 4.2, RFC 9213) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "fresh"),
    [
        ((("Cache-Control", "max-age=60, s-maxage=5"),), 5.0),
        ((("Cache-Control", "max-age=60"), ("Age", "20")), 40.0),
        ((("Expires", fields.imf_date(NOW + 100)), ("Date", fields.imf_date(NOW - 10))), 110.0),
        ((("Expires", "0"), ("Date", fields.imf_date(NOW))), 0.0),
        ((("Cache-Control", "max-age=-1"),), 0.0),
        ((("Last-Modified", fields.imf_date(NOW - 1000)), ("Date", fields.imf_date(NOW))), 100.0),
        ((("Last-Modified", fields.imf_date(NOW - 10**7)),), 86400.0),
        ((("Cache-Control", "max-age=60, no-cache"),), 0.0),
        ((("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=30")), 30.0),
        ((("Cache-Control", "max-age=60"), ("CDN-Cache-Control", 'max-age="30"')), 60.0),
        ((("Expires", fields.imf_date(NOW + 100)), ("CDN-Cache-Control", "no-transform")), 0.0),
    ],
)
def test_freshness_lifetimes(headers: tuple[tuple[str, str], ...], fresh: float) -> None:
    assert POLICY.lifetimes(answer(*headers), request(), SETTINGS, NOW).fresh == pytest.approx(fresh)


def test_stale_windows_are_the_answers_then_the_deployments_and_forbidden_by_revalidation_directives() -> None:
    life = POLICY.lifetimes(answer(("Cache-Control", "max-age=1, stale-while-revalidate=9")), request(), SETTINGS, NOW)
    assert (life.stale, life.stale_if_error) == (9.0, 60.0)
    never_fresh = POLICY.lifetimes(answer(("Cache-Control", "max-age=0")), request(), SETTINGS, NOW)
    assert never_fresh.stale_if_error == 0.0, "the configured window keeps only answers that were fresh once"
    for directive in ("must-revalidate", "proxy-revalidate", "s-maxage=5", "no-cache"):
        cc = f"max-age=5, {directive}, stale-while-revalidate=9, stale-if-error=9"
        life = POLICY.lifetimes(answer(("Cache-Control", cc)), request(), SETTINGS, NOW)
        assert (life.stale, life.stale_if_error) == (0.0, 0.0), directive


def test_answers_with_validators_or_a_lifetime_are_kept_past_expiry_the_others_go_once() -> None:
    assert POLICY.lifetimes(answer(("ETag", '"x"')), request(), SETTINGS, NOW).reusable
    assert POLICY.lifetimes(answer(("Cache-Control", "max-age=0")), request(), SETTINGS, NOW).reusable
    assert not POLICY.lifetimes(answer(("Content-Type", "text/plain")), request(), SETTINGS, NOW).reusable


# -- what a request accepts (RFC 9111 5.2.1, 4.2.4) --------------------------------------------------------


def test_request_directives() -> None:
    fresh = stored(answer(("Cache-Control", "max-age=100"), ("Age", "10"), created=NOW - 20))
    later = NOW + 1

    def look(**headers: str) -> object:
        return POLICY.look(fresh, incoming(arrived=later, **headers), NOW, SETTINGS, lambda: 0.5)

    assert look() == FRESH
    assert look(cache_control="max-age=40") == FRESH
    assert look(cache_control="max-age=29") == EXPIRED
    assert look(cache_control="min-fresh=69") == FRESH
    assert look(cache_control="min-fresh=71") == EXPIRED
    assert look(cache_control="no-cache") == EXPIRED
    assert look(pragma="no-cache") == EXPIRED
    assert look(pragma="no-cache", cache_control="nothing-to-see-here") == FRESH
    fetched_since = POLICY.look(fresh, incoming(arrived=NOW - 30, cache_control="no-cache"), NOW, SETTINGS, time.time)
    assert fetched_since == FRESH, "an answer fetched after the request arrived serves it"


def test_max_stale_serves_a_stale_answer_unless_the_answer_forbids_it() -> None:
    stale = stored(answer(("Cache-Control", "max-age=10"), created=NOW - 100))
    ask = incoming(arrived=NOW + 1, cache_control="max-stale=200")
    assert POLICY.look(stale, ask, NOW, SETTINGS, time.time) == MAX_STALE
    assert POLICY.look(stale, incoming(arrived=NOW + 1, cache_control="max-stale=50"), NOW, SETTINGS, time.time) == (
        EXPIRED
    )
    strict = stored(answer(("Cache-Control", "max-age=10, must-revalidate"), created=NOW - 100))
    assert POLICY.look(strict, ask, NOW, SETTINGS, time.time) == EXPIRED


def test_at_a_miss() -> None:
    refused = POLICY.at_miss(incoming(cache_control="only-if-cached"), None)
    assert isinstance(refused, CachedResponse) and refused.status == 504
    assert POLICY.at_miss(incoming("HEAD"), None) == FORWARD
    assert POLICY.at_miss(incoming(cache_control="no-store"), None) == FORWARD
    assert POLICY.at_miss(incoming(), pass_marker("too large")) == FORWARD
    assert POLICY.at_miss(incoming(), None) == QUEUE


# -- fields ------------------------------------------------------------------------------------------------


def test_cache_control_is_read_by_its_grammar() -> None:
    assert fields.directives([("Cache-Control", 'extension="max-age=3600", max-age=1')]) == {
        "extension": "max-age=3600",
        "max-age": "1",
    }
    assert fields.directives([("Cache-Control", "max-age =1, max-age= 2, MAX-AGE=3")]) == {"max-age": "3"}
    assert fields.delta_seconds("'3600'") is None


def test_http_dates_are_the_three_formats_only() -> None:
    assert fields.http_date("THU, 18 AUG 2050 02:01:18 gmt") == fields.http_date("Thu, 18 Aug 2050 02:01:18 GMT")
    assert fields.http_date("Thursday, 18-Aug-50 02:01:18 GMT", NOW) == fields.http_date(
        "Thu, 18 Aug 2050 02:01:18 GMT"
    )
    assert fields.http_date("Thu Aug 18 02:01:18 2050") == fields.http_date("Thu, 18 Aug 2050 02:01:18 GMT")
    for invalid in ("Thu, 18 Aug 50 02:01:18 GMT", "Thu 18 Aug 2050 02:01:18 GMT", "Thu, 18 Aug 2050 2:01:18 GMT"):
        assert fields.http_date(invalid) is None, invalid


def test_a_304_updates_the_stored_fields_but_not_content_length() -> None:
    old = answer(("Content-Length", "4"), ("ETag", '"1"'), ("X-A", "1"), ("X-B", "1"))
    new = freshened(old, [("X-A", "2"), ("Content-Length", "0"), ("X-C", "3")])
    assert new == (("Content-Length", "4"), ("ETag", '"1"'), ("X-A", "2"), ("X-B", "1"), ("X-C", "3"))


def test_invalidation_follows_location_on_the_same_origin_only() -> None:
    response = [("Location", "/b"), ("Content-Location", "http://up:1/c"), ("Location", "http://other/d")]
    assert invalidated(TARGET, response, "up:1") == ["/a", "/b", "/c"]


def test_ranges_of_a_stored_answer() -> None:
    whole = answer(("ETag", '"x"'), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"))
    assert ranged(whole, "bytes=1-2").body == b"od"
    assert ranged(whole, "bytes=1-", '"x"').status == 206
    assert ranged(whole, "bytes=1-", '"y"').status == 200, "If-Range that does not match: the whole answer"
    assert ranged(whole, "bytes=1-", "Sun, 06 Nov 1994 08:49:37 GMT").status == 206
    assert ranged(whole, "items=1-2").status == 200
