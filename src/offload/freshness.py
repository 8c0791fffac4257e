"""How long an answer stays fresh, and what a request finds when it looks (RFC 9111, RFC 5861).

Two pure steps, one on each side of the cache:

* when a worker stores an answer, :func:`lifetimes` reads how long it may be
  served: ``Cache-Control: s-maxage`` (a shared cache's own), then ``max-age``,
  then ``Expires``, else the ``ttl`` option; and for how long after that it may
  still be served while one refresh runs (``stale-while-revalidate``, else the
  ``stale`` option) or when the refresh failed (``stale-if-error``, else
  ``stale_if_error``). ``must-revalidate`` and ``proxy-revalidate`` forbid both.
* when a request finds a stored answer, :func:`look` says whether to serve it,
  and whether to queue one refresh: when it is stale, or (probabilistic early
  expiration, "XFetch", Vattani et al., VLDB 2015) a little before it expires,
  with a probability that grows as expiry nears and with the time the app
  takes to compute it: ``now - duration * beta * ln(random()) >= expires``.
  With ``early_refresh`` (beta) at 1, a popular answer is refreshed before it
  expires and never goes stale under load; 0 turns it off.

A URL's life: *cold* (nothing stored: 202 while its job runs), *fresh*
(served), *stale* (served while one refresh runs, within ``stale``), *failed*
(a refresh failed: the last good answer is served within ``stale_if_error``,
and a new refresh is queued once each cooldown, ``error_ttl``, has passed),
then cold again. Without ``stale``, a stale answer is not served until a
refresh has failed: clients get 202 while the first refresh runs.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from offload.errors import CorruptRecord
from offload.records import CachedResponse
from offload.storable import cache_control


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """Seconds an answer is fresh, then may be served stale while revalidating, or if a refresh fails.

    ``revalidate`` is how long after it expires an answer is still kept, served
    to nobody, for its validators: the next fetch asks whether it changed
    (0 in the middleware, which fetches whole answers).
    """

    fresh: float
    stale: float
    stale_if_error: float
    revalidate: float = 0.0

    @property
    def kept(self) -> float:
        """How long the store must hold the answer: fresh, then the longest window after that."""
        return self.fresh + max(self.stale, self.stale_if_error, self.revalidate)

    @property
    def reusable(self) -> bool:
        """Whether the answer is of use after the request it was computed for; if not, it is delivered once."""
        return self.fresh > 0 or self.stale > 0 or self.revalidate > 0


def lifetimes(response: CachedResponse, ttl: float, stale: float, stale_if_error: float, now: float) -> Lifetimes:
    """What the app's answer says of its own lifetimes, with the options as defaults.

    >>> answer = CachedResponse(200, (("Cache-Control", "max-age=60, s-maxage=5, stale-while-revalidate=30"),))
    >>> lifetimes(answer, 300, 0, 0, 0.0)
    Lifetimes(fresh=5.0, stale=30.0, stale_if_error=0.0, revalidate=0.0)
    >>> lifetimes(CachedResponse(200, ()), 300, 10, 600, 0.0)
    Lifetimes(fresh=300.0, stale=10.0, stale_if_error=600.0, revalidate=0.0)
    """
    directives = cache_control(response.headers)
    fresh = _seconds(directives.get("s-maxage"))
    if fresh is None:
        fresh = _seconds(directives.get("max-age"))
    if fresh is None and "s-maxage" not in directives and "max-age" not in directives:
        fresh = _expires_in(response, now)
    if fresh is None:
        fresh = float(ttl)
    revalidate = _seconds(directives.get("stale-while-revalidate"))
    on_error = _seconds(directives.get("stale-if-error"))
    window = float(stale) if revalidate is None else revalidate
    error_window = float(stale_if_error) if on_error is None else on_error
    if "must-revalidate" in directives or "proxy-revalidate" in directives:
        window = error_window = 0.0
    return Lifetimes(max(0.0, fresh), window, error_window)


@dataclass(frozen=True, slots=True)
class Found:
    """What a request does with the answer it found: serve it or not, queue a refresh or not, and why."""

    serve: bool
    refresh: bool = False
    detail: str = ""  # "", "stale-while-revalidate", "stale-if-error"

    @property
    def stale(self) -> bool:
        return bool(self.detail)


FRESH = Found(True)
EARLY = Found(True, True)
REVALIDATING = Found(True, True, "stale-while-revalidate")
COOLING_DOWN = Found(True, False, "stale-while-revalidate")
ON_ERROR = Found(True, False, "stale-if-error")
RETRYING = Found(True, True, "stale-if-error")
EXPIRED = Found(False, True)


def look(answer: CachedResponse, now: float, beta: float = 0.0, random: Callable[[], float] | None = None) -> Found:
    """Whether to serve a stored answer at ``now``, and whether to queue a refresh.

    >>> answer = CachedResponse(200, (), expires=100.0, stale=30.0, stale_if_error=600.0)
    >>> look(answer, 50.0).serve, look(answer, 110.0).detail, look(answer, 200.0).serve
    (True, 'stale-while-revalidate', False)
    """
    expires = answer.expires
    if now < expires:
        early = beta and answer.duration and random is not None and not answer.failed
        if early and now - answer.duration * beta * math.log(max(random(), 1e-12)) >= expires:  # type: ignore[misc]
            return EARLY
        return FRESH
    if answer.failed:
        return EXPIRED
    past = now - expires
    cooling = answer.retry_at > now  # a refresh failed a moment ago: none again before retry_at
    if past < answer.stale:
        return COOLING_DOWN if cooling else REVALIDATING
    if answer.retry_at and past < answer.stale_if_error:  # a refresh failed: the good copy, and a retry later
        return ON_ERROR if cooling else RETRYING
    return EXPIRED


def mark_stale(data: bytes) -> bytes | None:
    """A stored answer made stale at once (a soft purge), or None for a record that is not an answer.

    It keeps its stale windows, so it is served while one refresh runs.
    """
    try:
        answer = CachedResponse.decode(data)
    except CorruptRecord:
        return None
    now = time.time()
    return dataclasses.replace(answer, expires=min(answer.expires, now)).encode()


def with_validator(answer: CachedResponse) -> tuple[tuple[str, str], ...]:
    """The headers of a 2xx answer with an ``ETag``: the app's own, else a strong one made from the body.

    The same body always gives the same tag, so a refresh that changes nothing
    keeps the clients' copies valid.

    >>> with_validator(CachedResponse(200, (), b"hello"))
    (('ETag', '"LPJNul-wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ"'),)
    """
    if not 200 <= answer.status < 300 or answer.header("etag") is not None:
        return answer.headers
    digest = base64.urlsafe_b64encode(hashlib.sha256(answer.body).digest()).rstrip(b"=").decode("ascii")
    return (*answer.headers, ("ETag", f'"{digest}"'))


def keeps_for_errors(answer: CachedResponse, now: float) -> bool:
    """Whether a failed refresh should leave this stored answer in place rather than store its failure."""
    return (
        not answer.failed and not answer.private and answer.expires > 0 and now < answer.expires + answer.stale_if_error
    )


def _seconds(argument: str | None) -> float | None:
    if argument is None:
        return None
    try:
        value = int(argument.strip())
    except ValueError:
        return None
    return float(max(0, value))


def _expires_in(response: CachedResponse, now: float) -> float | None:
    """``Expires`` minus ``Date`` (or minus now, without a Date); an invalid Expires means already expired."""
    expires = response.header("expires")
    if expires is None:
        return None
    at = http_date(expires)
    if at is None:
        return 0.0  # RFC 9111 5.3: an invalid date is in the past
    date = http_date(response.header("date") or "")
    return at - (date if date is not None else now)


def http_date(text: str) -> float | None:
    """An HTTP date as a Unix time, or None when it is not one."""
    try:
        return parsedate_to_datetime(text.strip()).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
