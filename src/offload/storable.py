"""What a worker may keep of the app's answer, and for whom: the rules of a shared cache.

offload stands between many clients and the app, so it follows what RFC 9111
asks of a shared cache, and Django's cache middleware of itself: an answer
that sets a cookie, says ``Cache-Control: private`` (for a request without
credentials), ``no-store`` or ``no-cache``, or ``Vary: *``, was made for one
client. Such an answer is delivered once, to the request waiting for it, and
never served to anyone else (:attr:`Verdict.private`). The app's ``Vary``
names headers the answer depends on: those not keyed yet are learned for the
URL (:attr:`Verdict.learn`), so later requests are keyed on them too.

These are pure functions of the answer, the stored request and the settings:
the worker consults them after each replay (Varnish's ``vcl_backend_response``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from offload.records import CachedResponse, StoredRequest
from offload.settings import Settings

#: Request headers that carry credentials: with one of them in the key, ``Cache-Control: private`` is that user's.
CREDENTIALS = ("authorization", "cookie")


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a replayed answer may be kept.

    ``private``: for the waiting client only, with ``reason`` saying why.
    ``learn``: header names the app's ``Vary`` adds to those already keyed,
    lowercase and sorted; ``vary_all``: the app said ``Vary: *``.
    """

    private: bool = False
    reason: str = ""
    learn: tuple[str, ...] = ()


def header_values(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    """Every value of a response header, by case-insensitive name, in order."""
    return [value for key, value in headers if key.lower() == name]


def cache_control(headers: Iterable[tuple[str, str]]) -> dict[str, str | None]:
    """The ``Cache-Control`` directives of a response, lowercase names to their argument (None when bare).

    >>> cache_control([("Cache-Control", 'private, max-age=60, no-cache="Set-Cookie"')])
    {'private': None, 'max-age': '60', 'no-cache': 'Set-Cookie'}
    """
    directives: dict[str, str | None] = {}
    for value in header_values(headers, "cache-control"):
        for part in split_list(value):
            name, sep, argument = part.partition("=")
            name = name.strip().lower()
            if name and name not in directives:
                directives[name] = argument.strip().strip('"') if sep else None
    return directives


def vary_names(headers: Iterable[tuple[str, str]]) -> tuple[frozenset[str], bool]:
    """The header names of a response's ``Vary``, lowercase, and whether it holds ``*``.

    >>> names, star = vary_names([("Vary", "Accept-Language, Cookie"), ("vary", "accept-encoding")])
    >>> sorted(names), star
    (['accept-encoding', 'accept-language', 'cookie'], False)
    """
    names = {part.strip().lower() for value in header_values(headers, "vary") for part in value.split(",")}
    names.discard("")
    return frozenset(names - {"*"}), "*" in names


def is_failure(response: CachedResponse, settings: Settings) -> bool:
    """Whether the app's answer is a failure, retried like an exception (by default any 5xx)."""
    return response.status in settings.failure_statuses


def has_credentials(request: StoredRequest) -> bool:
    """Whether the request's key holds a credential: a keyed ``Authorization`` or ``Cookie`` it sent."""
    return any(name in request.vary and request.header(name) is not None for name in CREDENTIALS)


def judge(response: CachedResponse, request: StoredRequest, settings: Settings) -> Verdict:
    """How the answer to ``request`` may be kept: shared under its key, or for its client only.

    >>> from offload.keys import Target
    >>> request = StoredRequest("k", "k", Target("http", "h", b"", b"/", b""), (), ("cookie",))
    >>> judge(CachedResponse(200, (("Set-Cookie", "csrftoken=x"),)), request, Settings())
    Verdict(private=True, reason='it sets a cookie', learn=())
    >>> judge(CachedResponse(200, (("Vary", "Accept-Language"),)), request, Settings())
    Verdict(private=False, reason='', learn=('accept-language',))
    """
    headers = response.headers
    names, star = vary_names(headers)
    keyed = set(request.vary) | set(request.learned)
    learn = tuple(sorted(names - keyed))
    directives = cache_control(headers)
    reason = ""
    if star:
        reason = "its Vary is *"
    elif "no-store" in directives:
        reason = "Cache-Control: no-store"
    elif "no-cache" in directives:
        reason = "Cache-Control: no-cache (a stored copy would need revalidation before each use)"
    elif "private" in directives and not has_credentials(request):
        reason = "Cache-Control: private, for a request without credentials"
    elif header_values(headers, "set-cookie") and not settings.share_set_cookie:
        reason = "it sets a cookie"
    return Verdict(bool(reason), reason, learn)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, leaving commas inside quoted strings alone.

    >>> split_list('"a,b", W/"c" ,')
    ['"a,b"', 'W/"c"']
    """
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]
