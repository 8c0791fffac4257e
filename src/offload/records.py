"""The records offload keeps in its store, and their wire format.

Nothing read back from a cache or a queue is ever unpickled or evaluated. Each
record is stored as::

    b"offload/1\\n" + <JSON object, one line> + b"\\n" + <raw body bytes>

The JSON line says what the record is (``"kind"``) and, for a response, the
exact body length, so a truncated record is detected. Header names and values
and request paths are bytes on the wire; in JSON they are strings holding one
code point per byte (latin-1), so any byte round-trips. Anything that does not
parse exactly is rejected with :class:`~offload.errors.CorruptRecord` and the
caller treats it as a miss.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from offload.errors import CorruptRecord
from offload.keys import Target

MAGIC = b"offload/1\n"
_MAGIC_LEN = len(MAGIC)

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A complete HTTP response: what the app answered, or an answer of offload's own.

    ``headers`` keeps the app's order and repeated names; names and values are
    latin-1 strings, as in WSGI. ``created`` is when the app answered and
    ``expires`` when it stops being fresh (Unix times; ``expires`` is 0 for
    answers of offload's own). After that it may still be served for
    ``stale`` seconds while one refresh runs (stale-while-revalidate), and for
    ``stale_if_error`` seconds when the refresh failed (stale-if-error); a
    failed refresh sets ``retry_at``, before which no other refresh is queued.
    ``duration`` is how long the app took to compute it; ``tags`` are the
    labels the app gave it (``expire(tag=...)``); ``request`` is the stored
    request that computes it again, kept only when it holds no credential;
    ``url`` the path and query it answers (where a status monitor sends to).
    ``private`` marks an answer meant for one client only (it sets a cookie,
    or says ``private`` or ``no-store``): it is delivered once, to the first
    request that asks, and never served as a hit again; with an ``owner``
    (the token of the request whose job computed it), to that request only.
    """

    status: int
    headers: Headers
    body: bytes = b""
    created: float = 0.0
    failed: bool = False
    expires: float = 0.0
    reason: str = ""
    private: bool = False
    stale: float = 0.0
    stale_if_error: float = 0.0
    duration: float = 0.0
    tags: tuple[str, ...] = ()
    retry_at: float = 0.0
    request: bytes = b""
    url: str = ""
    owner: str = ""
    from_app: bool = field(default=True, compare=False)  # False for offload's own answers; not stored
    _raw_headers: list[tuple[bytes, bytes]] | None = field(default=None, init=False, repr=False, compare=False)
    _memo: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def status_line(self) -> str:
        """The WSGI status string: the app's own reason phrase if it gave one, such as ``"200 Fine"``."""
        return f"{self.status} {self.reason or _reason(self.status)}"

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as ASGI sends them: ``(name, value)`` byte pairs, encoded once per answer."""
        raw = self._raw_headers
        if raw is None:
            raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers]
            object.__setattr__(self, "_raw_headers", raw)
        return raw

    @property
    def memo(self) -> dict[str, Any]:
        """A scratch dict of this answer's own, for what is derived from it once (parsed validators, ...)."""
        memo = self._memo
        if memo is None:
            memo = {}
            object.__setattr__(self, "_memo", memo)
        return memo

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def encode(self) -> bytes:
        meta: dict[str, Any] = {
            "kind": "response",
            "status": self.status,
            "headers": [list(pair) for pair in self.headers],
            "length": len(self.body),
            "created": self.created,
            "expires": self.expires,
            "failed": self.failed,
            "reason": self.reason,
            "private": self.private,
        }
        for name in ("stale", "stale_if_error", "duration", "retry_at"):
            value = getattr(self, name)
            if value:
                meta[name] = value
        if self.tags:
            meta["tags"] = list(self.tags)
        if self.request:
            meta["request"] = self.request.decode("latin-1")
        if self.url:
            meta["url"] = self.url
        if self.owner:
            meta["owner"] = self.owner
        return MAGIC + _dump(meta) + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> CachedResponse:
        meta, body = _split(data, "response")
        status = meta.get("status")
        length = meta.get("length")
        created = meta.get("created")
        expires = meta.get("expires", 0.0)
        failed = meta.get("failed")
        reason = meta.get("reason", "")
        private = meta.get("private", False)
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise CorruptRecord("response record has no valid status")
        if length != len(body):
            raise CorruptRecord("response record is truncated")
        if (
            not isinstance(created, (int, float))
            or not isinstance(expires, (int, float))
            or not isinstance(failed, bool)
            or not isinstance(private, bool)
            or not isinstance(reason, str)
            or any(c in reason for c in "\r\n")
        ):
            raise CorruptRecord("response record has invalid metadata")
        _latin1(reason)
        times = [meta.get(name, 0.0) for name in ("stale", "stale_if_error", "duration", "retry_at")]
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in times):
            raise CorruptRecord("response record has invalid times")
        tags = meta.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise CorruptRecord("response record has invalid tags")
        request, url, owner = meta.get("request", ""), meta.get("url", ""), meta.get("owner", "")
        if not isinstance(request, str) or not isinstance(url, str) or any(c in url for c in "\r\n"):
            raise CorruptRecord("response record has an invalid request or url")
        if not isinstance(owner, str):
            raise CorruptRecord("response record has an invalid owner")
        stale, stale_if_error, duration, retry_at = (float(value) for value in times)
        return cls(
            status,
            _headers(meta.get("headers")),
            body,
            float(created),
            failed,
            float(expires),
            reason,
            private,
            stale,
            stale_if_error,
            duration,
            tuple(tags),
            retry_at,
            _latin1(request),
            url,
            owner,
        )


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """What offload keeps of a GET request so that a worker can replay it: exactly what its key is made of.

    Stored: the target (scheme, ``Host``, mount point, path, raw path, canonical
    query: see :class:`offload.keys.Target`), and the values of the keyed
    headers (``vary`` plus the headers the app's ``Vary`` added for this URL,
    ``learned``), the only request headers the app is given at replay.
    ``present`` names (names only, never values) the other headers the client
    sent, so that a worker that learns the app varies on one of them knows
    the answer it computed without it is not this client's. ``key`` is the
    key the answer is stored under, ``primary`` the key of the URL before
    learned headers: a worker checks both against the stored inputs.
    Never stored: a request body, the client's address, any other header.
    ``trace`` is the W3C ``traceparent`` of the request that queued the job
    (set by :mod:`offload.tracing`, empty otherwise), so the job's span links
    to it; it is not part of the key, and records without it decode as before.
    ``owner`` is the token of the request that queued the job, when answers
    for one client go to their own request only (:mod:`offload.policy`); with
    ``personal`` the key is that request's own (:func:`offload.keys.personal_key`).
    """

    key: str
    primary: str
    target: Target
    headers: tuple[tuple[str, bytes], ...]  # keyed headers the client sent: lowercase name, value
    vary: tuple[str, ...] = ()  # the configured keyed headers, in the order of the setting
    learned: tuple[str, ...] = ()  # the keyed headers learned from the app's Vary, sorted
    present: tuple[str, ...] = ()  # names of the other headers the client sent
    enqueued: float = field(default_factory=time.time)
    trace: str = ""
    owner: str = ""
    personal: bool = False

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def encode(self) -> bytes:
        target = self.target
        meta = {
            "kind": "request",
            "key": self.key,
            "primary": self.primary,
            "scheme": target.scheme,
            "host": target.host,
            "root_path": target.root_path.decode("latin-1"),
            "path": target.path.decode("latin-1"),
            "raw_path": None if target.raw_path is None else target.raw_path.decode("latin-1"),
            "query": target.query.decode("latin-1"),
            "headers": [[n, v.decode("latin-1")] for n, v in self.headers],
            "vary": list(self.vary),
            "learned": list(self.learned),
            "present": list(self.present),
            "enqueued": self.enqueued,
        }
        if self.trace:
            meta["trace"] = self.trace
        if self.owner:
            meta["owner"] = self.owner
        if self.personal:
            meta["personal"] = True
        return MAGIC + _dump(meta) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> StoredRequest:
        meta, body = _split(data, "request")
        if body:
            raise CorruptRecord("request record has trailing data")
        try:
            strings = [meta[name] for name in ("key", "primary", "scheme", "host", "root_path", "path", "query")]
            raw_path, enqueued = meta["raw_path"], meta["enqueued"]
            names = [meta[name] for name in ("vary", "learned", "present")]
        except KeyError as missing:
            raise CorruptRecord(f"request record lacks {missing}") from None
        if not all(isinstance(text, str) for text in strings) or not isinstance(enqueued, (int, float)):
            raise CorruptRecord("request record has invalid fields")
        if not (raw_path is None or isinstance(raw_path, str)):
            raise CorruptRecord("request record has an invalid raw path")
        if not all(isinstance(group, list) and all(isinstance(n, str) for n in group) for group in names):
            raise CorruptRecord("request record has invalid header names")
        key, primary, scheme, host, root_path, path, query = strings
        _latin1(host)
        target = Target(
            scheme,
            host,
            _latin1(root_path),
            _latin1(path),
            _latin1(query),
            None if raw_path is None else _latin1(raw_path),
        )
        headers = tuple((name.decode("latin-1"), value) for name, value in _request_headers(meta.get("headers")))
        vary, learned, present = (tuple(group) for group in names)
        trace, owner, personal = meta.get("trace", ""), meta.get("owner", ""), meta.get("personal", False)
        if not isinstance(trace, str) or not isinstance(owner, str) or not isinstance(personal, bool):
            raise CorruptRecord("request record has an invalid trace or owner")
        return cls(key, primary, target, headers, vary, learned, present, float(enqueued), trace, owner, personal)


@dataclass(frozen=True, slots=True)
class VaryRecord:
    """Stored under a URL's primary key once the app answered it with ``Vary``: the headers to key it on too.

    A request that finds it computes the key of its own variant from these
    headers (:func:`offload.keys.variant_key`) and looks that up instead, as
    Django's cache middleware learns a URL's ``Vary`` and Varnish keeps the
    variants of one object.
    """

    headers: tuple[str, ...]

    def encode(self) -> bytes:
        return MAGIC + _dump({"kind": "vary", "headers": list(self.headers)}) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> VaryRecord:
        meta, _ = _split(data, "vary")
        headers = meta.get("headers")
        if not isinstance(headers, list) or not all(isinstance(h, str) and _is_token(h) for h in headers):
            raise CorruptRecord("vary record has invalid header names")
        return cls(tuple(headers))


def decode_stored(data: bytes) -> CachedResponse | VaryRecord:
    """What a response key holds: an answer, or the headers its answers vary on.

    >>> decode_stored(VaryRecord(("accept-language",)).encode())
    VaryRecord(headers=('accept-language',))
    """
    if data[_MAGIC_LEN : _MAGIC_LEN + 15] == b'{"kind":"vary",':
        return VaryRecord.decode(data)
    return CachedResponse.decode(data)


@dataclass(frozen=True, slots=True)
class PendingMarker:
    """The marker that says a job for a key is queued or running; its expiry is the job's lease."""

    state: str  # "queued", "running" or "retrying"
    since: float
    attempt: int = 0  # the try running or about to run, once the job has started

    def encode(self) -> bytes:
        meta: dict[str, Any] = {"kind": "pending", "state": self.state, "since": self.since}
        if self.attempt:
            meta["attempt"] = self.attempt
        return MAGIC + _dump(meta) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> PendingMarker:
        meta, _ = _split(data, "pending")
        state, since, attempt = meta.get("state"), meta.get("since"), meta.get("attempt", 0)
        if state not in ("queued", "running", "retrying") or not isinstance(since, (int, float)):
            raise CorruptRecord("pending marker has invalid fields")
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            raise CorruptRecord("pending marker has an invalid attempt")
        return cls(state, float(since), attempt)


def _dump(meta: dict[str, Any]) -> bytes:
    # ensure_ascii keeps the line free of raw newlines and of non-ASCII bytes.
    return json.dumps(meta, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _split(data: bytes, kind: str) -> tuple[dict[str, Any], bytes]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptRecord(f"record is {type(data).__name__}, not bytes")
    data = bytes(data)
    if data[:_MAGIC_LEN] != MAGIC:
        raise CorruptRecord("record does not start with offload's format marker")
    end = data.find(b"\n", _MAGIC_LEN)
    if end < 0:
        raise CorruptRecord("record is truncated")
    try:
        meta = json.loads(data[_MAGIC_LEN:end])
    except (ValueError, RecursionError):
        raise CorruptRecord("record metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        raise CorruptRecord(f"record is not a {kind} record")
    return meta, data[end + 1 :]


def _headers(value: object) -> Headers:
    if not isinstance(value, list):
        raise CorruptRecord("record headers are not a list")
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], str)):
            raise CorruptRecord("record header is not a [name, value] pair")
        name, val = pair
        _latin1(name)
        _latin1(val)
        if not name or any(c in name for c in ":\r\n ") or "\r" in val or "\n" in val:
            raise CorruptRecord("record header is malformed")
        pairs.append((name, val))
    return tuple(pairs)


def _request_headers(value: object) -> tuple[tuple[bytes, bytes], ...]:
    # Request headers are handed back to the app as the client sent them, any
    # byte included, so unlike response headers they are not held to the
    # rules of what may be sent on the wire: a record offload wrote must decode.
    if not isinstance(value, list):
        raise CorruptRecord("record headers are not a list")
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], str)):
            raise CorruptRecord("record header is not a [name, value] pair")
        pairs.append((_latin1(pair[0]), _latin1(pair[1])))
    return tuple(pairs)


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(name: str) -> bool:
    """Whether ``name`` is an HTTP token (RFC 9110), as header names must be."""
    return bool(name) and all(c in _TOKEN for c in name)


def is_valid_header(name: str, value: str) -> bool:
    """Whether a response header can be stored and sent on: a token name, a latin-1 value without CR, LF, NUL."""
    return _is_token(name) and _is_latin1(value) and not any(c in value for c in "\r\n\0")


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _latin1(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise CorruptRecord("record holds a character outside latin-1") from None


_REASONS = {status.value: status.phrase for status in HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")
