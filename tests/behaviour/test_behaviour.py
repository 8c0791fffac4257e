"""What every offload middleware promises, run against each protocol's middleware."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from offload.records import CachedResponse
from tests.behaviour import apps
from tests.behaviour.harness import Harness


def test_miss_answers_202_then_the_worker_computes_the_answer(harness: Harness) -> None:
    first = harness.request("GET", "/hello", "a=1")
    assert first.status == 202
    assert first.body == b""
    assert first.header("Retry-After") == "1"
    assert first.header("Cache-Control") == "no-store"
    assert apps.calls["/hello"] == 0, "the web process must never run the handler"
    assert harness.work() == 1
    hit = harness.request("GET", "/hello", "a=1")
    assert (hit.status, hit.body) == (200, b"hello a=1")
    assert hit.app_headers == [("Content-Type", "text/plain"), ("X-Served-By", "app"), ("ETag", hit.header("ETag"))]
    assert hit.header("Age") == "0" and (hit.header("Cache-Status") or "").startswith("offload; hit; ttl=")
    assert apps.calls["/hello"] == 1


def test_hit_is_byte_for_byte_with_repeated_headers_in_order(harness: Harness) -> None:
    hit = harness.get_after_work("/binary")
    assert hit.status == 200
    assert hit.body == apps.BINARY
    assert hit.app_headers == [
        ("Content-Type", "application/octet-stream"),
        ("Link", "</a>; rel=a"),
        ("X-Twice", "1"),
        ("Link", "</b>; rel=b"),
        ("ETag", hit.header("ETag")),
    ]


def test_the_app_status_is_kept_even_when_not_200(harness: Harness) -> None:
    hit = harness.get_after_work("/missing")
    assert (hit.status, hit.body) == (404, b"no such thing")


def test_many_misses_enqueue_exactly_one_job(harness: Harness) -> None:
    statuses = {harness.request("GET", "/hello", "x=1").status for _ in range(20)}
    assert statuses == {202}
    assert harness.offloader.queue.stats()["queued"] == 1
    assert harness.work() == 1
    assert apps.calls["/hello"] == 1


def test_concurrent_misses_from_threads_enqueue_exactly_one_job(harness: Harness) -> None:
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def hit() -> None:
        barrier.wait()
        statuses.append(harness.request("GET", "/hello", "race=1").status)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [202] * 8
    assert harness.work() == 1


def test_query_order_does_not_change_the_key(harness: Harness) -> None:
    assert harness.request("GET", "/hello", "a=1&b=2").status == 202
    assert harness.request("GET", "/hello", "b=2&a=1").status == 202
    assert harness.work() == 1
    assert harness.request("GET", "/hello", "b=%32&a=1").status == 200
    assert harness.request("GET", "/hello", "a=1&b=3").status == 202


def test_head_is_served_from_the_cached_get_without_body(harness: Harness) -> None:
    head = harness.request("HEAD", "/hello", "h=1")
    assert head.status == 202
    harness.work()
    head = harness.request("HEAD", "/hello", "h=1")
    assert (head.status, head.body) == (200, b"")
    get = harness.request("GET", "/hello", "h=1")
    assert (get.status, get.body) == (200, b"hello h=1")
    assert apps.calls["/hello"] == 1


def test_other_methods_pass_straight_through(harness: Harness) -> None:
    result = harness.request("POST", "/anything", body=b"data")
    assert (result.status, result.body) == (201, b"posted:data")
    assert harness.offloader.queue.stats()["queued"] == 0


def test_credentials_are_part_of_the_key(harness: Harness) -> None:
    alice = [("Authorization", "Bearer alice")]
    bob = [("Authorization", "Bearer bob")]
    assert harness.get_after_work("/whoami", headers=alice).body == b"auth=Bearer alice;cookie="
    assert harness.request("GET", "/whoami", headers=bob).status == 202
    assert harness.request("GET", "/whoami").status == 202
    harness.work()
    assert harness.request("GET", "/whoami", headers=bob).body == b"auth=Bearer bob;cookie="
    assert harness.request("GET", "/whoami", headers=[("Cookie", "s=1")]).status == 202


def test_the_vary_list_is_configurable(make_harness: Any) -> None:
    harness = make_harness(vary=("X-Tenant",))
    harness.get_after_work("/whoami", headers=[("X-Tenant", "a"), ("Authorization", "one")])
    # Authorization no longer varies the key; X-Tenant does.
    assert harness.request("GET", "/whoami", headers=[("X-Tenant", "a"), ("Authorization", "two")]).status == 200
    assert harness.request("GET", "/whoami", headers=[("X-Tenant", "b")]).status == 202


def test_only_keyed_headers_reach_the_app_at_replay(make_harness: Any) -> None:
    harness = make_harness()
    sent = [("Authorization", "secret"), ("X-Api-Key", "alice"), ("Accept-Language", "fr")]
    hit = harness.get_after_work("/headers", headers=sent)
    assert b"authorization=secret" in hit.body
    assert b"x-api-key" not in hit.body and b"accept-language" not in hit.body
    keyed = make_harness(vary=["Authorization", "X-Api-Key"])
    hit = keyed.get_after_work("/headers", headers=sent)
    assert b"x-api-key=alice" in hit.body and b"accept-language" not in hit.body


def test_a_failing_handler_is_retried_then_answers_500_for_error_ttl(make_harness: Any) -> None:
    harness = make_harness(max_attempts=2, retry_backoff=0.01, error_ttl=0.5)
    assert harness.request("GET", "/boom").status == 202
    harness.work()
    assert apps.calls["/boom"] == 2
    failed = harness.request("GET", "/boom")
    assert failed.status == 500
    assert failed.header("Retry-After") is not None
    assert harness.offloader.cache.stats()["failed"] == 1


def test_an_answer_over_max_body_becomes_a_502(make_harness: Any) -> None:
    harness = make_harness(max_body=4096)
    assert harness.get_after_work("/big", "n=4096").status == 200
    assert harness.get_after_work("/big", "n=8192").status == 502


def test_backpressure_answers_503_past_the_queue_cap(make_harness: Any) -> None:
    harness = make_harness(max_queued=2, retry_after=7)
    assert harness.request("GET", "/hello", "n=1").status == 202
    assert harness.request("GET", "/hello", "n=2").status == 202
    full = harness.request("GET", "/hello", "n=3")
    assert full.status == 503
    assert full.header("Retry-After") == "7"
    assert harness.offloader.queue.stats()["queued"] == 2
    harness.work()
    assert harness.request("GET", "/hello", "n=3").status == 202, "the refused URL can be enqueued later"


def test_expire_by_path_and_exact_params(harness: Harness) -> None:
    for query in ("a=1", "a=1&b=2", "aa=10", "a=10"):
        harness.get_after_work("/hello", query)
    assert harness.middleware.expire("/hello", {"a": "1"}) == 2
    assert harness.request("GET", "/hello", "aa=10").status == 200
    assert harness.request("GET", "/hello", "a=10").status == 200
    assert harness.request("GET", "/hello", "a=1").status == 202
    assert harness.middleware.expire("/hel*") == 2


def test_ttl_is_overridable_per_path(make_harness: Any) -> None:
    import time

    harness = make_harness(ttl=60, path_ttls={"/hel*": 0.2})
    harness.get_after_work("/hello")
    harness.get_after_work("/binary")
    time.sleep(0.3)
    assert harness.request("GET", "/hello").status == 202
    assert harness.request("GET", "/binary").status == 200


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/caf\xc3\xa9", "q=caf%C3%A9"),
        ("/\xff\xfe", "x=%FF%00&y"),
        ("/a b/%2F", "=&&=x&%"),
        ("/" + "p" * 2000, "q=" + "z" * 5000),
    ],
)
def test_odd_paths_and_queries_are_handled(harness: Harness, path: str, query: str) -> None:
    hit = harness.get_after_work("/echo" + path, query)
    assert hit.status == 200


def test_a_huge_url_gets_414_and_nothing_is_queued(harness: Harness) -> None:
    result = harness.request("GET", "/hello", "q=" + "z" * 20_000)
    assert result.status == 414
    assert harness.offloader.queue.stats()["queued"] == 0


def test_huge_keyed_headers_get_431(harness: Harness) -> None:
    result = harness.request("GET", "/hello", headers=[("Cookie", "v" * 70_000)])
    assert result.status == 431
    assert harness.offloader.queue.stats()["queued"] == 0


def test_a_huge_header_that_is_not_keyed_is_neither_stored_nor_refused(harness: Harness) -> None:
    result = harness.request("GET", "/hello", headers=[("X-Big", "v" * 70_000)])
    assert result.status == 202


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x80\x04\x95",  # the start of a pickle
        b"offload/1\n{not json",
        b"offload/1\n" + b'{"kind":"response","status":200,"headers":[],"length":10,"created":0,"failed":false}\nshort',
        b"offload/2\n{}\n",
        b"",
        CachedResponse(200, (("A", "b"),), b"x").encode()[:-1],
    ],
)
def test_a_poisoned_cache_entry_is_a_miss_and_a_log_line(
    harness: Harness, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    key = _key_of(harness, "/hello", "p=1")
    harness.offloader.cache.set(harness.offloader.response_key(key), garbage, 60)
    with caplog.at_level(logging.WARNING, logger="offload"):
        assert harness.request("GET", "/hello", "p=1").status == 202
    assert any("offload's format" in record.getMessage() for record in caplog.records)
    harness.work()
    assert harness.request("GET", "/hello", "p=1").body == b"hello p=1"


def test_a_poisoned_job_is_dropped_with_a_log_line(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.offloader.queue.push("k", b"\x80\x04garbage")
    with caplog.at_level(logging.WARNING, logger="offload"):
        harness.work()
    assert harness.offloader.queue.stats() == {"queued": 0, "running": 0, "dead": 0}
    assert any("not in offload's format" in record.getMessage() for record in caplog.records)


def test_backend_down_answers_503_and_recovers(make_harness: Any, tmp_path: Any) -> None:
    directory = tmp_path / "gone"
    harness = make_harness(url=f"sqlite:///{directory}/offload.sqlite3")
    down = harness.request("GET", "/hello")
    assert down.status == 503
    assert down.header("Retry-After") == "1"
    directory.mkdir()
    assert harness.request("GET", "/hello").status == 202


def test_backend_down_can_pass_through_to_the_app(make_harness: Any, tmp_path: Any) -> None:
    harness = make_harness(url=f"sqlite:///{tmp_path}/missing/offload.sqlite3", passthrough_on_error=True)
    result = harness.request("GET", "/hello", "sync=1")
    assert (result.status, result.body) == (200, b"hello sync=1")


def _key_of(harness: Harness, path: str, query: str) -> str:
    return str(harness.middleware.key_for(f"http://testserver{path}?{query}"))
