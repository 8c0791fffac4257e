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

MAGIC = b"offload/1\n"
_MAGIC_LEN = len(MAGIC)

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A complete HTTP response: what the app answered, or an answer of offload's own.

    ``headers`` keeps the app's order and repeated names; names and values are
    latin-1 strings, as in WSGI. ``created`` and ``expires`` are Unix
    timestamps (``expires`` is 0 for answers of offload's own).
    """

    status: int
    headers: Headers
    body: bytes = b""
    created: float = 0.0
    failed: bool = False
    expires: float = 0.0
    reason: str = ""
    _raw_headers: list[tuple[bytes, bytes]] | None = field(default=None, init=False, repr=False, compare=False)

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

    def encode(self) -> bytes:
        meta = {
            "kind": "response",
            "status": self.status,
            "headers": [list(pair) for pair in self.headers],
            "length": len(self.body),
            "created": self.created,
            "expires": self.expires,
            "failed": self.failed,
            "reason": self.reason,
        }
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
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise CorruptRecord("response record has no valid status")
        if length != len(body):
            raise CorruptRecord("response record is truncated")
        if (
            not isinstance(created, (int, float))
            or not isinstance(expires, (int, float))
            or not isinstance(failed, bool)
            or not isinstance(reason, str)
            or any(c in reason for c in "\r\n")
        ):
            raise CorruptRecord("response record has invalid metadata")
        _latin1(reason)
        return cls(status, _headers(meta.get("headers")), body, float(created), failed, float(expires), reason)


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """What offload keeps of a GET request so that a worker can replay it.

    Stored: the path (as bytes, percent-decoded), the raw query string, the
    scheme, host and port, the mount point (``root_path``/``SCRIPT_NAME``),
    the client address, and the request headers chosen by ``replay_headers``
    (by default all but hop-by-hop ones). Never stored: a request body (GET
    requests have none that matters).
    """

    key: str
    path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    scheme: str = "http"
    server: tuple[str, int] = ("localhost", 80)
    root_path: str = ""
    client: str = ""
    http_version: str = "1.1"
    enqueued: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        meta = {
            "kind": "request",
            "key": self.key,
            "path": self.path.decode("latin-1"),
            "query": self.query.decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
            "scheme": self.scheme,
            "server": [self.server[0], self.server[1]],
            "root_path": self.root_path,
            "client": self.client,
            "http_version": self.http_version,
            "enqueued": self.enqueued,
        }
        return MAGIC + _dump(meta) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> StoredRequest:
        meta, body = _split(data, "request")
        if body:
            raise CorruptRecord("request record has trailing data")
        try:
            key = meta["key"]
            server = meta["server"]
            enqueued = meta["enqueued"]
            strings = [meta[name] for name in ("path", "query", "scheme", "root_path", "client", "http_version")]
        except KeyError as missing:
            raise CorruptRecord(f"request record lacks {missing}") from None
        if not (isinstance(key, str) and all(isinstance(s, str) for s in strings)):
            raise CorruptRecord("request record has invalid fields")
        if not (
            isinstance(server, list)
            and len(server) == 2
            and isinstance(server[0], str)
            and isinstance(server[1], int)
            and isinstance(enqueued, (int, float))
        ):
            raise CorruptRecord("request record has invalid fields")
        path, query, scheme, root_path, client, http_version = strings
        headers = _request_headers(meta.get("headers"))
        return cls(
            key=key,
            path=_latin1(path),
            query=_latin1(query),
            headers=headers,
            scheme=scheme,
            server=(server[0], server[1]),
            root_path=root_path,
            client=client,
            http_version=http_version,
            enqueued=float(enqueued),
        )


@dataclass(frozen=True, slots=True)
class PendingMarker:
    """The marker that says a job for a key is queued or running; its expiry is the job's lease."""

    state: str  # "queued" or "running"
    since: float

    def encode(self) -> bytes:
        return MAGIC + _dump({"kind": "pending", "state": self.state, "since": self.since}) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> PendingMarker:
        meta, _ = _split(data, "pending")
        state, since = meta.get("state"), meta.get("since")
        if state not in ("queued", "running") or not isinstance(since, (int, float)):
            raise CorruptRecord("pending marker has invalid fields")
        return cls(state, float(since))


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


def _latin1(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise CorruptRecord("record holds a character outside latin-1") from None


_REASONS = {status.value: status.phrase for status in HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")
