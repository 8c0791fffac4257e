"""The rules of a shared HTTP cache (RFC 9111, RFC 5861, RFC 9213), as the policy offload's proxy mode follows.

In proxy mode the origin is an HTTP server that declares in its answers what
may be shared, so offload obeys the answers and the clients instead of its
own options (see docs/SECURITY.md, "Proxy mode"). :class:`SharedCache`
overrides each decision of :class:`offload.policy.CachePolicy`:

* **look** (RFC 9111 4, 5.2.1): a stored answer serves a request while it is
  fresh, within the request's ``max-age`` and ``min-fresh``; stale, within
  ``stale-while-revalidate`` (one refresh queued), ``stale-if-error`` (after
  a failed refresh) or the request's ``max-stale``, unless the answer forbids
  it (``must-revalidate``, ``proxy-revalidate``, ``s-maxage``, ``no-cache``).
  A request with ``no-cache`` (or ``Pragma: no-cache`` without
  ``Cache-Control``) or ``no-store`` is served only an answer fetched since
  it arrived. An answer fetched since the request arrived always serves it.
* **at_miss**: ``only-if-cached`` gets a ``504``; ``no-store`` requests and
  ``HEAD`` requests nothing stored can serve go to the origin directly;
  the rest queue one fetch per key, which the client waits for (``miss_wait``).
* **replayed**: every header the client sent is kept, so the fetch carries the
  request's end-to-end headers; :mod:`offload.proxy.upstream` drops the
  hop-by-hop and conditional ones and adds the ``Forwarded`` family.
* **judge** (RFC 9111 3, 3.5, 5.2.2): not stored when the answer says
  ``no-store`` (unless ``must-understand`` and a status this cache knows) or
  ``private``, has ``Vary: *``, is partial or ``304``, answers an
  ``Authorization`` request without ``public``, ``s-maxage`` or
  ``must-revalidate``, or has neither explicit freshness, ``public``, nor a
  heuristically cacheable status. ``Set-Cookie`` does not prevent storing.
  Such an answer goes once, to the request that caused it.
* **lifetimes** (RFC 9111 4.2): ``s-maxage``, then ``max-age``, then
  ``Expires`` minus ``Date``, else 10% of the time since ``Last-Modified``
  (at most a day) for heuristically cacheable statuses and ``public``
  answers; minus the answer's corrected initial age (RFC 9111 4.2.3, the
  ``Age`` the fetch recorded). ``no-cache`` makes it zero. A valid
  ``CDN-Cache-Control`` replaces ``Cache-Control`` and ``Expires``. An answer
  with validators is kept ``ttl`` seconds past its expiry, to be revalidated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from offload import freshness
from offload.answers import own_answer
from offload.delivery import age_when_stored, status_of, with_status
from offload.freshness import EXPIRED, FRESH, Found, Lifetimes
from offload.keys import canonical_path
from offload.policy import FORWARD, QUEUE, CachePolicy, MissAction
from offload.proxy import fields
from offload.records import CachedResponse, StoredRequest, VaryRecord
from offload.storable import Verdict, vary_names

if TYPE_CHECKING:
    from offload.core import Incoming
    from offload.settings import Settings

#: Statuses a cache may give a heuristic lifetime (RFC 9110 15.1).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: Statuses whose caching rules this cache knows, for ``must-understand`` (RFC 9111 5.2.2.3).
UNDERSTOOD_STATUSES = frozenset(
    {200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 500, 501, 502, 503, 504}
)
#: Request headers that carry credentials: a fetch whose request has one keeps no copy of the request.
CREDENTIALS = ("authorization", "cookie", "proxy-authorization")
#: Request fields whose values compare case-insensitively: language ranges, content codings, charsets.
CASELESS_FIELDS = frozenset({"accept-language", "accept-encoding", "accept-charset"})
#: The pseudo-header under which a stored request keeps the client's address (for ``X-Forwarded-For``).
#: It starts with a colon, which no header name has, so no ``Vary`` can name it.
CLIENT = ":client"
#: The fraction of the time since ``Last-Modified`` a heuristic lifetime is, and its cap (RFC 9111 4.2.2).
HEURISTIC_FRACTION = 0.1
HEURISTIC_LIMIT = 86400.0

#: The field that marks a :func:`pass_marker`, and how long one is kept.
PASS_FIELD = "Offload-Pass"
PASS_TTL = 60.0

#: A stale answer served because the request's ``max-stale`` accepts it.
MAX_STALE = Found(True, False, "max-stale")

Directives = dict[str, str | None]


class SharedCache(CachePolicy):
    """RFC 9111's shared cache, for :mod:`offload.proxy` (see the module docstring)."""

    owned_answers = True

    def __init__(self, cdn_field: str | None = "cdn-cache-control") -> None:
        #: The targeted field obeyed over ``Cache-Control`` (RFC 9213), or None to obey none.
        self.cdn_field = cdn_field
        status = status_of("uri-miss", detail="only-if-cached")
        answer = with_status(own_answer(504, body=b"Not in the cache (only-if-cached)\n"), status)
        answer.memo["outcome"] = "refused"
        self._not_cached = answer

    # -- the request side -------------------------------------------------------------------------------

    def look(
        self, answer: CachedResponse, incoming: Incoming, now: float, settings: Settings, draw: Callable[[], float]
    ) -> Found:
        if is_pass(answer):
            return EXPIRED  # too large to keep: requests for it go to the upstream directly
        if answer.created >= incoming.arrived:
            return FRESH  # fetched for this very request, or after it arrived
        asked = request_directives(incoming.header)
        if "no-cache" in asked or "no-store" in asked:
            return EXPIRED
        found = freshness.look(answer, now, settings.early_refresh, draw)
        age = age_when_stored(answer) + max(0.0, now - answer.created)
        max_age = fields.delta_seconds(asked.get("max-age"))
        min_fresh = fields.delta_seconds(asked.get("min-fresh"))
        if (max_age is not None and age > max_age) or (min_fresh is not None and answer.expires - now < min_fresh):
            return EXPIRED
        if found.serve or "max-stale" not in asked or answer.failed or self.forbids_stale(answer):
            return found
        limit = fields.delta_seconds(asked["max-stale"])
        if asked["max-stale"] is None or (limit is not None and now - answer.expires <= limit):
            return MAX_STALE
        return found

    def at_miss(self, incoming: Incoming, found: CachedResponse | VaryRecord | None) -> MissAction | CachedResponse:
        asked = request_directives(incoming.header)
        if "only-if-cached" in asked:
            return self._not_cached
        if "no-store" in asked or incoming.method == "HEAD":
            return FORWARD
        if isinstance(found, CachedResponse) and is_pass(found):
            return FORWARD
        return QUEUE

    def keyed(self, name: str, value: bytes | None) -> bytes | None:
        """A request header as a key holds it: normalised as RFC 9111 4.1 allows when matching ``Vary``.

        Field lines are combined, whitespace around the commas between members
        and empty members go (``"1,2"``, ``" 1 , 2 "`` and two lines ``1`` and
        ``2`` are one value), and the fields whose values are case-insensitive
        (:data:`CASELESS_FIELDS`) are lowercased.
        """
        if value is None:
            return None
        normal = ", ".join(fields.list_members(value.decode("latin-1")))
        if name in CASELESS_FIELDS:
            normal = normal.lower()
        return normal.encode("latin-1")

    def replayed(self, incoming: Incoming, keyed: tuple[str, ...]) -> tuple[list[tuple[str, bytes]], tuple[str, ...]]:
        """Every header the client sent, as sent, and its address; the key's headers are among them."""
        headers = []
        for name in incoming.names():
            value = incoming.header(name)
            if value is not None:
                headers.append((name, value))
        headers.append((CLIENT, incoming.client.encode("latin-1", "replace")))
        return headers, ()

    # -- the answer side --------------------------------------------------------------------------------

    def judge(self, response: CachedResponse, request: StoredRequest, settings: Settings) -> Verdict:
        names, _ = vary_names(response.headers)
        learn = tuple(sorted(names - set(request.vary) - set(request.learned)))
        reason = self.unstorable(response, request)
        return Verdict(bool(reason), reason, learn)

    def unstorable(self, response: CachedResponse, request: StoredRequest) -> str:
        """Why RFC 9111 forbids a shared cache to store this answer to ``request``; empty when it may."""
        cc, _ = self.directives_of(response)
        asked = request_directives(lambda name: request.header(name))
        status = response.status
        if vary_names(response.headers)[1]:
            return "its Vary is *"
        if status < 200 or status in (206, 304):
            return f"a {status} is not stored"
        if "no-store" in asked:
            return "the request said no-store"
        if "must-understand" in cc and status not in UNDERSTOOD_STATUSES:
            return f"must-understand, and {status} is not a status this cache knows"
        if "no-store" in cc and "must-understand" not in cc:
            return "Cache-Control: no-store"
        if "private" in cc:
            return "Cache-Control: private"
        if request.header("authorization") is not None and not ({"public", "s-maxage", "must-revalidate"} & set(cc)):
            return "it answers a request with Authorization, without public, s-maxage or must-revalidate"
        if not (self.explicit(response) or "public" in cc or status in HEURISTIC_STATUSES):
            return f"a {status} without explicit freshness or public"
        return ""

    def keeps_request(self, request: StoredRequest) -> bool:
        return all(request.header(name) is None for name in CREDENTIALS)

    def lifetimes(self, response: CachedResponse, request: StoredRequest, settings: Settings, now: float) -> Lifetimes:
        if is_pass(response):  # stale at once, so that nothing serves it, and kept to send requests on
            return Lifetimes(0.0, 0.0, 0.0, PASS_TTL)
        if response.failed and not response.from_app:  # offload's own 502 or 504: the upstream failed
            return Lifetimes(settings.error_ttl, 0.0, 0.0)
        cc, _ = self.directives_of(response)
        received = response.created or now
        lifetime = self.explicit(response)
        lifetime_given = lifetime is not None
        if lifetime is None:
            lifetime = self.heuristic(response, cc, received)
        fresh = lifetime - age_when_stored(response)
        if "no-cache" in cc:
            fresh = min(fresh, 0.0)
        revalidate = fields.delta_seconds(cc.get("stale-while-revalidate"))
        on_error = fields.delta_seconds(cc.get("stale-if-error"))
        once_fresh = fresh > 0  # the configured windows keep answers that were fresh once
        stale = float(revalidate) if revalidate is not None else (settings.stale if once_fresh else 0.0)
        if_error = float(on_error) if on_error is not None else (settings.stale_if_error if once_fresh else 0.0)
        if _forbids_stale(cc):
            stale = if_error = 0.0
        kept = 0.0
        if lifetime_given or response.header("etag") is not None or response.header("last-modified") is not None:
            # Kept past its expiry for its validators, and for requests that accept it stale (max-stale).
            kept = settings.ttl_for(canonical_path(request.target.full_path)) + max(0.0, -fresh)
        return Lifetimes(fresh, stale, if_error, kept)

    # -- reading an answer ----------------------------------------------------------------------------------

    def directives_of(self, response: CachedResponse) -> tuple[Directives, bool]:
        """The directives this cache obeys: a valid ``CDN-Cache-Control``'s, else ``Cache-Control``'s.

        The second item says whether they come from the targeted field, in
        which case ``Expires`` is not obeyed either (RFC 9213 2.1).
        """
        memo = response.memo
        found: tuple[Directives, bool] | None = memo.get("shared-cache-directives")
        if found is None:
            targeted = fields.cdn_directives(response.headers, self.cdn_field) if self.cdn_field else None
            found = (targeted, True) if targeted is not None else (fields.directives(response.headers), False)
            memo["shared-cache-directives"] = found
        return found

    def explicit(self, response: CachedResponse) -> float | None:
        """The explicit lifetime (RFC 9111 4.2.1): ``s-maxage``, ``max-age``, ``Expires`` minus ``Date``; else None.

        An invalid lifetime (``max-age=-1``) or ``Expires`` (not a date) counts
        as zero: the answer is stale.
        """
        cc, targeted = self.directives_of(response)
        for name in ("s-maxage", "max-age"):
            if name in cc:
                seconds = fields.delta_seconds(cc[name])
                return 0.0 if seconds is None else float(seconds)
        if targeted:
            return None
        expires_fields = [value for name, value in response.headers if name.lower() == "expires"]
        if not expires_fields:
            return None
        received = response.created or None
        expires = fields.http_date(expires_fields[0], received)
        if expires is None:
            return 0.0
        date = fields.http_date(response.header("date"), received)
        base = date if date is not None else (received if received is not None else expires)
        return max(0.0, expires - base)

    def heuristic(self, response: CachedResponse, cc: Directives, received: float) -> float:
        """A heuristic lifetime (RFC 9111 4.2.2): a tenth of the time since ``Last-Modified``, at most a day."""
        if response.status not in HEURISTIC_STATUSES and "public" not in cc:
            return 0.0
        modified = fields.http_date(response.header("last-modified"), received)
        if modified is None:
            return 0.0
        date = fields.http_date(response.header("date"), received)
        since = (date if date is not None else received) - modified
        return min(HEURISTIC_LIMIT, max(0.0, since * HEURISTIC_FRACTION))

    def forbids_stale(self, answer: CachedResponse) -> bool:
        """Whether the answer forbids serving it stale (RFC 9111 4.2.4, 5.2.2)."""
        return _forbids_stale(self.directives_of(answer)[0])


def pass_marker(reason: str) -> CachedResponse:
    """What a fetch stores for a URL whose answers it cannot keep (larger than ``max_body``).

    Stored under the URL's key for :data:`PASS_TTL` seconds, it sends the
    requests for that URL to the upstream directly, streaming, instead of to
    a worker (Varnish's "hit-for-pass").
    """
    answer = own_answer(502, body=f"offload: {reason}\n".encode())
    return dataclasses.replace(answer, headers=(*answer.headers, (PASS_FIELD, reason)))


def is_pass(answer: CachedResponse) -> bool:
    """Whether a stored answer is a :func:`pass_marker`."""
    found: bool | None = answer.memo.get("pass")
    if found is None:
        found = answer.memo["pass"] = answer.status == 502 and answer.header(PASS_FIELD) is not None
    return found


def _forbids_stale(cc: Directives) -> bool:
    return bool({"must-revalidate", "proxy-revalidate", "s-maxage", "no-cache"} & set(cc))


def request_directives(header: Callable[[str], bytes | None]) -> Directives:
    """A request's ``Cache-Control`` directives; ``Pragma: no-cache`` counts as ``no-cache`` only without it."""
    control, pragma = header("cache-control"), header("pragma")
    if control is not None:
        return fields.directives([("cache-control", control.decode("latin-1"))])
    if pragma is not None and "no-cache" in _tokens(pragma.decode("latin-1")):
        return {"no-cache": None}
    return {}


def _tokens(value: str) -> Iterable[str]:
    return (part.strip().lower() for part in value.split(","))
