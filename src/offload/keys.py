"""Request keys and path patterns.

A key names one cacheable answer: the path, the query string with its
parameters put in a canonical order, and a digest of each header the answer
varies on (by default ``Authorization`` and ``Cookie``, so that one user's
answer is never served to another). Keys are SHA-256 digests, so they have a
fixed length and any byte in a path, query or header is safe in every backend.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import quote, unquote_to_bytes

QueryPairs = tuple[tuple[bytes, bytes], ...]

# Characters left as they are when a path or a query part is written out in
# its canonical, percent-encoded form.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = ":@!$'()*,;/?-._~"


def parse_query(query: bytes) -> QueryPairs:
    """Split a raw query string into decoded ``(name, value)`` byte pairs, sorted.

    ``b"b=2&a=1"`` and ``b"a=1&b=%32"`` give the same pairs, so they get the
    same key. ``+`` means a space, as in HTML forms; ``a`` and ``a=`` are the same.

    >>> parse_query(b"b=2&a=1&a=%30")
    ((b'a', b'0'), (b'a', b'1'), (b'b', b'2'))
    """
    pairs = []
    for part in query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        pairs.append((_unquote(name), _unquote(value)))
    pairs.sort()
    return tuple(pairs)


def canonical_query(pairs: QueryPairs) -> str:
    """Write query pairs out as one canonical, ASCII query string.

    >>> canonical_query(parse_query(b"q=caf%C3%A9&a=1+2"))
    'a=1%202&q=caf%C3%A9'
    """
    return "&".join(f"{quote(n, _QUERY_SAFE)}={quote(v, _QUERY_SAFE)}" for n, v in pairs)


def canonical_path(path: bytes) -> str:
    """The path as stored beside a cached answer: percent-encoded ASCII.

    >>> canonical_path("/café/a b".encode())
    '/caf%C3%A9/a%20b'
    """
    return quote(path, _PATH_SAFE)


def request_key(path: bytes, query: bytes, vary: Iterable[tuple[str, bytes | None]]) -> str:
    """The key of a GET request: path, canonical query and the vary header digests."""
    digest = hashlib.sha256(path)
    digest.update(b"\0?")
    for name, value in parse_query(query):
        digest.update(b"%d:%b=%d:%b&" % (len(name), name, len(value), value))
    for header, header_value in vary:
        if header_value is not None:
            digest.update(b"\0%b\0%b" % (header.encode("latin-1"), hashlib.sha256(header_value).digest()))
    return digest.hexdigest()


def path_matcher(pattern: str) -> Callable[[str], bool]:
    """Build a test for canonical paths from a pattern where ``*`` matches anything.

    The pattern is decoded text, as a person writes it (``/café/*``); it is
    encoded the same way stored paths are, so both forms compare equal.

    >>> match = path_matcher("/reports/*")
    >>> match("/reports/2024"), match("/report")
    (True, False)
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("a path pattern must be a non-empty string such as '/reports/*'")
    parts = [re.escape(canonical_path(part.encode("utf-8", "surrogateescape"))) for part in pattern.split("*")]
    regex = re.compile(".*".join(parts), re.DOTALL)
    return lambda path: regex.fullmatch(path) is not None


def glob_pattern(pattern: str) -> str:
    """The pattern as an SQL ``GLOB`` expression over canonical paths (``*`` stays a wildcard)."""
    parts = [canonical_path(part.encode("utf-8", "surrogateescape")) for part in pattern.split("*")]
    return "*".join(part.replace("[", "[[]").replace("?", "[?]") for part in parts)


def params_match(query: str, params: Sequence[tuple[str, str]]) -> bool:
    """Whether a stored canonical query holds every given ``(name, value)`` exactly.

    >>> params_match("a=1&b=2", [("a", "1")]), params_match("aa=10", [("a", "1")])
    (True, False)
    """
    if not params:
        return True
    present = set(query.split("&")) if query else set()
    return all(canonical_query(((n.encode(), v.encode()),)) in present for n, v in params)


def normalize_params(params: object) -> tuple[tuple[str, str], ...]:
    """Accept params as a mapping or as pairs; reject anything else clearly."""
    if params is None:
        return ()
    items = params.items() if isinstance(params, dict) else params
    try:
        pairs = tuple((str(name), str(value)) for name, value in items)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError("params must be a mapping or a sequence of (name, value) pairs") from None
    return pairs


def _unquote(text: bytes) -> bytes:
    if b"%" not in text and b"+" not in text:
        return text
    return unquote_to_bytes(text.replace(b"+", b" "))
