"""The cache half of the backend contract (see offload.backends.base.Cache), run against every backend."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import Any

import pytest
from backend_contract import POISON, BackendSpec, add_race, eventually

from offload.backends import Cache, ExpiryRule, IndexEntry, JobFinish, JobStart
from offload.keys import canonical_path, canonical_query, parse_query


def answer(path: str, query: str = "", failed: bool = False, tags: tuple[str, ...] = ()) -> IndexEntry:
    """The index entry of a cached answer for a decoded path and a raw query."""
    return IndexEntry(canonical_path(path.encode()), canonical_query(parse_query(query.encode())), failed, tags)


def rule(pattern: str | None, params: list[tuple[str, str]] | None = None, tag: str | None = None) -> ExpiryRule:
    """What ``expire()`` is given: a path pattern with optional params, or a tag."""
    return ExpiryRule(pattern, tuple(params or ()), tag)


def test_get_missing_is_none(cache: Cache) -> None:
    assert cache.get("offload:r:missing") is None


def test_set_get_and_replace(cache: Cache) -> None:
    cache.set("k", b"one", 30)
    assert cache.get("k") == b"one"
    cache.set("k", b"two", 30)
    assert cache.get("k") == b"two"


def test_add_only_if_absent(cache: Cache) -> None:
    assert cache.add("k", b"first", 30) is True
    assert cache.add("k", b"second", 30) is False
    assert cache.get("k") == b"first"
    cache.set("other", b"x", 30)
    assert cache.add("other", b"y", 30) is False
    assert cache.get("other") == b"x"


def test_add_succeeds_again_once_expired(cache: Cache) -> None:
    assert cache.add("k", b"first", 0.3)
    assert eventually(lambda: cache.get("k") is None)
    assert cache.add("k", b"second", 30) is True
    assert cache.get("k") == b"second"


def test_set_expires_after_ttl(cache: Cache) -> None:
    cache.set("short", b"x", 0.3)
    cache.set("long", b"y", 60)
    assert eventually(lambda: cache.get("short") is None)
    assert cache.get("long") == b"y"


def test_touch_extends_a_live_entry(cache: Cache) -> None:
    cache.add("k", b"lease", 2)
    assert cache.touch("k", 60) is True
    time.sleep(2.5)  # past the first expiry
    assert cache.get("k") == b"lease"


def test_touch_reports_a_lost_entry(cache: Cache) -> None:
    assert cache.touch("never-set", 60) is False
    cache.set("k", b"x", 0.3)
    assert eventually(lambda: cache.get("k") is None)
    assert cache.touch("k", 60) is False
    assert cache.get("k") is None


def test_touch_many_renews_the_live_entries_and_reports_the_lost_ones(cache: Cache) -> None:
    cache.add("first", b"lease", 2)
    cache.add("second", b"lease", 2)
    cache.set("gone", b"x", 0.3)
    assert eventually(lambda: cache.get("gone") is None)
    assert cache.touch_many(["first", "never-set", "gone", "second"], 60) == [True, False, False, True]
    assert cache.touch_many([], 60) == []
    time.sleep(2.5)  # past the first expiry
    assert (cache.get("first"), cache.get("second"), cache.get("gone")) == (b"lease", b"lease", None)


def test_delete(cache: Cache) -> None:
    cache.set("k", b"x", 30)
    cache.delete("k")
    assert cache.get("k") is None
    cache.delete("k")  # deleting what is gone is fine
    assert cache.add("k", b"y", 30) is True


@pytest.mark.parametrize("value", POISON, ids=range(len(POISON)))
def test_values_are_opaque_bytes(cache: Cache, value: bytes) -> None:
    cache.set("set", value, 30, answer("/poison"))
    assert cache.get("set") == value
    assert cache.add("add", value, 30)
    assert cache.get("add") == value


def test_keys_with_any_characters(cache: Cache) -> None:
    keys = ["offload:r:" + "a" * 64, "with space", "café/ünï", "*?[]{}", "a" * 1000]
    for number, key in enumerate(keys):
        cache.set(key, str(number).encode(), 30)
    assert [cache.get(key) for key in keys] == [str(number).encode() for number in range(len(keys))]


def test_add_is_atomic_across_threads(cache: Cache) -> None:
    keys = [f"offload:p:{number}" for number in range(20)]
    barrier = threading.Barrier(8)
    won: list[str] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait(timeout=30)
        mine = [key for key in keys if cache.add(key, b"marker", 30)]
        with lock:
            won.extend(mine)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(won) == sorted(keys)  # every key won exactly once


@pytest.mark.shared_backend
def test_add_is_atomic_across_processes(spec: BackendSpec, cache: Cache) -> None:
    keys = [f"offload:p:{number}" for number in range(20)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    processes = [context.Process(target=add_race, args=(spec, keys, barrier, results)) for _ in range(4)]
    for process in processes:
        process.start()
    won = [key for _ in processes for key in results.get(timeout=120)]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert sorted(won) == sorted(keys)
    assert all(cache.get(key) == b"marker" for key in keys)


def test_expire_by_path_with_wildcard(cache: Cache) -> None:
    cache.set("r1", b"1", 60, answer("/reports/2024"))
    cache.set("r2", b"2", 60, answer("/reports/2025/q1", "x=1"))
    cache.set("r3", b"3", 60, answer("/report"))
    cache.set("r4", b"4", 60, answer("/other/reports/1"))
    cache.set("pending", b"p", 60)  # not an answer: expire() never touches it
    assert cache.expire(rule("/reports/*")) == 2
    assert cache.get("r1") is None and cache.get("r2") is None
    assert cache.get("r3") == b"3" and cache.get("r4") == b"4" and cache.get("pending") == b"p"
    assert cache.expire(rule("*")) == 2
    assert cache.get("pending") == b"p"
    assert cache.expire(rule("*")) == 0


def test_expire_exact_path_and_inner_wildcard(cache: Cache) -> None:
    cache.set("a", b"1", 60, answer("/reports"))
    cache.set("b", b"2", 60, answer("/reports/"))
    cache.set("c", b"3", 60, answer("/users/7/avatar"))
    cache.set("d", b"4", 60, answer("/users/7/profile"))
    assert cache.expire(rule("/reports")) == 1
    assert cache.get("a") is None and cache.get("b") == b"2"
    assert cache.expire(rule("/users/*/avatar")) == 1
    assert cache.get("c") is None and cache.get("d") == b"4"


def test_expire_treats_sql_and_glob_characters_literally(cache: Cache) -> None:
    cache.set("underscore", b"1", 60, answer("/a_b"))
    cache.set("letter", b"2", 60, answer("/axb"))
    cache.set("percent", b"3", 60, answer("/100%"))
    cache.set("percent-other", b"4", 60, answer("/1000"))
    cache.set("bracket", b"5", 60, answer("/[x]"))
    cache.set("bracket-other", b"6", 60, answer("/x"))
    assert cache.expire(rule("/a_b")) == 1
    assert cache.get("letter") == b"2"
    assert cache.expire(rule("/100%")) == 1
    assert cache.get("percent-other") == b"4"
    assert cache.expire(rule("/[x]")) == 1
    assert cache.get("bracket-other") == b"6"


def test_expire_by_params_matches_exactly(cache: Cache) -> None:
    cache.set("exact", b"1", 60, answer("/search", "a=1"))
    cache.set("among-others", b"2", 60, answer("/search", "b=2&a=1"))
    cache.set("longer-name", b"3", 60, answer("/search", "aa=10"))
    cache.set("longer-value", b"4", 60, answer("/search", "a=10"))
    cache.set("no-query", b"5", 60, answer("/search"))
    cache.set("other-path", b"6", 60, answer("/find", "a=1"))
    assert cache.expire(rule("/search", [("a", "1")])) == 2
    assert cache.get("exact") is None and cache.get("among-others") is None
    for key in ["longer-name", "longer-value", "no-query", "other-path"]:
        assert cache.get(key) is not None, key
    assert cache.expire(rule("/search", [("a", "10"), ("b", "2")])) == 0
    assert cache.expire(rule("/*", [("a", "1")])) == 1
    assert cache.get("other-path") is None


def test_expire_non_ascii_paths_and_params(cache: Cache) -> None:
    cache.set("menu", b"1", 60, answer("/café/menu"))
    cache.set("plain", b"2", 60, answer("/cafe/menu"))
    cache.set("tea", b"3", 60, answer("/search", "q=th%C3%A9"))
    cache.set("coffee", b"4", 60, answer("/search", "q=caf%C3%A9"))
    assert cache.expire(rule("/café/*")) == 1
    assert cache.get("menu") is None and cache.get("plain") == b"2"
    assert cache.expire(rule("/search", [("q", "thé")])) == 1
    assert cache.get("tea") is None and cache.get("coffee") == b"4"


def test_expire_ignores_expired_answers(cache: Cache) -> None:
    cache.set("gone", b"1", 0.3, answer("/old"))
    assert eventually(lambda: cache.get("gone") is None)
    assert cache.expire(rule("/old")) == 0


def test_an_answer_replaced_without_index_is_no_longer_an_answer(cache: Cache) -> None:
    cache.set("k", b"answer", 60, answer("/page"))
    cache.set("k", b"marker", 60)
    assert cache.stats()["cached"] == 0
    assert cache.expire(rule("/page")) == 0
    assert cache.get("k") == b"marker"


def test_stats_counts_live_answers(cache: Cache) -> None:
    assert cache.stats() == {"cached": 0, "failed": 0}
    cache.set("ok1", b"1", 60, answer("/a"))
    cache.set("ok2", b"2", 60, answer("/b", "x=1"))
    cache.set("bad", b"3", 60, answer("/c", failed=True))
    cache.set("short", b"4", 0.3, answer("/d"))
    cache.add("pending", b"p", 60)
    cache.set("marker", b"m", 60)
    assert cache.stats() == {"cached": 3, "failed": 1}
    assert eventually(lambda: cache.stats() == {"cached": 2, "failed": 1})
    cache.delete("ok1")
    assert cache.stats() == {"cached": 1, "failed": 1}
    cache.set("bad", b"3", 60, answer("/c"))  # the retry succeeded
    assert cache.stats() == {"cached": 2, "failed": 0}


def test_touch_keeps_an_answer_indexed(cache: Cache) -> None:
    cache.set("k", b"answer", 2, answer("/page"))
    assert cache.touch("k", 60)
    time.sleep(2.5)  # past the first expiry
    assert cache.stats()["cached"] == 1
    assert cache.expire(rule("/page")) == 1


def test_close_then_use_again(cache: Cache) -> None:
    cache.set("k", b"x", 30)
    cache.close()
    assert cache.get("k") == b"x"


@pytest.mark.native_coroutines
def test_native_coroutines_agree_with_the_blocking_methods(cache: Cache) -> None:
    """A backend's optional ``aget``/``aadd``/``adelete`` (awaited by the ASGI middleware) keep the contract."""
    native: Any = cache

    async def scenario() -> None:
        assert await native.aget("k") is None
        assert await native.aadd("k", b"first", 30) is True
        assert await native.aadd("k", b"second", 30) is False
        assert await native.aget("k") == b"first"
        cache.set("answer", b"a", 30, answer("/page"))
        await native.adelete("answer")
        assert cache.stats()["cached"] == 0
        assert await native.aadd("short", b"x", 0.3) is True
        await native.aclose()

    asyncio.run(scenario())
    asyncio.run(scenario_again(native))  # a second event loop gets working connections too
    assert eventually(lambda: cache.get("short") is None)


async def scenario_again(native: Any) -> None:
    assert await native.aget("k") == b"first"
    await native.adelete("k")
    assert await native.aget("k") is None
    await native.aclose()


def test_start_job_takes_the_lock_once_marks_pending_and_reads_the_answer(cache: Cache) -> None:
    cache.set("answer", b"computed", 30)
    assert cache.start_job("running", "pending", "answer", b"marker", 30)[:2] == (True, b"computed")
    assert cache.get("running") == b"marker"
    assert cache.get("pending") == b"marker"
    assert cache.start_job("running", "pending", "answer", b"other", 30)[:2] == (False, None)
    assert cache.get("running") == b"marker"
    assert cache.start_job("running2", "pending2", "no-answer", b"marker", 30)[:2] == (True, None)


def test_start_counted_job_counts_each_start_that_took_the_lock(cache: Cache) -> None:
    cache.set("answer", b"computed", 30)
    first = cache.start_counted_job("running", "pending", "answer", b"marker", 30, "starts", 60)
    assert (first[0], first[1], first[3]) == (True, b"computed", 1)
    assert first[2] == cache.epoch()
    assert cache.get("pending") == b"marker"
    assert cache.start_counted_job("running", "pending", "answer", b"other", 30, "starts", 60) == (False, None, 0, 0)
    cache.delete("running")  # the first run's worker died; its lock is gone
    again = cache.start_counted_job("running", "pending", "no-answer", b"marker", 30, "starts", 60)
    assert (again[0], again[1], again[3]) == (True, None, 2)
    assert cache.incr("starts", 60) == 3, "the same counter as incr()"


def test_start_counted_jobs_ends_each_start_as_start_counted_job_would(cache: Cache) -> None:
    cache.set("answer-b", b"computed", 30)
    cache.add("running-a", b"elsewhere", 30)  # another worker runs key a

    def start(key: str, marker: bytes = b"m") -> JobStart:
        return JobStart(f"running-{key}", f"pending-{key}", f"answer-{key}", marker, 30, f"starts-{key}", 60)

    cache.incr("starts-c", 60)  # key c was started once before, by a worker that died
    results = cache.start_counted_jobs([start("a"), start("b"), start("b", b"copy"), start("c")])
    epoch = cache.epoch()
    assert results == [(False, None, 0, 0), (True, b"computed", epoch, 1), (False, None, 0, 0), (True, None, epoch, 2)]
    assert cache.get("running-a") == b"elsewhere" and cache.get("pending-a") is None, "a's lock left as it was"
    assert (cache.get("running-b"), cache.get("pending-b")) == (b"m", b"m"), "the first start of b took its lock"
    assert cache.incr("starts-b", 60) == 2, "the copy of b counted no start"
    assert cache.get("pending-c") == b"m"
    assert cache.start_counted_jobs([]) == []
    assert cache.start_counted_jobs([start("c")]) == [(False, None, 0, 0)]


def test_start_job_lock_is_atomic_across_threads(cache: Cache) -> None:
    barrier = threading.Barrier(8)
    taken: list[bool] = []

    def start() -> None:
        barrier.wait()
        taken.append(cache.start_job("running", "pending", "answer", b"m", 30)[0])

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == [False] * 7 + [True]


def test_finish_job_stores_the_indexed_answer_then_drops_the_markers(cache: Cache) -> None:
    cache.set("pending", b"m", 30)
    cache.set("running", b"m", 30)
    assert cache.finish_job("answer", b"computed", 30, answer("/report", "a=1"), ("pending", "running"), 0) is True
    assert cache.get("answer") == b"computed"
    assert (cache.get("pending"), cache.get("running")) == (None, None)
    assert cache.stats()["cached"] == 1
    assert cache.expire(rule("/report", [("a", "1")])) == 1
    cache.set("pending", b"m", 30)
    assert cache.finish_job("answer", None, 0, None, ("pending",), cache.epoch()) is True
    assert (cache.get("pending"), cache.get("answer")) == (None, None)


# -- take: an answer meant for one client ------------------------------------------


def test_take_returns_the_value_once(cache: Cache) -> None:
    cache.set("answer", b"for one client", 10, answer("/private"))
    assert cache.take("answer") == b"for one client"
    assert cache.take("answer") is None
    assert cache.get("answer") is None
    assert cache.take("never-set") is None
    cache.set("answer", b"the next one", 10, answer("/private"))  # a later answer is taken on its own
    assert cache.take("answer") == b"the next one"


def test_take_is_atomic_across_threads(cache: Cache) -> None:
    for round_number in range(3):
        cache.set("answer", f"round {round_number}".encode(), 10, answer("/private"))
        barrier = threading.Barrier(8)
        taken: list[bytes | None] = []

        def take(barrier: threading.Barrier = barrier, taken: list[bytes | None] = taken) -> None:
            barrier.wait(timeout=30)
            taken.append(cache.take("answer"))

        threads = [threading.Thread(target=take) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(taken, key=lambda value: value or b"") == [None] * 7 + [f"round {round_number}".encode()]


# -- tags and soft expiry ------------------------------------------------------------


def test_expire_by_tag_matches_tags_exactly(cache: Cache) -> None:
    cache.set("a", b"1", 60, answer("/a", tags=("report", "customer-42")))
    cache.set("b", b"2", 60, answer("/b", tags=("reports",)))
    cache.set("c", b"3", 60, answer("/c", tags=("customer-4",)))
    cache.set("d", b"4", 60, answer("/d", tags=("re_ort", "rep%", "r*")))
    cache.set("e", b"5", 60, answer("/e"))
    assert cache.expire(rule(None, tag="report")) == 1
    assert cache.get("a") is None
    assert [cache.get(key) for key in "bcde"] == [b"2", b"3", b"4", b"5"]
    for tag in ("re_ort", "rep", "r", "customer", "repo%"):
        assert cache.expire(rule(None, tag=tag)) == (1 if tag == "re_ort" else 0), tag
    assert cache.get("d") is None
    assert cache.expire(rule(None, tag="customer-4")) == 1
    assert cache.get("b") == b"2" and cache.get("e") == b"5"


def test_expire_by_tag_and_path_needs_both(cache: Cache) -> None:
    cache.set("a", b"1", 60, answer("/reports/1", tags=("t",)))
    cache.set("b", b"2", 60, answer("/other/1", tags=("t",)))
    cache.set("c", b"3", 60, answer("/reports/2"))
    assert cache.expire(rule("/reports/*", tag="t")) == 1
    assert cache.get("a") is None and cache.get("b") == b"2" and cache.get("c") == b"3"


def test_a_replaced_answer_keeps_only_its_new_tags(cache: Cache) -> None:
    cache.set("a", b"1", 60, answer("/a", tags=("old",)))
    cache.set("a", b"2", 60, answer("/a", tags=("new",)))
    assert cache.expire(rule(None, tag="old")) == 0
    assert cache.get("a") == b"2"
    assert cache.expire(rule(None, tag="new")) == 1


def test_soft_expiry_rewrites_instead_of_removing(cache: Cache) -> None:
    cache.set("a", b"fresh", 60, answer("/page", tags=("t",)))
    cache.set("b", b"drop me", 60, answer("/page/2"))
    cache.set("c", b"untouched", 60, answer("/other"))

    def restamp(value: bytes) -> bytes | None:
        return None if value == b"drop me" else value + b" (stale)"

    assert cache.expire(ExpiryRule("/page*", soft=True), restamp) == 2
    assert cache.get("a") == b"fresh (stale)"
    assert cache.get("b") is None
    assert cache.get("c") == b"untouched"
    assert cache.stats()["cached"] == 2
    assert cache.expire(rule(None, tag="t")) == 1  # still indexed, tags included


# -- the expiry log: an expiry during a job wins -----------------------------------------


def test_every_expiry_moves_the_epoch_on(cache: Cache) -> None:
    first = cache.epoch()
    cache.expire(rule("/nothing/here"))
    second = cache.epoch()
    cache.expire(rule(None, tag="none"))
    third = cache.epoch()
    assert first < second < third


def test_expired_since_finds_the_expiries_after_an_epoch(cache: Cache) -> None:
    before = cache.epoch()
    cache.expire(rule("/reports/*", [("year", "2024")]))
    middle = cache.epoch()
    cache.expire(rule(None, tag="customer-7"))
    found = cache.expired_since(before, answer("/reports/q1", "year=2024&x=1"))
    assert found is not None and found.pattern == "/reports/*" and found.params == (("year", "2024"),)
    assert cache.expired_since(before, answer("/reports/q1", "year=2023")) is None
    assert cache.expired_since(middle, answer("/reports/q1", "year=2024")) is None
    tagged = cache.expired_since(before, answer("/x", tags=("customer-7",)))
    assert tagged is not None and tagged.tag == "customer-7"
    assert cache.expired_since(cache.epoch(), answer("/reports/q1", "year=2024")) is None


def test_finish_job_drops_an_answer_an_expiry_overtook(cache: Cache) -> None:
    taken, _, since = cache.start_job("running", "pending", "answer", b"m", 30)
    assert taken
    cache.expire(rule("/report"))  # while the job runs: its data is older than this expiry
    survived = cache.finish_job("answer", b"old data", 30, answer("/report"), ("pending", "running"), since)
    assert survived is False
    assert cache.get("answer") is None
    assert (cache.get("pending"), cache.get("running")) == (None, None)
    taken, _, since = cache.start_job("running", "pending", "answer", b"m", 30)  # the job after the expiry
    assert cache.finish_job("answer", b"new data", 30, answer("/report"), ("pending", "running"), since) is True
    assert cache.get("answer") == b"new data"


def test_finish_jobs_ends_each_job_as_finish_job_would(cache: Cache) -> None:
    for key in ("a", "b", "c"):
        assert cache.start_job(f"running-{key}", f"pending-{key}", f"answer-{key}", b"m", 30)[0]
    since = cache.epoch()
    cache.expire(rule("/b"))  # while the jobs run: b's data is older than this expiry
    stale = b" (stale)"
    survived = cache.finish_jobs(
        [
            JobFinish("answer-a", b"data a", 30, answer("/a"), ("pending-a", "running-a"), since),
            JobFinish("answer-b", b"data b", 30, answer("/b"), ("pending-b", "running-b"), since),
            JobFinish("answer-c", None, 0, None, ("pending-c", "running-c"), since),
            JobFinish("marker-d", b"learned", 30, None, (), since),
        ]
    )
    assert survived == [True, False, True, True]
    assert (cache.get("answer-a"), cache.get("answer-b"), cache.get("answer-c")) == (b"data a", None, None)
    assert cache.get("marker-d") == b"learned"
    for key in ("a", "b", "c"):
        assert (cache.get(f"pending-{key}"), cache.get(f"running-{key}")) == (None, None), key
    assert cache.stats()["cached"] == 1
    assert cache.finish_jobs([]) == []
    cache.expire(ExpiryRule("/a", soft=True), lambda value: value + stale)
    again = JobFinish("answer-a", b"new a", 30, answer("/a"), (), since, lambda value: value + stale)
    assert cache.finish_jobs([again]) == [False]
    assert cache.get("answer-a") == b"new a (stale)"


def test_finish_job_keeps_an_answer_an_unrelated_expiry_ran_beside(cache: Cache) -> None:
    _, _, since = cache.start_job("running", "pending", "answer", b"m", 30)
    cache.expire(rule("/other/*"))
    assert cache.finish_job("answer", b"data", 30, answer("/report"), ("pending", "running"), since) is True
    assert cache.get("answer") == b"data"


def test_finish_job_restamps_after_a_soft_expiry(cache: Cache) -> None:
    _, _, since = cache.start_job("running", "pending", "answer", b"m", 30)
    cache.expire(ExpiryRule("/report", soft=True), lambda value: value + b" (stale)")
    survived = cache.finish_job(
        "answer", b"data", 30, answer("/report"), ("pending", "running"), since, lambda value: value + b" (stale)"
    )
    assert survived is False
    assert cache.get("answer") == b"data (stale)"


# -- namespaces ----------------------------------------------------------------------


def test_namespaces_do_not_meet(spec: BackendSpec) -> None:
    shop, blog = spec.open_cache("shop"), spec.open_cache("blog")
    try:
        shop.set("shop:r:1", b"shop", 60, answer("/page", tags=("t",)))
        blog.set("blog:r:1", b"blog", 60, answer("/page", tags=("t",)))
        assert shop.stats() == {"cached": 1, "failed": 0} and blog.stats() == {"cached": 1, "failed": 0}
        before = blog.epoch()
        assert shop.expire(rule("/page")) == 1
        assert blog.get("blog:r:1") == b"blog"
        assert blog.epoch() == before
        assert blog.expired_since(before, answer("/page")) is None
        assert shop.expire(rule(None, tag="t")) == 0
        assert blog.expire(rule(None, tag="t")) == 1
        for cache in (shop, blog):
            assert {"shop", "blog"} <= set(cache.namespaces())
    finally:
        shop.close()
        blog.close()


# -- counters and notifications ----------------------------------------------------------


def test_incr_counts_in_a_fixed_window(cache: Cache) -> None:
    assert [cache.incr("counter", 0.5) for _ in range(3)] == [1, 2, 3]
    assert eventually(lambda: cache.get("counter") is None)  # the window did not slide
    assert cache.incr("counter", 30) == 1


def test_incr_loses_nothing_across_threads(cache: Cache) -> None:
    barrier = threading.Barrier(8)

    def count() -> None:
        barrier.wait(timeout=30)
        for _ in range(25):
            cache.incr("counter", 60)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert cache.incr("counter", 60) == 201


@pytest.mark.notifies
def test_watch_hears_of_stored_answers(spec: BackendSpec, cache: Cache) -> None:
    heard: list[str] = []
    stop = cache.watch(heard.append)
    assert stop is not None, f"{spec.name} says it notifies, but its watch() returned None"
    try:
        time.sleep(0.2)  # a subscription may take a moment to be confirmed
        writer = spec.open_cache()
        try:
            writer.finish_job("answer-1", b"v", 30, answer("/page"), (), writer.epoch())
        finally:
            writer.close()
        assert eventually(lambda: "answer-1" in heard, within=10)
    finally:
        stop()
    heard.clear()
    cache.finish_job("answer-2", b"v", 30, answer("/page"), (), cache.epoch())
    time.sleep(0.5)
    assert "answer-2" not in heard
