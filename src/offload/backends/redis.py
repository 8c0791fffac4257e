"""Redis backend (``redis://``, ``rediss://``, ``unix://``): cache and queue of a namespace in one Redis database.

``redis+cluster://`` runs the same scripts on a Redis Cluster: every name
of the cache then carries the hash tag ``{<prefix>}`` (see
:class:`~offload.backends.redis_connection.Names`), so all of a prefix's
cache is in one slot and each script below touches that slot only; the
queue is spread over shards of their own tags (see
:mod:`offload.backends.redis_shards`).

Uses the official ``redis`` client, sync and asyncio (the ``redis``
extra); connections and names are in
:mod:`offload.backends.redis_connection`. Every multi-step operation is one
Lua script, so it is atomic on the server whatever the number of web and
worker processes, and costs one round trip. ``?prefix=name`` (default
``offload``) is the outer prefix: a namespace's structures are
``<prefix>:<namespace>:<what>``, and ``<prefix>:namespaces`` lists the
namespaces that hold something (each write adds its own, ``namespaces()``
forgets the empty ones).

Cache
    Each value lives under its own key (which starts with the namespace) with a
    Redis expiry: ``get`` is one ``GET``, ``take`` one ``GETDEL``. ``add``
    is ``SET NX PX``, in a script that first clears a key holding something
    offload never writes (another type, or a string without an expiry), so a
    stray key cannot hold a marker forever. Cached answers are indexed by path,
    query and tags in the same script that stores them (see
    :mod:`offload.backends.redis_index`).

In what follows ``<ns>`` stands for ``<prefix>:<namespace>``.

Expiry log
    ``expire()`` first logs its rule: ``HINCRBY <ns>:epoch n`` gives it an
    epoch, and ``<ns>:expiries`` (a sorted set scored by epoch, members
    ``<epoch> <unix ms> <rule JSON>``) keeps the last hour of them (see
    :mod:`offload.backends.expiry_log`). Only then does it remove or rewrite
    the answers. A job reads the epoch when it starts (``start_job``), and
    ``finish_job`` stores its answer and reads the entries logged since in
    one script: usually there are none and the markers go in that same trip;
    otherwise the answer is dropped or restamped, if an entry selects it,
    before the markers go. An expiry logged after that check finds the answer
    in the index.

Channels
    ``expire()`` publishes on ``<ns>:expired:<db>``, which every web process
    follows to know its generation without a round trip
    (:mod:`offload.backends.redis_expiry`); ``finish_job`` publishes the
    answer's key on ``<ns>:stored:<db>`` for :meth:`RedisCache.watch`. A
    process follows both through one shared connection
    (:mod:`offload.backends.redis_pubsub`).

Queue
    See :mod:`offload.backends.redis_queue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from offload.backends.base import DEFAULT_NAMESPACE, Cache, ExpiryRule, IndexEntry, JobFinish, JobStart, Restamp
from offload.backends.expiry_log import EXPIRY_LOG_SECONDS, first_expiry
from offload.backends.redis_connection import NOW, Names, RedisConnection, bytes_or_none, live_namespaces, ms, redis
from offload.backends.redis_expiry import ExpiryListener
from offload.backends.redis_index import LIBRARY, Index, member, sha1
from offload.backends.redis_pubsub import Subscriber
from offload.backends.redis_queue import RedisQueue

if TYPE_CHECKING:
    from offload.backends import Backend

log = logging.getLogger("offload.redis")


def open_backend(url: str, namespace: str = DEFAULT_NAMESPACE) -> Backend:
    from offload.backends import Backend

    connection = RedisConnection(url)
    return Backend(url, RedisCache(connection, namespace), RedisQueue(connection, namespace))


# Takes KEYS[1] if free. A key holding what offload never writes (another type, or a string
# without an expiry) would hold it forever: it is cleared first.
_ACQUIRE = """
local function acquire(key, value, ttl)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'none' and (kind ~= 'string' or redis.call('PTTL', key) == -1) then redis.call('DEL', key) end
  return redis.call('SET', key, value, 'NX', 'PX', ttl) and 1 or 0
end
"""

# KEYS: key. ARGV: value, ttl ms.
_ADD = _ACQUIRE + "return acquire(KEYS[1], ARGV[1], ARGV[2])"

# KEYS: running lock, pending marker, answer, epoch. ARGV: marker, lease ms.
# Only the lock's taker marks the key running and reads the answer and the epoch.
_START = (
    _ACQUIRE
    + """
if acquire(KEYS[1], ARGV[1], ARGV[2]) == 0 then return {0} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local ok, answer = pcall(redis.call, 'GET', KEYS[3])
local epoch = redis.call('HGET', KEYS[4], 'n') or '0'
"""
)

_START_JOB = _START + "return {1, epoch, ok and answer}"

# KEYS: counter. ARGV: ttl ms. A new counter lives ttl from its first count (a fixed window);
# one holding something else starts again. (PTTL rather than PEXPIRE NX: Redis 6.2 has no NX.)
_INCR = """
local ok, count = pcall(redis.call, 'INCR', KEYS[1])
if not ok then
  redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
  return 1
end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""

# KEYS: as _START_JOB, then the start counter. ARGV: as _START_JOB, then the counter's ttl ms.
_START_COUNTED_JOB = (
    _START
    + """
local counted, count = pcall(redis.call, 'INCR', KEYS[5])
if not counted then
  redis.call('SET', KEYS[5], 1, 'PX', ARGV[3])
  count = 1
elseif redis.call('PTTL', KEYS[5]) == -1 then
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
end
return {1, epoch, count, ok and answer}
"""
)

# The cache scripts below start with the index's LIBRARY: KEYS[6] on and ARGV[3] on are their own.

# KEYS: key. ARGV: value, ttl ms, '' | 'ok' | 'failed', member.
_SET = LIBRARY + "store(KEYS[6], ARGV[3], ARGV[4], ARGV[5], ARGV[6]) return 1"

# KEYS: key.
_DELETE = LIBRARY + "remove(KEYS[6]) return 1"

# KEYS: key. A value of another type is not offload's: a miss, left where it is.
_TAKE = (
    LIBRARY
    + """
local ok, value = pcall(redis.call, 'GETDEL', KEYS[6])
if not ok or not value then return false end
unindex(KEYS[6])
return value
"""
)

# KEYS: key. ARGV: ttl ms.
_TOUCH = (
    LIBRARY
    + """
if redis.call('PEXPIRE', KEYS[6], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', answers, 'XX', now + tonumber(ARGV[3]), KEYS[6])
redis.call('ZADD', failed, 'XX', now + tonumber(ARGV[3]), KEYS[6])
return 1
"""
)

# KEYS: answer, epoch, log, done... ARGV: 'store' | 'none', value, ttl ms, kind, member, since, channel.
# Stores the answer, then looks for expiries logged since the job started. None (the usual case):
# the markers go and {1} is returned. Some: {0, current epoch, base epoch, the entries}, markers kept.
_FINISH = (
    LIBRARY
    + """
local answer, epoch, log = KEYS[6], KEYS[7], KEYS[8]
if ARGV[3] == 'store' then
  store(answer, ARGV[4], ARGV[5], ARGV[6], ARGV[7])
  local current = redis.call('HGET', epoch, 'n')
  if ARGV[6] ~= '' and current and tonumber(current) > tonumber(ARGV[8]) then
    local base = redis.call('HGET', epoch, 'base') or '0'
    return {0, current, base, redis.call('ZRANGEBYSCORE', log, '(' .. ARGV[8], '+inf')}
  end
  redis.call('PUBLISH', ARGV[9], answer)
end
for i = 9, #KEYS do remove(KEYS[i]) end
return {1}
"""
)

# KEYS: answer, done... ARGV: 'keep' | 'drop' | 'rewrite', SHA-1 of the value stored, the new value, channel.
# The rest of a finish that found expiries: the answer goes (or is rewritten) if still the one stored.
_FINISH_AFTER = (
    LIBRARY
    + """
local ok, value = pcall(redis.call, 'GET', KEYS[6])
if ARGV[3] ~= 'keep' and ok and value and redis.sha1hex(value) == ARGV[4] then
  if ARGV[3] == 'drop' then remove(KEYS[6]) else redis.call('SET', KEYS[6], ARGV[5], 'KEEPTTL') end
end
redis.call('PUBLISH', ARGV[6], KEYS[6])
for i = 7, #KEYS do remove(KEYS[i]) end
return 1
"""
)

# KEYS: epoch, log, the set of namespaces. ARGV: the rule as JSON, the namespace, how long entries stay (ms).
# The first epoch of a namespace is the clock in ms (see offload.backends.expiry_log); the oldest entries go.
_LOG = (
    NOW
    + """
if redis.call('HEXISTS', KEYS[1], 'n') == 0 then redis.call('HSET', KEYS[1], 'base', now, 'n', now) end
local epoch = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('ZADD', KEYS[2], epoch, epoch .. ' ' .. now .. ' ' .. ARGV[1])
for _ = 1, 100 do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  local logged = oldest and tonumber(string.match(oldest, '^%d+ (%d+) '))
  if not oldest or (logged and logged >= now - tonumber(ARGV[3])) then break end
  redis.call('ZREM', KEYS[2], oldest)
end
redis.call('SADD', KEYS[3], ARGV[2])
return epoch
"""
)

# KEYS: answers, failed.
_COUNT = (
    NOW
    + """
return {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')}
"""
)


class RedisCache(Cache):
    """Values under their own keys with Redis expiry; answers indexed for ``expire()`` and ``stats``."""

    #: finish_job publishes each stored answer's key; watch() follows that channel.
    notifies = True

    def __init__(self, connection: RedisConnection, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.redis = connection
        self.namespace = namespace
        self.names = connection.names(namespace)
        self.index = Index(connection, self.names)
        self._expiry = ExpiryListener(connection, self.names.expired)

    @classmethod
    def from_client(cls, client: redis.Redis, namespace: str = DEFAULT_NAMESPACE) -> RedisCache:
        """The cache over a ``redis.Redis`` client the application already has (``cache=redis.Redis(...)``)."""
        return cls(RedisConnection.from_client(client), namespace)

    def generation(self) -> int | None:
        """Expiries seen through the expiry channel (see :mod:`offload.backends.redis_expiry`).

        None for an application's own client: offload does not open connections of its own to it.
        """
        if self.redis.external:
            return None
        return self._expiry.generation()

    def watch(self, on_stored: Callable[[str], None]) -> Callable[[], None] | None:
        if self.redis.external:
            return None
        return Subscriber.of(self.redis).listen(self.names.stored, _Watch(on_stored, self.names))

    # -- values ---------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        with self.redis.errors(), _foreign_value_is_a_miss(key):
            value: Any = self.redis.client.get(self.names.key(key))
            return bytes_or_none(value)
        return None

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(self.redis.run(_ADD, [self.names.key(key)], [value, ms(ttl)]))

    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        stored = self.names.key(key)
        self.index.run(_SET, [stored], _stored(stored, value, ttl, index))

    def touch(self, key: str, ttl: float) -> bool:
        return bool(self.index.run(_TOUCH, [self.names.key(key)], [ms(ttl)]))

    def touch_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
        """The touch script once per key, in one pipeline."""
        replies = self.index.run_many(_TOUCH, [([self.names.key(key)], [ms(ttl)]) for key in keys])
        return [bool(reply) for reply in replies]

    def delete(self, key: str) -> None:
        self.index.run(_DELETE, [self.names.key(key)], [])

    def take(self, key: str) -> bytes | None:
        return bytes_or_none(self.index.run(_TAKE, [self.names.key(key)], []))

    def incr(self, key: str, ttl: float) -> int:
        return int(self.redis.run(_INCR, [self.names.key(key)], [ms(ttl)]))

    # -- jobs ------------------------------------------------------------------------

    def start_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float
    ) -> tuple[bool, bytes | None, int]:
        keys = [*map(self.names.key, (running, pending, answer)), self.names.epoch]
        reply: Any = self.redis.run(_START_JOB, keys, [marker, ms(lease)])
        if not reply[0]:
            return False, None, 0
        return True, bytes_or_none(reply[2]) if len(reply) > 2 else None, int(reply[1])

    def start_counted_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float, counter: str, counter_ttl: float
    ) -> tuple[bool, bytes | None, int, int]:
        """One script: the lock, the marker, the answer, the epoch and the count."""
        return self.start_counted_jobs([JobStart(running, pending, answer, marker, lease, counter, counter_ttl)])[0]

    def start_counted_jobs(self, starts: Sequence[JobStart]) -> list[tuple[bool, bytes | None, int, int]]:
        """The script of :meth:`start_counted_job` once per start, in one pipeline (run in order)."""
        key, epoch = self.names.key, self.names.epoch
        calls = [
            (
                [key(s.running), key(s.pending), key(s.answer), epoch, key(s.counter)],
                [s.marker, ms(s.lease), ms(s.counter_ttl)],
            )
            for s in starts
        ]
        replies: list[Any] = (
            [self.redis.run(_START_COUNTED_JOB, *calls[0])]
            if len(calls) == 1
            else self.redis.run_many(_START_COUNTED_JOB, calls)
        )
        return [_started(reply) for reply in replies]

    def finish_job(
        self,
        answer: str,
        value: bytes | None,
        ttl: float,
        index: IndexEntry | None,
        done: Sequence[str],
        since: int,
        restamp: Restamp | None = None,
    ) -> bool:
        finish = JobFinish(answer, value, ttl, index, tuple(done), since, restamp)
        return self._settle(finish, self.index.run(*self._finishing(finish)))

    def finish_jobs(self, finishes: Sequence[JobFinish]) -> list[bool]:
        """The finish script once per job, in one pipeline; one trip more for each that an expiry overtook."""
        replies = self.index.run_many(_FINISH, [self._finishing(finish)[1:] for finish in finishes])
        return [self._settle(finish, reply) for finish, reply in zip(finishes, replies, strict=True)]

    def _finishing(self, finish: JobFinish) -> tuple[str, list[Any], list[Any]]:
        """The script, keys and arguments that store a job's answer and drop its markers."""
        answer, done = self.names.key(finish.answer), [self.names.key(key) for key in finish.done]
        keys = [answer, self.names.epoch, self.names.log, *done]
        args = ["none"] if finish.value is None else ["store", *_stored(answer, finish.value, finish.ttl, finish.index)]
        args += [""] * (5 - len(args)) + [finish.since, self.names.stored]
        return _FINISH, keys, args

    def _settle(self, finish: JobFinish, reply: Any) -> bool:
        """After the finish script: if it found expiries logged since the job began, match them and end the job."""
        value, index, since = finish.value, finish.index, finish.since
        if reply[0] or value is None or index is None:
            return True
        rule = first_expiry(since, int(reply[1]), int(reply[2]), reply[3], index)
        action, rewritten = "keep", None
        if rule is not None:
            rewritten = finish.restamp(value) if (rule.soft and finish.restamp is not None) else None
            action = "drop" if rewritten is None else "rewrite"
        answer, done = self.names.key(finish.answer), [self.names.key(key) for key in finish.done]
        self.index.run(_FINISH_AFTER, [answer, *done], [action, sha1(value), rewritten or b"", self.names.stored])
        return rule is None

    # -- expiry ------------------------------------------------------------------------

    def expire(self, rule: ExpiryRule, restamp: Restamp | None = None) -> int:
        self.redis.run(
            _LOG,
            [self.names.epoch, self.names.log, self.names.namespaces],
            [rule.encode(), self.namespace, ms(EXPIRY_LOG_SECONDS)],
        )
        selected = self.index.selected(rule)
        touched = self.index.drop(selected) if restamp is None else self.index.rewrite(selected, restamp)
        # Every process drops the answers it keeps in memory; this one at once.
        with self.redis.errors():
            self.redis.client.publish(self.names.expired, b"")
        self._expiry.bump()
        return touched

    def epoch(self) -> int:
        with self.redis.errors():
            current: Any = self.redis.client.hget(self.names.epoch, "n")
        return int(current or 0)

    def expired_since(self, epoch: int, entry: IndexEntry) -> ExpiryRule | None:
        with self.redis.errors():
            pipe = self.redis.client.pipeline(transaction=True)  # one round trip, one moment
            pipe.hmget(self.names.epoch, ["n", "base"])
            pipe.zrangebyscore(self.names.log, f"({epoch}", "+inf")
            (current, base), newer = pipe.execute()
        return first_expiry(epoch, int(current or 0), int(base or 0), newer, entry)

    # -- counts ------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        cached, failed = self.redis.run(_COUNT, [self.names.answers, self.names.failed], [])
        return {"cached": int(cached), "failed": int(failed)}

    def namespaces(self) -> list[str]:
        found = live_namespaces(self.redis, self.names)
        return sorted(namespace for namespace, (answers, expiries, _) in found.items() if answers or expiries)

    def close(self) -> None:
        self._expiry.close()
        self.redis.close()

    # Native coroutines, awaited by the ASGI middleware instead of a thread.

    async def aget(self, key: str) -> bytes | None:
        if self.redis.external:  # no asyncio twin of the application's client: a thread does it
            return await asyncio.to_thread(self.get, key)
        with self.redis.errors(), _foreign_value_is_a_miss(key):
            client = await self.redis.async_ready() if self.redis.cluster else self.redis.async_client()
            value: Any = await client.get(self.names.key(key))
            return bytes_or_none(value)
        return None

    async def aadd(self, key: str, value: bytes, ttl: float) -> bool:
        if self.redis.external:
            return await asyncio.to_thread(self.add, key, value, ttl)
        return bool(await self.redis.arun(_ADD, [self.names.key(key)], [value, ms(ttl)]))

    async def adelete(self, key: str) -> None:
        if self.redis.external:
            return await asyncio.to_thread(self.delete, key)
        await self.index.arun(_DELETE, [self.names.key(key)], [])

    async def atake(self, key: str) -> bytes | None:
        if self.redis.external:
            return await asyncio.to_thread(self.take, key)
        return bytes_or_none(await self.index.arun(_TAKE, [self.names.key(key)], []))

    async def aclose(self) -> None:
        """Close the connections of the running event loop; call it before the loop ends."""
        await self.redis.aclose()


class _Watch:
    """A :class:`~offload.backends.redis_pubsub.Listener` that hands stored keys to a watcher."""

    def __init__(self, on_stored: Callable[[str], None], names: Names) -> None:
        self.on_stored = on_stored
        self.names = names

    def ready(self) -> None:
        pass

    def lost(self) -> None:
        pass

    def message(self, data: bytes) -> None:
        self.on_stored(self.names.caller_key(data.decode("utf-8", "surrogateescape")))


def _started(reply: Any) -> tuple[bool, bytes | None, int, int]:
    """What the start script answered: taken, the answer, the epoch and the count."""
    if not reply[0]:
        return False, None, 0, 0
    return True, bytes_or_none(reply[3]) if len(reply) > 3 else None, int(reply[1]), int(reply[2])


def _stored(key: str, value: bytes, ttl: float, index: IndexEntry | None) -> list[Any]:
    """The arguments that store a value: value, ttl, kind ('' for a value that is not an answer) and member."""
    if index is None:
        return [value, ms(ttl), "", b""]
    return [value, ms(ttl), "failed" if index.failed else "ok", member(key, index)]


@contextlib.contextmanager
def _foreign_value_is_a_miss(key: str) -> Iterator[None]:
    """A key holding something else than a string (a hash, a list) is not ours: a miss, not an outage."""
    try:
        yield
    except redis.ResponseError as error:
        if not str(error).startswith("WRONGTYPE"):
            raise
        log.warning("ignoring %s: it holds a Redis value of another type, not offload's format", key)
