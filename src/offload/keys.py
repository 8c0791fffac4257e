"""Request keys and path patterns: which requests share an answer.

A key names one cacheable answer. It is made of everything a worker hands the
app when it replays the request (:class:`Target`: scheme, ``Host``, mount
point, path as sent, query with its parameters in a canonical order) and a
digest of the value of each keyed header: the ``vary`` option (by default
``Authorization`` and ``Cookie``, so that one user's answer is never served to
another) plus the headers the app's own ``Vary`` named for that URL. Two
requests share a key only when the app would see the same inputs at replay.
Keys are SHA-256 digests, so they have a fixed length and any byte in a path,
query or header is safe in every backend.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

QueryPairs = tuple[tuple[bytes, bytes], ...]

#: Bumped when the recipe of a key changes, so that answers stored under an older recipe are never read.
KEY_VERSION = b"offload-key/2"


@dataclass(frozen=True, slots=True)
class Target:
    """The request line and ``Host`` of a GET, as a worker replays it: every part is in the key.

    ``host`` is the ``Host`` header as sent (latin-1 text), or the server's
    name and port when the client sent none; ``root_path`` is the mount point
    (WSGI ``SCRIPT_NAME``, ASGI ``root_path``); ``path`` is the rest of the path,
    percent-decoded; ``raw_path`` is the path exactly as sent where the server
    gives it (ASGI), so ``/a%2Fb`` and ``/a/b`` stay apart; ``query`` is the
    canonical query string (:func:`canonical_query`), which is also what the
    app is given at replay.
    """

    scheme: str
    host: str
    root_path: bytes
    path: bytes
    query: bytes
    raw_path: bytes | None = None

    @property
    def full_path(self) -> bytes:
        """Mount point and path together, percent-decoded: what ``expire()`` patterns are matched against."""
        return self.root_path + self.path

    def digest(self) -> hashlib._Hash:
        """A running SHA-256 of every part, each length-prefixed so that no two targets feed it the same bytes."""
        digest = hashlib.sha256(KEY_VERSION)
        raw = b"\xff" if self.raw_path is None else b"%d:%b" % (len(self.raw_path), self.raw_path)
        host = self.host.encode("latin-1", "replace")
        digest.update(b"%d:%b%d:%b" % (len(self.scheme), self.scheme.encode("latin-1", "replace"), len(host), host))
        digest.update(b"%d:%b%d:%b" % (len(self.root_path), self.root_path, len(self.path), self.path))
        digest.update(raw + b"%d:%b" % (len(self.query), self.query))
        return digest


def request_key(target: Target, headers: Iterable[tuple[str, bytes | None]]) -> str:
    """The primary key of a GET: its target and the digest of each ``vary`` header (None: absent).

    >>> target = Target("https", "example.com", b"", b"/report", b"year=2024")
    >>> request_key(target, [("cookie", None)]) == request_key(target, [("cookie", None)])
    True
    >>> request_key(target, [("cookie", b"a=1")]) == request_key(target, [("cookie", None)])
    False
    """
    digest = target.digest()
    _add_headers(digest, headers)
    return digest.hexdigest()


def variant_key(primary: str, headers: Iterable[tuple[str, bytes | None]]) -> str:
    """The key of one variant of a URL whose answers vary on more headers (learned from the app's ``Vary``)."""
    digest = hashlib.sha256(KEY_VERSION + b"/variant\0" + primary.encode("ascii"))
    _add_headers(digest, headers)
    return digest.hexdigest()


def personal_key(key: str, owner: str) -> str:
    """The key of one request's own job, for a URL whose answers were found to be for one client each.

    A request that finds another request's own answer under its key gets its
    answer computed under this key instead, which only it knows.
    """
    return variant_key(key, [("offload-owner", owner.encode("ascii", "replace"))])


def _add_headers(digest: hashlib._Hash, headers: Iterable[tuple[str, bytes | None]]) -> None:
    for name, value in headers:
        marker = b"-" if value is None else b"=" + hashlib.sha256(value).digest()
        digest.update(b"\0%b%b" % (name.encode("latin-1"), marker))


# Characters left as they are when a path or a query part is written out in
# its canonical, percent-encoded form.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = ":@!$'()*,;/?-._~"


def parse_query(query: bytes) -> QueryPairs:
    """Split a raw query string into decoded ``(name, value)`` byte pairs, sorted by name only.

    ``b"b=2&a=1"`` and ``b"a=1&b=%32"`` give the same pairs, so they get the
    same key; the values of one name keep the order they were sent in, since
    apps read ``?sort=name&sort=date`` as a list. ``+`` means a space, as in
    HTML forms; ``a`` and ``a=`` are the same.

    >>> parse_query(b"b=2&a=1&a=%30")
    ((b'a', b'1'), (b'a', b'0'), (b'b', b'2'))
    """
    pairs = []
    for part in query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        pairs.append((_unquote(name), _unquote(value)))
    pairs.sort(key=_name)  # stable: the values of one name keep their order
    return tuple(pairs)


def _name(pair: tuple[bytes, bytes]) -> bytes:
    return pair[0]


def canonical_query(pairs: QueryPairs) -> str:
    """Write query pairs out as one canonical, ASCII query string: the one a worker replays.

    Parsing it again gives the same pairs, so every request that shares a key
    hands the app the very same query.

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


def target_from_url(url: str, raw_path: bool = False) -> Target:
    """The target of a GET for an absolute URL, as a server would hand it to the app.

    With ``raw_path`` the path is also kept as written (percent-encoded), as
    ASGI servers give it; WSGI servers give only the decoded path.

    >>> target = target_from_url("https://example.com:8443/caf%C3%A9?b=2&a=1")
    >>> target.host, target.path, target.query, target.raw_path
    ('example.com:8443', b'/caf\\xc3\\xa9', b'a=1&b=2', None)
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute http:// or https:// URL")
    host = parts.netloc.rpartition("@")[2]
    written = (parts.path or "/").encode("latin-1", "replace")
    query = canonical_query(parse_query(parts.query.encode("latin-1", "replace"))).encode("ascii")
    return Target(parts.scheme, host, b"", unquote_to_bytes(written), query, written if raw_path else None)


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
