"""``Server-Timing`` (W3C Server Timing) on the answers offload gives, with ``server_timing=True``.

Two metrics, in milliseconds, that browsers' developer tools and RUM agents show:

* ``offload-job;dur=...``: how long the app took to compute the stored
  answer (:attr:`offload.records.CachedResponse.duration`), on hits and
  stale serves: the time a client did not wait.
* ``offload-lookup;dur=...``: the time offload spent on this request before
  answering (the lookup, and on a miss the queueing), on every answer offload
  gives itself.

The job part is formatted once per delivered answer and reused; per request
it costs one clock read and one string join. It is off by default because it
adds a header to the app's exact answer.
"""

from __future__ import annotations

import time

from offload.records import CachedResponse

#: The header's name, as the adapters send it.
HEADER = "Server-Timing"


def server_timing(response: CachedResponse, started: float) -> str:
    """The ``Server-Timing`` value for ``response``, given when this request started (``time.perf_counter``).

    >>> answer = CachedResponse(200, (), b"", duration=1.25)
    >>> server_timing(answer, time.perf_counter()).startswith("offload-job;dur=1250.0, offload-lookup;dur=0.")
    True
    """
    lookup = (time.perf_counter() - started) * 1000
    memo = response.memo
    job = memo.get("server-timing")
    if job is None:
        job = memo["server-timing"] = f"offload-job;dur={response.duration * 1000:.1f}, " if response.duration else ""
    return f"{job}offload-lookup;dur={lookup:.3f}"
