"""Redis backend (``redis://``, ``rediss://``, ``unix://``): cache and queue in one Redis database.

Uses the official ``redis`` client, sync and asyncio (``pip install
"offload[redis]"``). Every multi-step operation is one Lua script, so it is
atomic on the server whatever the number of web and worker processes.
Connections fail fast (2 s to connect, 5 s per reply, no silent retries), so an
outage is a :class:`~offload.errors.BackendUnavailable` at once, never a hung
request; redis-py's own URL options (``?socket_timeout=10``) override these.
``?prefix=name`` (default ``offload``) names offload's own keys below.

Cache
    Each value lives under its own key with a Redis expiry; ``add`` is ``SET NX
    PX``. A cached answer (``set`` with an index) is also recorded, by the same
    script, so that ``expire()`` and ``status`` never scan the keyspace:

    ``<prefix>:answers`` / ``<prefix>:failed``
        sorted sets of keys scored by expiry (ms): ``stats`` is two ``ZCOUNT``.
    ``<prefix>:paths``
        a sorted set with every score 0 and members ``path NUL query NUL key``
        (canonical, so ASCII): ``expire("/reports/*")`` reads only the members
        starting with ``/reports/`` (``ZRANGEBYLEX``), then matches path and
        params exactly with :mod:`offload.keys`.
    ``<prefix>:entries``
        a hash of key -> its member in ``paths``, to drop it when the key is
        replaced or deleted.

    Index entries of answers that expired are ignored by ``stats`` and
    ``expire()`` and swept, a few at a time, by each indexed ``set``.

    ``expire()`` then publishes on ``<prefix>:expired:<db>``: every web process
    follows that channel from a thread and so knows its generation without a
    round trip, which lets it keep answers in memory (see
    :mod:`offload.backends.redis_expiry` and :mod:`offload.local`).

Queue
    See :mod:`offload.backends.redis_queue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from offload.backends.base import Cache, IndexEntry
from offload.backends.redis_expiry import ExpiryListener
from offload.errors import BackendUnavailable, MissingDependency
from offload.keys import canonical_path, params_match, path_matcher

try:
    import redis
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as error:  # pragma: no cover - depends on the environment
    raise MissingDependency(
        f'the Redis backend needs the redis client: pip install "offload[redis]" ({error})'
    ) from None

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript, Script

    from offload.backends import Backend

log = logging.getLogger("offload.redis")

#: How long a waiting worker blocks before it looks again for lapsed leases.
RECHECK = 1.0

#: Connections of the asyncio client of one event loop; more requests at once wait their turn.
ASYNC_CONNECTIONS = 64

_DEFAULTS = {"socket_connect_timeout": "2", "socket_timeout": "5"}


def open_backend(url: str) -> Backend:
    from offload.backends import Backend
    from offload.backends.redis_queue import RedisQueue

    connection = RedisConnection(url)
    return Backend(url, RedisCache(connection), RedisQueue(connection))


class RedisConnection:
    """The clients of one URL: one pool for commands, one for blocking reads, one async client per event loop."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.prefix = options.pop("prefix", "offload") or "offload"
        self.socket_timeout = float(options.get("socket_timeout", _DEFAULTS["socket_timeout"]))
        self.url = urlunsplit(parts._replace(query=urlencode({**_DEFAULTS, **options})))
        self.display_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))
        self.database = str(options.get("db") or parts.path.strip("/") or "0")
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._blocking: redis.Redis | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._scripts: dict[tuple[int, str], Script] = {}
        self.external = False  # a client of the application's own (see from_client)
        self._async_scripts: dict[tuple[int, str], AsyncScript] = {}

    @classmethod
    def from_client(cls, client: redis.Redis, prefix: str = "offload") -> RedisConnection:
        """Use a client the application already has; offload never closes it."""
        connection = cls(f"redis://?prefix={prefix}")
        connection._client = connection._blocking = client
        connection.external = True
        return connection

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    @property
    def client(self) -> redis.Redis:
        """The client for short commands; its pool reconnects by itself after an outage or a fork."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0))
        return self._client

    @property
    def blocking(self) -> redis.Redis:
        """A client whose read timeout outlasts one ``XREADGROUP BLOCK``."""
        if self._blocking is None:
            with self._lock:
                if self._blocking is None:
                    self._blocking = redis.Redis.from_url(
                        self.url, retry=Retry(NoBackoff(), 0), socket_timeout=self.socket_timeout + RECHECK
                    )
        return self._blocking

    def async_client(self) -> redis.asyncio.Redis:
        """An asyncio client for the running event loop (an asyncio connection belongs to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            # A bounded pool that makes a burst of requests wait for a connection (up to the
            # socket timeout), where redis-py's default pool fails the 101st at once.
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url, max_connections=ASYNC_CONNECTIONS, timeout=self.socket_timeout
            )
            client = redis.asyncio.Redis(connection_pool=pool, retry=redis.asyncio.retry.Retry(NoBackoff(), 0))
            client.auto_close_connection_pool = True  # aclose() closes the pool too
            self._async[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the running event loop's connections (before that loop ends)."""
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            self._async_scripts = {k: v for k, v in self._async_scripts.items() if k[0] != id(client)}
            with contextlib.suppress(redis.RedisError, OSError):
                await client.aclose()

    def script(self, source: str) -> Script:
        client = self.client
        script = self._scripts.get((id(client), source))
        if script is None:
            script = self._scripts[(id(client), source)] = client.register_script(source)
        return script

    def async_script(self, source: str) -> AsyncScript:
        client = self.async_client()
        script = self._async_scripts.get((id(client), source))
        if script is None:
            script = self._async_scripts[(id(client), source)] = client.register_script(source)
        return script

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn the client's errors into :class:`BackendUnavailable`."""
        try:
            yield
        except redis.RedisError as error:
            if _is_nogroup(error):
                raise
            raise BackendUnavailable(f"Redis at {self.display_url}: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        if self.external:
            return
        with self._lock:
            for client in (self._client, self._blocking):
                if client is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        client.close()
            self._client = self._blocking = None
            self._scripts.clear()


def _is_nogroup(error: Exception) -> bool:
    return isinstance(error, redis.ResponseError) and str(error).startswith("NOGROUP")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# -- cache ---------------------------------------------------------------------

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: key, answers, failed, paths, entries. ARGV: value, ttl ms, "" | "ok" | "failed", member.
_SET = (
    _NOW
    + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local old = redis.call('HGET', KEYS[5], KEYS[1])
if old and old ~= ARGV[4] then redis.call('ZREM', KEYS[4], old) end
if ARGV[3] == '' then
  if old then redis.call('HDEL', KEYS[5], KEYS[1]) end
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[3], KEYS[1])
  return 1
end
local mine, other = KEYS[2], KEYS[3]
if ARGV[3] == 'failed' then mine, other = KEYS[3], KEYS[2] end
redis.call('ZADD', mine, now + tonumber(ARGV[2]), KEYS[1])
redis.call('ZREM', other, KEYS[1])
redis.call('ZADD', KEYS[4], 0, ARGV[4])
redis.call('HSET', KEYS[5], KEYS[1], ARGV[4])
for _, index in ipairs({KEYS[2], KEYS[3]}) do
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, 20)) do
    local member = redis.call('HGET', KEYS[5], gone)
    if member then
      redis.call('ZREM', KEYS[4], member)
      redis.call('HDEL', KEYS[5], gone)
    end
    redis.call('ZREM', index, gone)
  end
end
return 1
"""
)

# KEYS: key, answers, failed. ARGV: ttl ms.
_TOUCH = (
    _NOW
    + """
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), KEYS[1])
redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[1]), KEYS[1])
return 1
"""
)

# KEYS: key, answers, failed, paths, entries.
# KEYS: running lock, pending marker, answer. ARGV: marker, lease (ms).
# The lock is an atomic add; only its taker marks the key running and reads the answer.
_START_JOB = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local ok, answer = pcall(redis.call, 'GET', KEYS[3])
if ok and answer then return {1, answer} end
return {1}
"""

_DELETE = """
redis.call('DEL', KEYS[1])
local member = redis.call('HGET', KEYS[5], KEYS[1])
if member then
  redis.call('ZREM', KEYS[4], member)
  redis.call('HDEL', KEYS[5], KEYS[1])
end
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[1])
return 1
"""

# KEYS: answers, failed, paths, entries, key... ARGV: the member each key was found under.
# Drops the keys still indexed under that member; counts those whose answer had not expired.
_EXPIRE = (
    _NOW
    + """
local removed = 0
for i = 5, #KEYS do
  local key, member = KEYS[i], ARGV[i - 4]
  if redis.call('HGET', KEYS[4], key) == member then
    local until_ms = redis.call('ZSCORE', KEYS[1], key) or redis.call('ZSCORE', KEYS[2], key)
    if until_ms and tonumber(until_ms) > now then
      removed = removed + redis.call('DEL', key)
    end
    redis.call('ZREM', KEYS[3], member)
    redis.call('HDEL', KEYS[4], key)
    redis.call('ZREM', KEYS[1], key)
    redis.call('ZREM', KEYS[2], key)
  end
end
return removed
"""
)


# KEYS: answers, failed.
_COUNT_ANSWERS = (
    _NOW
    + """
return {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')}
"""
)


class RedisCache(Cache):
    """Values under their own keys with Redis expiry; answers indexed for ``expire()`` and ``stats``."""

    def __init__(self, connection: RedisConnection) -> None:
        self.redis = connection
        self._answers = connection.key("answers")
        self._failed = connection.key("failed")
        self._paths = connection.key("paths")
        self._entries = connection.key("entries")
        self._expiry = ExpiryListener(connection)

    @classmethod
    def from_client(cls, client: redis.Redis) -> RedisCache:
        """The cache over a ``redis.Redis`` client the application already has (``cache=redis.Redis(...)``)."""
        return cls(RedisConnection.from_client(client))

    def generation(self) -> int | None:
        """Expiries seen through the expiry channel (see :mod:`offload.backends.redis_expiry`).

        None for an application's own client: offload does not open connections of its own to it.
        """
        if self.redis.external:
            return None
        return self._expiry.generation()

    def _index_keys(self, key: str) -> list[str]:
        return [key, self._answers, self._failed, self._paths, self._entries]

    def get(self, key: str) -> bytes | None:
        with self.redis.errors(), _foreign_value_is_a_miss(key):
            value: Any = self.redis.client.get(key)
            return _bytes_or_none(value)
        return None

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        with self.redis.errors():
            return bool(self.redis.client.set(key, value, px=_ms(ttl), nx=True))

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        with self.redis.errors():
            self.redis.script(_SET)(self._index_keys(key), self._set_args(key, value, ttl, index))

    @staticmethod
    def _set_args(key: str, value: bytes, ttl: float, index: IndexEntry | None) -> list[Any]:
        kind, member = "", b""
        if index is not None:
            kind = "failed" if index.failed else "ok"
            member = _member(index.path, index.query, key)
        return [value, _ms(ttl), kind, member]

    def touch(self, key: str, ttl: float) -> bool:
        with self.redis.errors():
            return bool(self.redis.script(_TOUCH)([key, self._answers, self._failed], [_ms(ttl)]))

    def delete(self, key: str) -> None:
        with self.redis.errors():
            self.redis.script(_DELETE)(self._index_keys(key), [])

    def start_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float
    ) -> tuple[bool, bytes | None]:
        with self.redis.errors():
            reply: Any = self.redis.script(_START_JOB)([running, pending, answer], [marker, _ms(lease)])
        return bool(reply[0]), _bytes_or_none(reply[1]) if len(reply) > 1 else None

    def finish_job(
        self, answer: str, value: bytes | None, ttl: float, index: IndexEntry | None, done: Sequence[str]
    ) -> None:
        with self.redis.errors():
            pipe = self.redis.client.pipeline(transaction=False)  # one round trip, in this order
            if value is not None:
                self.redis.script(_SET)(
                    self._index_keys(answer), self._set_args(answer, value, ttl, index), client=pipe
                )
            for key in done:
                self.redis.script(_DELETE)(self._index_keys(key), [], client=pipe)
            pipe.execute()

    def expire(self, pattern: str, params: Sequence[tuple[str, str]] = ()) -> int:
        matches = path_matcher(pattern)
        literal, wildcard, _ = pattern.partition("*")
        prefix = canonical_path(literal.encode("utf-8", "surrogateescape")).encode()
        if not wildcard:
            prefix += b"\0"  # an exact path: its members start with the path and a NUL
        low, high = (b"[" + prefix, b"(" + prefix + b"\xff") if prefix else (b"-", b"+")
        with self.redis.errors():
            members: Any = self.redis.client.zrangebylex(self._paths, low, high)
        doomed: list[tuple[str, bytes]] = []
        for member in members:
            path, _, rest = member.partition(b"\0")
            query, _, key = rest.partition(b"\0")
            if matches(path.decode("ascii", "replace")) and params_match(query.decode("ascii", "replace"), params):
                doomed.append((key.decode("utf-8", "surrogateescape"), member))
        removed = 0
        for start in range(0, len(doomed), 500):
            batch = doomed[start : start + 500]
            with self.redis.errors():
                removed += int(
                    self.redis.script(_EXPIRE)(
                        [self._answers, self._failed, self._paths, self._entries, *(key for key, _ in batch)],
                        [member for _, member in batch],
                    )
                )
        # Every process drops the answers it keeps in memory; this one at once.
        with self.redis.errors():
            self.redis.client.publish(self._expiry.channel, b"")
        self._expiry.bump()
        return removed

    def stats(self) -> dict[str, int]:
        with self.redis.errors():
            cached, failed = self.redis.script(_COUNT_ANSWERS)([self._answers, self._failed], [])
        return {"cached": int(cached), "failed": int(failed)}

    def close(self) -> None:
        self._expiry.close()
        self.redis.close()

    # Native coroutines, awaited by the ASGI middleware instead of a thread.

    async def aget(self, key: str) -> bytes | None:
        if self.redis.external:  # no asyncio twin of the application's client: a thread does it
            return await asyncio.to_thread(self.get, key)
        with self.redis.errors(), _foreign_value_is_a_miss(key):
            value: Any = await self.redis.async_client().get(key)
            return _bytes_or_none(value)
        return None

    async def aadd(self, key: str, value: bytes, ttl: float) -> bool:
        if self.redis.external:
            return await asyncio.to_thread(self.add, key, value, ttl)
        with self.redis.errors():
            return bool(await self.redis.async_client().set(key, value, px=_ms(ttl), nx=True))

    async def adelete(self, key: str) -> None:
        if self.redis.external:
            return await asyncio.to_thread(self.delete, key)
        with self.redis.errors():
            await self.redis.async_script(_DELETE)(self._index_keys(key), [])

    async def aclose(self) -> None:
        """Close the connections of the running event loop; call it before the loop ends."""
        await self.redis.aclose()


@contextlib.contextmanager
def _foreign_value_is_a_miss(key: str) -> Iterator[None]:
    """A key holding something else than a string (a hash, a list) is not ours: a miss, not an outage."""
    try:
        yield
    except redis.ResponseError as error:
        if not str(error).startswith("WRONGTYPE"):
            raise
        log.warning("ignoring %s: it holds a Redis value of another type, not offload's format", key)


def _bytes_or_none(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _member(path: str, query: str, key: str) -> bytes:
    return b"\0".join(
        [path.encode("ascii", "replace"), query.encode("ascii", "replace"), key.encode("utf-8", "surrogateescape")]
    )


# -- queue -----------------------------------------------------------------------

# The waiting jobs: entries in the stream minus the leases still running.
