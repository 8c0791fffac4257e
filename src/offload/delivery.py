"""What the client gets of a stored answer: ``Age``, ``Cache-Status``, and ``304 Not Modified`` when it has it.

This is Varnish's ``vcl_deliver``: the stored answer stays exactly what the
app answered, and these headers are added on the way out.

* ``Age`` (RFC 9111 5.1, 4.2.3): seconds since the app answered (the end of
  the job's replay, ``CachedResponse.created``, not the job's start), plus
  the ``Age`` the answer had when it was stored (an upstream cache's), which it replaces.
* ``Cache-Status`` (RFC 9211), the member ``offload``: ``hit; ttl=N`` for a
  fresh answer (N seconds of freshness left), ``hit; ttl=-N;
  detail=stale-while-revalidate`` or ``detail=stale-if-error`` for a stale one,
  ``fwd=uri-miss`` (``fwd=stale``, ``fwd=vary-miss``; ``collapsed`` when the job
  was already queued) for a 202, ``fwd=method`` or ``fwd=bypass`` when the app
  answers by itself. ``cache_status=False`` turns it off.
* Conditional requests (RFC 9110 13.1): ``If-None-Match`` (weak comparison,
  lists, ``*``) against the answer's ``ETag``, else ``If-Modified-Since``
  against its ``Last-Modified``: a match is a ``304`` with no body and the
  headers a 200 would have carried that RFC 9110 15.4.5 asks for.

The headers of one answer are built once per second and reused, so a hit
costs a dictionary lookup here too.
"""

from __future__ import annotations

import dataclasses

from offload.freshness import Found, http_date
from offload.records import CachedResponse
from offload.storable import split_list

#: Headers a 304 repeats from the answer it stands for (RFC 9110 15.4.5), besides Age and Cache-Status.
NOT_MODIFIED_HEADERS = frozenset({"cache-control", "content-location", "date", "etag", "expires", "vary"})

#: The ``Cache-Status`` member name offload answers with.
MEMBER = "offload"

Conditions = tuple[str | None, str | None]  # If-None-Match, If-Modified-Since
NO_CONDITIONS: Conditions = (None, None)


def status_of(fwd: str, collapsed: bool = False, detail: str = "") -> str:
    """A ``Cache-Status`` value for an answer the app did not give from the store (RFC 9211 2.2).

    >>> status_of("uri-miss", collapsed=True)
    'offload; fwd=uri-miss; collapsed'
    """
    value = f"{MEMBER}; fwd={fwd}"
    if collapsed:
        value += "; collapsed"
    if detail:
        value += f"; detail={detail}"
    return value


def with_status(answer: CachedResponse, value: str) -> CachedResponse:
    """One of offload's own answers with a ``Cache-Status`` header."""
    return dataclasses.replace(answer, headers=(*answer.headers, ("Cache-Status", value)))


def deliver(
    answer: CachedResponse, now: float, found: Found, conditions: Conditions = NO_CONDITIONS, cache_status: bool = True
) -> CachedResponse:
    """The answer as the client gets it at ``now``: with Age and Cache-Status, or a 304 for its validators."""
    second = int(now)
    memo = answer.memo
    key = (found.detail, cache_status)
    kept = memo.get("delivered")
    if kept is not None and kept[0] == second and kept[1] == key:
        delivered: CachedResponse = kept[2]
    else:
        initial, headers = _own_age(answer)
        extra = [("Age", str(max(0, int(initial + now - answer.created))))]
        if cache_status:
            extra.append(("Cache-Status", _hit(answer, now, found)))
        delivered = dataclasses.replace(answer, headers=(*headers, *extra))
        delivered.memo["outcome"] = "stale" if found.stale else "hit"
        memo["delivered"] = (second, key, delivered)
    if conditions != NO_CONDITIONS and 200 <= answer.status < 300 and _matches(answer, conditions):
        short: CachedResponse | None = delivered.memo.get("not-modified")
        if short is None:
            short = delivered.memo["not-modified"] = _not_modified(delivered)
            short.memo["outcome"] = "not-modified"
        return short
    return delivered


def age_when_stored(answer: CachedResponse) -> int:
    """The ``Age`` an answer had when it was stored (0 without one): its corrected initial age."""
    return _own_age(answer)[0]


def _own_age(answer: CachedResponse) -> tuple[int, tuple[tuple[str, str], ...]]:
    """The answer's own ``Age`` (0 without a valid one) and its headers without it, worked out once per answer."""
    memo = answer.memo
    found: tuple[int, tuple[tuple[str, str], ...]] | None = memo.get("own-age")
    if found is None:
        values = [value for name, value in answer.headers if name.lower() == "age"]
        if not values:
            found = (0, answer.headers)
        else:
            text = values[0].strip()
            found = (int(text) if text.isdigit() else 0, tuple(h for h in answer.headers if h[0].lower() != "age"))
        memo["own-age"] = found
    return found


def _matches(answer: CachedResponse, conditions: Conditions) -> bool:
    """:func:`not_modified`, remembered per answer for the last few sets of validators clients sent."""
    seen: dict[Conditions, bool] = answer.memo.setdefault("conditions", {})
    matched = seen.get(conditions)
    if matched is None:
        if len(seen) >= 16:
            seen.clear()
        matched = seen[conditions] = not_modified(answer, conditions)
    return matched


def _hit(answer: CachedResponse, now: float, found: Found) -> str:
    value = f"{MEMBER}; hit; ttl={int(answer.expires - now)}"
    if found.detail:
        value += f"; detail={found.detail}"
    return value


def not_modified(answer: CachedResponse, conditions: Conditions) -> bool:
    """Whether the client's validators match the answer: RFC 9110 13.2.2's order, If-None-Match first."""
    if_none_match, if_modified_since = conditions
    if if_none_match is not None:
        etag = answer.header("etag")
        if etag is None:
            return False
        if if_none_match.strip() == "*":
            return True
        mine = _opaque(etag)
        return any(_opaque(tag) == mine for tag in split_list(if_none_match))
    if if_modified_since is not None and answer.status == 200:
        last_modified = answer.header("last-modified")
        since, modified = http_date(if_modified_since), http_date(last_modified or "")
        return since is not None and modified is not None and modified <= since
    return False


def _not_modified(delivered: CachedResponse) -> CachedResponse:
    headers = tuple(
        (name, value)
        for name, value in delivered.headers
        if name.lower() in NOT_MODIFIED_HEADERS or name in ("Age", "Cache-Status")
    )
    return dataclasses.replace(delivered, status=304, headers=headers, body=b"", reason="")


def _opaque(tag: str) -> str:
    """The opaque part of an entity tag: ``W/"x"`` and ``"x"`` compare equal (weak comparison)."""
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag
