"""offload's own answers: the 202 of a miss, the 503s, 414, 431 and 429, built once per process.

Every one is plain text, ``Cache-Control: no-store`` (no proxy keeps it) and,
with ``cache_status``, says in ``Cache-Status`` why it was given. Each carries
in its memo the outcome the ``request`` event reports (``miss``,
``collapsed``, ``refused``, ``outage``, ``bypass``, ``limited``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from offload.delivery import status_of, with_status
from offload.records import CachedResponse
from offload.settings import Settings


def own_answer(status: int, retry_after: int | None = None, body: bytes = b"") -> CachedResponse:
    """An answer of offload's own: plain text, never cached by proxies, with an optional ``Retry-After``.

    >>> own_answer(202, 1).headers[0]
    ('Retry-After', '1')
    """
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
    if retry_after is not None:
        headers.insert(0, ("Retry-After", str(retry_after)))
    headers.append(("Content-Length", str(len(body))))
    return CachedResponse(status, tuple(headers), body, from_app=False)


def told(answer: CachedResponse, outcome: str) -> CachedResponse:
    """``answer``, marked with the outcome the ``request`` event reports."""
    answer.memo["outcome"] = outcome
    return answer


def waited(response: CachedResponse | None, seconds: float) -> CachedResponse | None:
    """The answer to a request that was held for it: it says it honoured ``Prefer: wait`` (RFC 7240)."""
    if response is None:
        return None
    outcome = response.memo.get("outcome", "hit")
    applied = (("Preference-Applied", f"wait={seconds:g}"), ("Vary", "Prefer"))
    return told(dataclasses.replace(response, headers=(*response.headers, *applied)), outcome)


def monitored(accepted: CachedResponse, monitor: str) -> CachedResponse:
    """A 202 for a client that prefers to respond async: where its job's status monitor is (RFC 7240)."""
    headers = (
        *accepted.headers,
        ("Location", monitor),
        ("Link", f'<{monitor}>; rel="monitor"'),
        ("Preference-Applied", "respond-async"),
        ("Vary", "Prefer"),
    )
    return told(dataclasses.replace(accepted, headers=headers), accepted.memo.get("outcome", "miss"))


class OwnAnswers:
    """The answers of one offloader, built from its settings once, then shared by every request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        retry = settings.retry_after
        #: The 202s, by the Cache-Status ``fwd`` they say, whether the job was queued already, and Retry-After.
        self._accepted: dict[tuple[Any, ...], CachedResponse] = {
            (fwd, collapsed): told(
                self._status(own_answer(202, retry), fwd, collapsed=collapsed), "collapsed" if collapsed else "miss"
            )
            for fwd in ("uri-miss", "vary-miss", "stale")
            for collapsed in (False, True)
        }
        self._limited: dict[int, CachedResponse] = {}  # the 429s of admission control, by Retry-After
        self.queue_full = told(self._status(own_answer(503, retry), "uri-miss", detail="queue-full"), "refused")
        self.unavailable = told(
            self._status(own_answer(503, retry), "uri-miss", detail="backend-unavailable"), "outage"
        )
        self.uri_too_long = told(self._status(own_answer(414, body=b"Request-URI too long\n"), "bypass"), "bypass")
        self.headers_too_large = told(
            self._status(own_answer(431, body=b"Request headers too large\n"), "bypass"), "bypass"
        )

    def _status(self, answer: CachedResponse, fwd: str, collapsed: bool = False, detail: str = "") -> CachedResponse:
        if not self.settings.cache_status:
            return answer
        return with_status(answer, status_of(fwd, collapsed, detail))

    def accepted(self, fwd: str, collapsed: bool, duration: float) -> CachedResponse:
        """The 202, its ``Retry-After`` from ``duration``, the seconds the app took to compute the URL last."""
        retry = self.retry_after(duration)
        accepted = self._accepted.get((fwd, collapsed, retry))
        if accepted is None:
            base = self._accepted[fwd, collapsed]
            headers = tuple(
                (name, str(retry)) if name == "Retry-After" else (name, value) for name, value in base.headers
            )
            shaped = dataclasses.replace(base, headers=headers)
            accepted = self._accepted[fwd, collapsed, retry] = told(shaped, base.memo["outcome"])
        return accepted

    def retry_after(self, duration: float) -> int:
        """When to ask again: the time the app took to compute the URL last, within the configured bounds.

        >>> OwnAnswers(Settings(retry_after=1, retry_after_max=30)).retry_after(4.2)
        5
        """
        settings = self.settings
        return max(settings.retry_after, min(settings.retry_after_max, math.ceil(duration)))

    def limited(self, seconds: int) -> CachedResponse:
        """The 429 of admission control, asking again in ``seconds``."""
        answer = self._limited.get(seconds)
        if answer is None:
            answer = own_answer(429, seconds, b"Too many new requests from this client; try again later\n")
            answer = self._limited[seconds] = told(self._status(answer, "uri-miss", detail="limited"), "limited")
        return answer
