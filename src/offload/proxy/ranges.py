"""Range requests served from a stored complete answer (RFC 9110 14).

A cache that holds a whole ``200`` may answer a ``Range: bytes=...`` request
with the part asked for, as a ``206 Partial Content`` with ``Content-Range``,
or a ``416 Range Not Satisfiable`` when the range lies outside the body. Only
single byte ranges are cut; a request for several ranges, a unit other than
bytes, or a syntax error gets the whole answer, which is always allowed. An
``If-Range`` that does not match the stored answer (a strong entity tag, or
the exact ``Last-Modified`` date) also gets the whole answer.
"""

from __future__ import annotations

import dataclasses

from offload.records import CachedResponse


def ranged(answer: CachedResponse, range_field: str, if_range: str | None = None) -> CachedResponse:
    """The part of ``answer`` a ``Range`` field asks for, or ``answer`` itself.

    >>> whole = CachedResponse(200, (("Content-Length", "10"), ("ETag", '"x"')), b"0123456789")
    >>> part = ranged(whole, "bytes=-3")
    >>> part.status, part.body, part.headers
    (206, b'789', (('Content-Length', '3'), ('ETag', '"x"'), ('Content-Range', 'bytes 7-9/10')))
    >>> ranged(whole, "bytes=20-").status, ranged(whole, "bytes=0-1, 4-5").status
    (416, 200)
    """
    if answer.status != 200 or (if_range is not None and not _if_range_holds(answer, if_range)):
        return answer
    size = len(answer.body)
    span = _single_range(range_field, size)
    if span is None:
        return answer
    if not span:
        headers = (*_with_length(answer.headers, 0), ("Content-Range", f"bytes */{size}"))
        return dataclasses.replace(answer, status=416, reason="", headers=headers, body=b"")
    first, last = span
    headers = (*_with_length(answer.headers, last - first + 1), ("Content-Range", f"bytes {first}-{last}/{size}"))
    return dataclasses.replace(answer, status=206, reason="", headers=headers, body=answer.body[first : last + 1])


def _single_range(field: str, size: int) -> tuple[int, ...] | None:
    """``(first, last)`` of one satisfiable byte range, ``()`` for an unsatisfiable one, None to ignore the field."""
    unit, sep, spec = field.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    start, dash, end = spec.strip().partition("-")
    start, end = start.strip(), end.strip()
    if not dash or not (start.isdigit() or end.isdigit()) or (start and not start.isdigit()):
        return None
    if end and not end.isdigit():
        return None
    if not start:  # a suffix: the last N bytes
        length = int(end)
        if length == 0 or size == 0:
            return ()
        return max(0, size - length), size - 1
    first = int(start)
    last = min(int(end), size - 1) if end else size - 1
    if end and int(end) < first:
        return None  # invalid: ignored
    if first >= size:
        return ()
    return first, last


def _if_range_holds(answer: CachedResponse, if_range: str) -> bool:
    """Whether an ``If-Range`` matches the stored answer: a strong entity tag, or ``Last-Modified`` exactly."""
    if_range = if_range.strip()
    if if_range.startswith('"'):
        etag = answer.header("etag")
        return etag is not None and not etag.startswith("W/") and etag.strip() == if_range
    modified = answer.header("last-modified")
    return modified is not None and modified.strip() == if_range


def _with_length(headers: tuple[tuple[str, str], ...], length: int) -> tuple[tuple[str, str], ...]:
    """The headers with one ``Content-Length`` of ``length``, where the first one was (else first)."""
    if not any(name.lower() == "content-length" for name, _ in headers):
        return (("Content-Length", str(length)), *headers)
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name.lower() != "content-length":
            out.append((name, value))
        elif not any(kept.lower() == "content-length" for kept, _ in out):
            out.append((name, str(length)))
    return tuple(out)
