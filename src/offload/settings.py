"""The options shared by the middlewares, the worker and the CLI, checked once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from offload.errors import ConfigurationError
from offload.keys import path_matcher

#: Request headers never replayed: they describe one connection or a request body, not a GET;
#: or they ask for part of an answer (a 206 for ``Range``, a 304 for ``If-None-Match``),
#: which, once cached, every later client would get instead of the whole answer.
NEVER_REPLAYED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-type",
        "expect",
        "range",
        "if-range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    }
)

#: Request headers replayed only when they are in ``vary``: the app would answer
#: differently for them (a gzipped body for ``Accept-Encoding: gzip``), and an
#: answer shared by every client must suit every client.
REPLAYED_ONLY_WHEN_VARIED = frozenset({"accept-encoding"})


@dataclass(frozen=True)
class Settings:
    """How offload caches, queues and answers. Every option is documented in the README.

    >>> Settings(ttl=60, path_ttls={"/reports/*": 3600}).ttl_for("/reports/q3")
    3600.0
    """

    ttl: float = 300.0
    path_ttls: Mapping[str, float] = field(default_factory=dict)
    retry_after: int = 1
    lease: float = 30.0
    pending_ttl: float = 600.0
    max_attempts: int = 3
    retry_backoff: float = 1.0
    error_ttl: float = 10.0
    max_queued: int | None = 10_000
    passthrough_on_error: bool = False
    vary: tuple[str, ...] = ("authorization", "cookie")
    replay_headers: frozenset[str] | None = None
    max_body: int = 10 * 1024 * 1024
    max_url: int = 8 * 1024
    max_headers: int = 64 * 1024
    namespace: str = "offload"
    local_cache: int = 10_000
    local_ttl: float = 60.0
    _ttl_rules: tuple[tuple[Callable[[str], bool], float], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        positive = {
            "ttl": self.ttl,
            "lease": self.lease,
            "pending_ttl": self.pending_ttl,
            "error_ttl": self.error_ttl,
            "max_body": self.max_body,
            "max_url": self.max_url,
            "max_headers": self.max_headers,
        }
        for name, value in positive.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
        if not isinstance(self.local_cache, int) or self.local_cache < 0:
            raise ConfigurationError(f"local_cache must be a number of answers >= 0, not {self.local_cache!r}")
        if not isinstance(self.local_ttl, (int, float)) or self.local_ttl < 0:
            raise ConfigurationError(f"local_ttl must be >= 0 seconds, not {self.local_ttl!r}")
        if not isinstance(self.retry_after, int) or self.retry_after < 0:
            raise ConfigurationError(f"retry_after must be a whole number of seconds >= 0, not {self.retry_after!r}")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, not {self.max_attempts!r}")
        if self.retry_backoff < 0:
            raise ConfigurationError("retry_backoff must be >= 0")
        if self.max_queued is not None and self.max_queued < 1:
            raise ConfigurationError("max_queued must be at least 1, or None for no cap")
        if not self.namespace or not self.namespace.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError("namespace must be letters, digits, '-' and '_'")
        rules = []
        for pattern, seconds in self.path_ttls.items():
            if not isinstance(seconds, (int, float)) or seconds <= 0:
                raise ConfigurationError(f"path_ttls[{pattern!r}] must be a positive number of seconds")
            rules.append((path_matcher(pattern), float(seconds)))
        object.__setattr__(self, "_ttl_rules", tuple(rules))
        object.__setattr__(self, "vary", tuple(name.lower() for name in vary_list(self.vary)))
        if self.replay_headers is not None:
            object.__setattr__(self, "replay_headers", frozenset(name.lower() for name in self.replay_headers))

    def ttl_for(self, canonical_path: str) -> float:
        """The time to keep an answer for this path: the first matching ``path_ttls`` rule, else ``ttl``."""
        for matches, seconds in self._ttl_rules:
            if matches(canonical_path):
                return seconds
        return float(self.ttl)

    def replays_header(self, name: str) -> bool:
        """Whether a request header (lowercase name) is stored for the worker's replay."""
        if name in NEVER_REPLAYED:
            return False
        if name in REPLAYED_ONLY_WHEN_VARIED and name not in self.vary:
            return False
        return self.replay_headers is None or name in self.replay_headers


def vary_list(value: Iterable[str] | str) -> tuple[str, ...]:
    """Accept ``"Authorization, Cookie"`` as well as a list of names.

    >>> vary_list("Authorization, Cookie")
    ('Authorization', 'Cookie')
    """
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)
