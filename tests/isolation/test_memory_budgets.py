"""What a web process keeps in memory is bounded in bytes, not in entries.

The in-process tier holds decoded answers up to ``local_cache`` bytes and never
one larger than ``local_max_answer``; the key memo holds hashed request inputs
up to ``key_memo`` bytes and never a large cookie or query. Measured with
``tracemalloc`` as well as with the tiers' own counts.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from offload.local import LocalTier
from tests.behaviour.harness import WSGIHarness

MIB = 1024 * 1024


def sized_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    size = int(parse_qs(environ["QUERY_STRING"])["n"][0])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [bytes(size)]


def hit_all(harness: WSGIHarness, size: int, numbers: range, **headers: str) -> None:
    """Miss each ``/blob?n=size&i=N``, run the jobs at once, then hit each twice (kept from the second read)."""
    sent = list(headers.items())
    for n in numbers:
        assert harness.request("GET", "/blob", f"n={size}&i={n}", sent).status == 202
    harness.work()
    for n in numbers:
        for _ in range(2):
            result = harness.request("GET", "/blob", f"n={size}&i={n}", sent)
            assert result.status == 200 and len(result.body) == size


def tier(harness: WSGIHarness) -> LocalTier:
    local = harness.offloader._local
    assert isinstance(local, LocalTier), "the memory backend offers the in-process tier"
    return local


def test_the_tier_holds_at_most_its_budget_of_answers() -> None:
    harness = WSGIHarness(sized_app, url="memory://budget-tier", local_cache=8 * MIB, local_max_answer=MIB)
    hit_all(harness, 512 * 1024, range(120))  # 120 distinct answers of 512 KiB: 60 MiB offered to an 8 MiB tier
    assert 0 < tier(harness).used <= 8 * MIB


def test_answers_larger_than_local_max_answer_are_never_kept() -> None:
    harness = WSGIHarness(sized_app, url="memory://budget-large", local_max_answer=MIB)
    hit_all(harness, 64, range(1))  # a small one first: the tier is on
    hit_all(harness, 2 * MIB, range(20))
    assert tier(harness).used < 4096


def test_the_tier_keeps_its_budget_in_real_memory() -> None:
    harness = WSGIHarness(sized_app, url="memory://budget-rss", local_cache=4 * MIB, local_max_answer=MIB)
    hit_all(harness, 64, range(1))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for start in range(0, 100, 10):
            hit_all(harness, 256 * 1024, range(start, start + 10))
            for n in range(start, start + 10):  # the store forgets them: only the tier could hold them now
                key = harness.middleware.key_for(f"http://testserver/blob?n={256 * 1024}&i={n}")
                harness.offloader.cache.delete(harness.offloader.response_key(key))
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 4 * MIB + MIB, f"the process kept {grown / MIB:.1f} MiB for a 4 MiB tier"


def test_the_key_memo_never_keeps_large_inputs() -> None:
    harness = WSGIHarness(sized_app, url="memory://budget-memo", key_memo=64 * 1024)
    for n in range(20):
        hit_all(harness, 16, range(n, n + 1), Cookie=f"session={n}-" + "c" * 10_000)
    memo = harness.offloader._keys
    assert memo.used == 0, "a 10 KB cookie must not be remembered"
    for n in range(2000):
        harness.request("GET", "/blob", f"n=16&i={n}")
    assert memo.used <= 64 * 1024
