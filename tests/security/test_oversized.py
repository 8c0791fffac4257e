"""Oversized input: huge URLs (414), huge or many headers (431), huge bodies from the app (502).

Each limit gives a clear answer, nothing crashes, nothing oversized is queued,
and a worker replaying an answer far larger than ``max_body`` stops pulling it
at the limit: its memory stays bounded whatever the app would produce.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from tests.behaviour.harness import Harness
from tests.security import apps
from tests.security.support import PROTOCOLS, drain, from_app, opened

MIB = 1 << 20


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def harness(protocol: str) -> Iterator[Harness]:
    with opened(protocol) as made:
        yield made


def queued(harness: Harness) -> int:
    count: int = harness.offloader.queue.stats()["queued"]
    return count


@pytest.mark.parametrize(("path", "query"), [("/" + "p" * 100_000, ""), ("/", "q=" + "z" * MIB), ("/a", "&" * 9000)])
def test_a_huge_url_gets_414_and_queues_nothing(harness: Harness, path: str, query: str) -> None:
    result = harness.request("GET", path, query)
    assert (result.status, result.body) == (414, b"Request-URI too long\n")
    assert not from_app(result)
    assert queued(harness) == 0


def test_max_url_is_the_exact_limit(protocol: str) -> None:
    with opened(protocol, max_url=100) as harness:
        assert harness.request("GET", "/" + "a" * 49, "q=" + "b" * 48).status == 202  # 100 bytes
        assert harness.request("GET", "/" + "a" * 49, "q=" + "b" * 49).status == 414  # 101 bytes
        assert queued(harness) == 1


@pytest.mark.parametrize(
    "headers",
    [
        [("Cookie", "session=" + "c" * MIB)],
        [("Authorization", "Bearer " + "t" * MIB)],
        [(f"X-Many-{n}", "v" * 16) for n in range(10_000)],
    ],
    ids=["huge-cookie", "huge-authorization", "ten-thousand"],
)
def test_huge_request_headers_get_431_and_queue_nothing(harness: Harness, headers: list[tuple[str, str]]) -> None:
    result = harness.request("GET", "/hello", headers=headers)
    assert (result.status, result.body) == (431, b"Request headers too large\n")
    assert not from_app(result)
    assert queued(harness) == 0


def test_a_huge_header_outside_the_key_is_neither_stored_nor_refused(harness: Harness) -> None:
    result = harness.request("GET", "/whoami", headers=[("X-Big", "v" * MIB)])
    assert result.status == 202
    assert drain(harness) == 1
    hit = harness.request("GET", "/whoami", headers=[("X-Big", "v" * MIB)])
    assert hit.status == 200 and b"v" * 100 not in hit.body


def test_many_headers_under_the_limit_are_accepted_and_the_keyed_ones_replayed(protocol: str) -> None:
    with opened(protocol, vary=["authorization", "cookie", "x-tenant"]) as harness:
        headers = [(f"X-Many-{n}", "v" * 16) for n in range(500)] + [("X-Tenant", "t1")]
        assert harness.request("GET", "/whoami", headers=headers).status == 202
        assert drain(harness) == 1
        hit = harness.request("GET", "/whoami", headers=headers)
        assert hit.status == 200
        assert b"x-tenant=t1" in hit.body


def test_an_app_answer_with_many_headers_is_kept_whole(harness: Harness) -> None:
    assert harness.request("GET", "/many-headers", "n=10000").status == 202
    assert drain(harness) == 1
    hit = harness.request("GET", "/many-headers", "n=10000")
    assert (hit.status, hit.body) == (200, b"many")
    assert len([name for name, _ in hit.headers if name.lower().startswith("x-h")]) == 10_000


def test_an_answer_of_exactly_max_body_is_stored(protocol: str) -> None:
    with opened(protocol, max_body=MIB) as harness:
        assert harness.request("GET", "/stream", f"n={MIB}").status == 202
        assert drain(harness) == 1
        hit = harness.request("GET", "/stream", f"n={MIB}")
        assert (hit.status, len(hit.body)) == (200, MIB)


def test_a_body_far_over_max_body_stores_a_502_in_bounded_memory(protocol: str) -> None:
    """A 200 MB answer with max_body 1 MiB: the worker stops at the limit, stores a 502, and stays small."""
    size = 200 * 1000 * 1000
    with opened(protocol, max_body=MIB) as harness:
        assert harness.request("GET", "/stream", f"n={size}").status == 202
        tracemalloc.start()
        try:
            drain(harness)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * MIB, f"the worker held {peak / MIB:.0f} MiB replaying a body over max_body"
        assert apps.produced[-1] <= 3, f"the worker pulled {apps.produced[-1]} MiB chunks past a 1 MiB limit"
        assert apps.closed[-1], "the app's body was not closed"
        hit = harness.request("GET", "/stream", f"n={size}")
        assert hit.status == 502
        assert b"max_body" in hit.body
        assert hit.header("Retry-After") is not None
        assert queued(harness) == 0
