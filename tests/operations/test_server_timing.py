"""``Server-Timing`` on the answers offload gives: the stored answer's job time, this request's lookup time."""

from __future__ import annotations

import re
from typing import Any


def test_hits_tell_the_job_time_and_every_answer_the_lookup_time(make_harness: Any) -> None:
    harness = make_harness(server_timing=True)
    accepted = harness.request("GET", "/hello")
    assert accepted.status == 202
    assert re.fullmatch(r"offload-lookup;dur=\d+\.\d{3}", accepted.header("Server-Timing") or "")
    harness.work()
    hit = harness.request("GET", "/hello")
    assert hit.status == 200
    timing = hit.header("Server-Timing") or ""
    assert re.fullmatch(r"offload-job;dur=\d+\.\d, offload-lookup;dur=\d+\.\d{3}", timing), timing
    assert harness.request("POST", "/hello").header("Server-Timing") is None  # the app's own answer


def test_off_by_default(make_harness: Any) -> None:
    harness = make_harness()
    harness.get_after_work("/hello")
    assert harness.request("GET", "/hello").header("Server-Timing") is None
