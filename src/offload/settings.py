"""The options shared by the middlewares, the worker and the CLI, checked once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from offload.errors import ConfigurationError
from offload.keys import path_matcher

if TYPE_CHECKING:
    from offload.policy import CachePolicy

#: Request headers that cannot be keyed: they describe one connection or a request body, not a GET;
#: or they ask for part of an answer (a 206 for ``Range``, a 304 for ``If-None-Match``), which, once
#: cached, every later client would get instead of the whole answer. ``Host`` is always keyed.
UNKEYABLE = frozenset(
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
        "host",
    }
)

#: Statuses of the app that count as a failure: retried, then kept only for ``error_ttl``.
SERVER_ERRORS = frozenset(range(500, 600))

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """How offload caches, queues and answers. Every option is documented in the README.

    >>> Settings(ttl=60, path_ttls={"/reports/*": 3600}).ttl_for("/reports/q3")
    3600.0
    """

    ttl: float = 300.0
    path_ttls: Mapping[str, float] = field(default_factory=dict)
    stale: float = 0.0
    stale_if_error: float = 0.0
    early_refresh: float = 0.0
    cache_status: bool = True
    etags: bool = True
    retry_after: int = 1
    lease: float = 30.0
    pending_ttl: float = 600.0
    max_attempts: int = 3
    retry_backoff: float = 1.0
    error_ttl: float = 10.0
    failure_statuses: frozenset[int] = SERVER_ERRORS
    job_timeout: float = 300.0
    max_deliveries: int = 5
    max_queued: int | None = 10_000
    passthrough_on_error: bool = False
    retry_after_max: int = 30
    max_wait: float = 30.0
    miss_wait: float = 0.0
    max_waiters: int | None = None
    max_waiters_per_key: int = 1000
    monitor_path: str | None = "/_offload/jobs/"
    max_new_keys_per_minute: int | None = None
    client_id: Callable[[Callable[[str], bytes | None], str], str | None] | None = None
    vary: tuple[str, ...] = ("authorization", "cookie")
    share_set_cookie: bool = False
    private_ttl: float = 10.0
    max_body: int = 10 * MIB
    max_url: int = 8 * 1024
    max_headers: int = 64 * 1024
    namespace: str | None = None
    local_cache: int = 64 * MIB
    local_ttl: float = 60.0
    local_max_answer: int = 1 * MIB
    key_memo: int = 4 * MIB
    server_timing: bool = False
    policy: CachePolicy | None = None
    _ttl_rules: tuple[tuple[Callable[[str], bool], float], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        positive = {
            "ttl": self.ttl,
            "lease": self.lease,
            "pending_ttl": self.pending_ttl,
            "error_ttl": self.error_ttl,
            "job_timeout": self.job_timeout,
            "private_ttl": self.private_ttl,
            "max_body": self.max_body,
            "max_url": self.max_url,
            "max_headers": self.max_headers,
        }
        for name, value in positive.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
        for name in ("stale", "stale_if_error", "early_refresh"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"{name} must be a number >= 0, not {value!r}")
        if self.private_ttl > 10:
            raise ConfigurationError("private_ttl is at most 10 seconds: an answer for one client must not linger")
        for name in ("local_cache", "local_max_answer", "key_memo"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"{name} must be a number of bytes >= 0, not {value!r}")
        if not isinstance(self.local_ttl, (int, float)) or self.local_ttl < 0:
            raise ConfigurationError(f"local_ttl must be >= 0 seconds, not {self.local_ttl!r}")
        if not isinstance(self.retry_after, int) or self.retry_after < 0:
            raise ConfigurationError(f"retry_after must be a whole number of seconds >= 0, not {self.retry_after!r}")
        for name in ("max_attempts", "max_deliveries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be at least 1, not {value!r}")
        if not isinstance(self.retry_after_max, int) or self.retry_after_max < self.retry_after:
            raise ConfigurationError("retry_after_max must be a whole number of seconds >= retry_after")
        if not isinstance(self.max_wait, (int, float)) or self.max_wait < 0:
            raise ConfigurationError("max_wait must be a number of seconds >= 0 (0: requests never wait)")
        for name in ("max_waiters", "max_new_keys_per_minute"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigurationError(f"{name} must be a whole number >= 0, or None")
        if not isinstance(self.miss_wait, (int, float)) or self.miss_wait < 0:
            raise ConfigurationError("miss_wait must be a number of seconds >= 0 (0: a miss answers 202 at once)")
        if self.policy is not None and not all(
            callable(getattr(self.policy, method, None)) for method in ("look", "at_miss", "judge", "lifetimes")
        ):
            # Checked by its methods: settings come before the policies, which read them.
            raise ConfigurationError("policy must be an offload.policy.CachePolicy, such as offload.proxy's")
        if not isinstance(self.max_waiters_per_key, int) or self.max_waiters_per_key < 1:
            raise ConfigurationError("max_waiters_per_key must be at least 1")
        if self.monitor_path is not None and not (
            self.monitor_path.startswith("/") and self.monitor_path.endswith("/")
        ):
            raise ConfigurationError("monitor_path must start and end with '/', such as '/_offload/jobs/', or be None")
        if self.client_id is not None and not callable(self.client_id):
            raise ConfigurationError("client_id must be a callable (header, address) -> client id")
        if self.retry_backoff < 0:
            raise ConfigurationError("retry_backoff must be >= 0")
        if self.max_queued is not None and self.max_queued < 1:
            raise ConfigurationError("max_queued must be at least 1, or None for no cap")
        if self.namespace is not None:
            from offload.backends.base import check_namespace

            check_namespace(self.namespace)
        statuses = frozenset(self.failure_statuses)
        if not all(isinstance(code, int) and 100 <= code <= 999 for code in statuses):
            raise ConfigurationError("failure_statuses must hold HTTP status codes, such as range(500, 600)")
        object.__setattr__(self, "failure_statuses", statuses)
        rules = []
        for pattern, seconds in self.path_ttls.items():
            if not isinstance(seconds, (int, float)) or seconds <= 0:
                raise ConfigurationError(f"path_ttls[{pattern!r}] must be a positive number of seconds")
            rules.append((path_matcher(pattern), float(seconds)))
        object.__setattr__(self, "_ttl_rules", tuple(rules))
        vary = tuple(dict.fromkeys(name.lower() for name in vary_list(self.vary)))
        for name in vary:
            if name in UNKEYABLE:
                raise ConfigurationError(
                    f"vary cannot hold {name!r}: "
                    + ("Host is always part of the key" if name == "host" else "it is never replayed to the app")
                )
        object.__setattr__(self, "vary", vary)

    def ttl_for(self, canonical_path: str) -> float:
        """The time to keep an answer for this path: the first matching ``path_ttls`` rule, else ``ttl``."""
        for matches, seconds in self._ttl_rules:
            if matches(canonical_path):
                return seconds
        return float(self.ttl)


def settings_from(options: Mapping[str, object]) -> Settings:
    """Settings from keyword options, with a clear error for a name that is not an option."""
    known = {name for name in Settings.__dataclass_fields__ if not name.startswith("_")}
    unknown = sorted(set(options) - known)
    if "replay_headers" in unknown:
        raise ConfigurationError(
            "replay_headers is no longer an option: a worker replays exactly the headers that are part of the key. "
            "Add the request headers your app reads to vary=[...]"
        )
    if unknown:
        raise ConfigurationError(f"unknown option(s) {', '.join(unknown)}; the options are: {', '.join(sorted(known))}")
    return Settings(**options)  # type: ignore[arg-type]


def vary_list(value: Iterable[str] | str) -> tuple[str, ...]:
    """Accept ``"Authorization, Cookie"`` as well as a list of names.

    >>> vary_list("Authorization, Cookie")
    ('Authorization', 'Cookie')
    """
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)
