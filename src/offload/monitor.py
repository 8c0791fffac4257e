"""The status monitor of a job, for clients that prefer to respond async (the Asynchronous Request-Reply pattern).

A client that sends ``Prefer: respond-async`` gets a 202 with ``Location``
(and ``Link: <...>; rel="monitor"``) naming ``<monitor_path><key>``; that URL
answers JSON while the job is queued, running or retrying::

    {"state": "running", "attempt": 1, "for": 2.4, "queued": 3}

(``for``: seconds in that state; ``queued``: jobs waiting in the queue, the
estimate of what is ahead), ``{"state": "failed", "status": 500}`` once it
failed, and, when it is done, ``303 See Other`` to the URL the answer is for.
A key is a SHA-256 digest of everything the request was keyed on, so a
monitor URL cannot be guessed for another user's request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from typing import Any

from offload.answers import own_answer
from offload.core import Offloader, Operation
from offload.errors import BackendUnavailable, CorruptRecord
from offload.records import CachedResponse, PendingMarker, decode_stored

#: Keys are SHA-256 digests in hex.
KEY_LENGTH = 64


def is_key(text: str) -> bool:
    """Whether ``text`` can be a key (64 lowercase hex digits), so nothing else reaches the backend."""
    return len(text) == KEY_LENGTH and all(c in "0123456789abcdef" for c in text)


def status(offloader: Offloader, key: str) -> Generator[Operation, Any, CachedResponse]:
    """The monitor's answer for the job of ``key``: JSON while it is under way, a 303 when it is done."""
    retry = offloader.settings.retry_after
    if not is_key(key):
        return _json(404, {"state": "unknown"}, retry)
    try:
        data = yield ("get", offloader.response_key(key))
        answer = _decoded(data)
        now = time.time()
        if answer is not None and not answer.failed and not answer.private and now < answer.expires and answer.url:
            done = own_answer(303)
            return CachedResponse(303, (*done.headers, ("Location", answer.url)), b"", from_app=False)
        if answer is not None and answer.failed and now < answer.expires:
            return _json(200, {"state": "failed", "status": answer.status}, retry)
        data = yield ("get", offloader.pending_key(key))
        marker = _marker(data)
        if marker is None:
            return _json(404, {"state": "unknown"}, retry)
        stats = yield ("stats",)
        figures = {
            "state": marker.state,
            "attempt": marker.attempt,
            "for": round(max(0.0, now - marker.since), 3),
            "queued": int(stats.get("queued", 0)) if isinstance(stats, dict) else 0,
        }
        return _json(200, figures, retry)
    except BackendUnavailable:
        return offloader.answers.unavailable


def _decoded(data: bytes | None) -> CachedResponse | None:
    if data is None:
        return None
    try:
        found = decode_stored(data)
    except CorruptRecord:
        return None
    return found if isinstance(found, CachedResponse) else None


def _marker(data: bytes | None) -> PendingMarker | None:
    if data is None:
        return None
    try:
        return PendingMarker.decode(data)
    except CorruptRecord:
        return None


def _json(status_code: int, figures: dict[str, Any], retry_after: int) -> CachedResponse:
    body = json.dumps(figures, separators=(",", ":")).encode() + b"\n"
    answer = own_answer(status_code, retry_after if status_code == 200 else None, body)
    headers = tuple(("Content-Type", "application/json") if n == "Content-Type" else (n, v) for n, v in answer.headers)
    return CachedResponse(status_code, headers, body, from_app=False)
