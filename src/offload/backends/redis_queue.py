"""The Redis queue of a namespace: a stream read through one consumer group, with a lease per job.

Names are those of :class:`~offload.backends.redis_connection.Names`, all
``<prefix>:<namespace>:...``, so a worker never sees another namespace's jobs.
On a Redis Cluster the queue is spread over shards (see
:mod:`offload.backends.redis_shards`), each a complete set of the structures
below under a hash tag of its own, ``{<prefix>:q<i>}:<namespace>:...``; on
one server (and with one shard) there is one set, named as above.

``jobs``
    The stream, read through the consumer group ``offload``: a claimed job
    is pending in the group until it is acked (``XACK`` + ``XDEL``). Workers
    wait with ``XREADGROUP BLOCK``, so a push wakes one at once without
    polling; they also look again every second for leases that ran out.
``delayed`` / ``held``
    A job released with a delay waits outside the stream: its id in the
    sorted set ``delayed`` scored by the time it is due (ms), its key and
    payload in the hash ``held``. The claim script moves the jobs that are
    due to the back of the stream, and a waiting worker wakes when the next
    one is due.
``leases``
    The sorted set of the jobs whose lease runs, scored by when it runs out
    (ms): a claim takes back lapsed leases from its head, so its cost does not
    grow with the number of jobs running.
``dead``
    Dead letters, a stream of their own (key, payload, error; the entry's id
    tells when it was buried), trimmed to about :data:`DEAD_LETTERS` (each
    shard to its part).

A lease is per job and rides on the entry's delivery time: a job can be taken
back (``XCLAIM`` with a minimum idle time) once idle for :data:`LEASE_HORIZON`,
and a claim for ``lease`` seconds sets its delivery time (``XCLAIM ... TIME``)
to ``now + lease - LEASE_HORIZON`` and its score in ``leases`` to ``now +
lease``, so it comes back exactly ``lease`` seconds later. A job read but never
leased (its worker died in between) and leases written before ``leases``
existed are found by a scan of the whole group (``XAUTOCLAIM``), which a claim
runs at most once per :data:`RESCAN` seconds per namespace.
``extend`` does the same for a job this claim still owns. A claim is owned by
its consumer name and the entry's delivery count, so a claim that lost its job
to another worker (or to a later claim of the same worker) can no longer
extend, ack, release or bury it. ``release`` adds the job again at the back
and removes the old entry, in one script. ``push`` with a limit counts the
waiting jobs (stream length minus leases still running, plus delayed jobs) in
the same script that adds the job. Each operation is one script: one round trip.

With several shards, a push goes to the shard of its key (:func:`~offload.backends.redis_shards.shard_of`),
and its limit caps that shard at its part (:func:`~offload.backends.redis_shards.share`):
the parts add up to the limit, so the whole queue holds no more (but each
shard at least one). A claim takes
from the shards in turn, one script each, from a start that moves on by one
shard at every call, until it has enough. With none anywhere it blocks on the
queue's wake-up list (``BLPOP``, in the prefix's slot), to which every push,
release and revival adds an entry once its job is in place: Redis hands each
entry to one blocked claim, which then looks at every shard again, so a push
to any shard wakes one waiting worker at once. It looks again anyway after
:data:`RECHECK` at the latest, for lapsed leases and delayed jobs. Each
shard keeps its jobs in order; across shards, claims take them in turn, not
strictly oldest first. A job id names its shard (``<shard>:<stream id>``), so
acks, renewals, releases, burials and revivals go to it, and the batched ones
cost one script per shard they touch. Counts and listings add up the shards.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

from offload.backends.base import DEFAULT_NAMESPACE, Claim, DeadJob, Queue, QueuedJob
from offload.backends.redis_connection import (
    NOW,
    RECHECK,
    Names,
    RedisConnection,
    is_nogroup,
    live_namespaces,
    ms,
    redis,
)
from offload.backends.redis_shards import ashards_of, locate, make_job_id, shard_of, shards_of, share
from offload.errors import BackendUnavailable, QueueFull

#: A lease longer than this is cut to it; a job read by a worker that died
#: before it could record its lease also comes back after this long.
LEASE_HORIZON = 3600.0

#: Seconds between two scans of the whole group for lapsed jobs that ``leases`` does not hold.
RESCAN = 60.0

#: About how many dead letters a namespace keeps: the oldest go first.
DEAD_LETTERS = 10_000

#: Wake-ups a queue spread over shards keeps while no claim waits: each sends one more claim over the shards.
WAKE_BACKLOG = 16

# KEYS: the wake-up list. ARGV: the entries it keeps. Wakes one claim blocked on it (BLPOP), or the next to block.
_WAKE = """
redis.call('LPUSH', KEYS[1], 1)
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
return 1
"""

_WAITING = """
local function running(stream, group, horizon)
  local summary = redis.pcall('XPENDING', stream, group)
  if type(summary) ~= 'table' or summary.err or summary[1] == 0 then return 0 end
  local lapsed = redis.call('XPENDING', stream, group, 'IDLE', horizon, '-', '+', summary[1])
  return summary[1] - #lapsed
end
local function field(fields, name)
  for i = 1, #fields - 1, 2 do if fields[i] == name then return fields[i + 1] end end
  return nil
end
"""

# KEYS: stream, delayed, namespaces. ARGV: group, horizon ms, limit or "", key, payload, namespace.
_PUSH = (
    _WAITING
    + """
if ARGV[3] ~= '' then
  local waiting = redis.call('XLEN', KEYS[1]) - running(KEYS[1], ARGV[1], ARGV[2]) + redis.call('ZCARD', KEYS[2])
  if waiting >= tonumber(ARGV[3]) then return 0 end
end
redis.call('XADD', KEYS[1], '*', 'k', ARGV[4], 'p', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[6])
return 1
"""
)

# KEYS: stream, delayed, dead. ARGV: group, horizon ms.
_STATS = (
    _WAITING
    + """
local busy = running(KEYS[1], ARGV[1], ARGV[2])
local dead = redis.call('TYPE', KEYS[3]).ok == 'stream' and redis.call('XLEN', KEYS[3]) or 0
return {redis.call('XLEN', KEYS[1]) - busy + redis.call('ZCARD', KEYS[2]), busy, dead}
"""
)

# KEYS: stream, delayed, held, leases, rescanned. ARGV: group, consumer, lease ms, horizon ms, limit, rescan ms.
# Moves the delayed jobs that are due to the back of the stream; takes back up to limit jobs whose lease ran
# out, then reads new ones (XREADGROUP COUNT) up to limit, and records their leases: a list of
# {id, fields, delivery count}. Without a job: the ms until the next delayed one is due, or -1.
_CLAIM = (
    NOW
    + _WAITING
    + """
local stream, group, consumer, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[5])
local leases = KEYS[4]
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)) do
  local job = redis.call('HMGET', KEYS[3], id .. ':k', id .. ':p')
  if job[1] and job[2] then redis.call('XADD', stream, '*', 'k', job[1], 'p', job[2]) end
  redis.call('HDEL', KEYS[3], id .. ':k', id .. ':p')
  redis.call('ZREM', KEYS[2], id)
end
local out, taken = {}, {}
local function take(entry)
  if taken[entry[1]] then return end
  taken[entry[1]] = true
  local count = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)[1][4]
  table.insert(out, {entry[1], entry[2], count})
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)) do
  local entry = redis.call('XCLAIM', stream, group, consumer, ARGV[4], id)[1]
  if type(entry) == 'table' then take(entry) else redis.call('ZREM', leases, id) end
end
if #out < limit and redis.call('SET', KEYS[5], 1, 'NX', 'PX', ARGV[6]) then
  local cursor = '0-0'
  repeat
    local found = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], cursor, 'COUNT', limit - #out)
    cursor = found[1]
    for _, entry in ipairs(found[2]) do
      if type(entry) == 'table' then take(entry) end
    end
  until #out >= limit or cursor == '0-0'
end
if #out < limit then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', limit - #out, 'STREAMS', stream, '>')
  if read then
    for _, entry in ipairs(read[1][2]) do table.insert(out, {entry[1], entry[2], 1}) end
  end
end
if #out == 0 then
  local due = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2]
  return due and math.max(1, tonumber(due) - now) or -1
end
local until_ms = now + tonumber(ARGV[3]) - tonumber(ARGV[4])
for _, job in ipairs(out) do
  redis.call('XCLAIM', stream, group, consumer, 0, job[1], 'TIME', until_ms, 'JUSTID')
  redis.call('ZADD', leases, now + tonumber(ARGV[3]), job[1])
end
return out
"""
)

# Whether the claim (consumer, delivery count) still owns the job. KEYS[1]: stream. ARGV: group, consumer, count, id.
_OWNED = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[4], ARGV[4], 1)[1]
if not (held ~= nil and held[2] == ARGV[2] and held[4] == tonumber(ARGV[3])) then return 0 end
"""

# ARGV[5]: lease ms, ARGV[6]: horizon ms.
_EXTEND = (
    NOW
    + _OWNED
    + """
local until_ms = now + tonumber(ARGV[5]) - tonumber(ARGV[6])
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'TIME', until_ms, 'JUSTID')
redis.call('ZADD', KEYS[#KEYS], now + tonumber(ARGV[5]), ARGV[4])
return 1
"""
)

# Takes the owned entry out of the stream, and its lease out of ``leases`` (the last key).
_REMOVE = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[#KEYS], ARGV[4])
"""

# The owned entry's fields, a flat list of names and values (empty if the entry was deleted).
_FIELDS = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[4], ARGV[4])[1]
local fields = entry and entry[2] or {}
"""

# KEYS: stream, leases. ARGV: group, lease ms, horizon ms, then consumer, count, id of each claim.
# Renews the lease of each claim that still owns its job: a list of 1 (renewed) or 0 (lost).
_EXTEND_MANY = (
    NOW
    + """
local group, until_ms, out = ARGV[1], now + tonumber(ARGV[2]) - tonumber(ARGV[3]), {}
for i = 4, #ARGV - 2, 3 do
  local consumer, count, id = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local held = redis.call('XPENDING', KEYS[1], group, id, id, 1)[1]
  if held ~= nil and held[2] == consumer and held[4] == count then
    redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'TIME', until_ms, 'JUSTID')
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
    table.insert(out, 1)
  else
    table.insert(out, 0)
  end
end
return out
"""
)

_ACK = _OWNED + _REMOVE + "return 1"

# KEYS: stream, leases. ARGV: group, then consumer, count, id of each claim. Removes each job its claim still owns.
_ACK_MANY = """
local group = ARGV[1]
for i = 2, #ARGV - 2, 3 do
  local consumer, count, id = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local held = redis.call('XPENDING', KEYS[1], group, id, id, 1)[1]
  if held ~= nil and held[2] == consumer and held[4] == count then
    redis.call('XACK', KEYS[1], group, id)
    redis.call('XDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
end
return 1
"""

# KEYS: stream, delayed, held, leases. ARGV[5]: delay ms. The job goes to the back: at once, or once due.
_RELEASE = (
    NOW
    + _WAITING
    + _OWNED
    + _FIELDS
    + _REMOVE
    + """
if #fields == 0 then return 1 end
if tonumber(ARGV[5]) <= 0 then
  redis.call('XADD', KEYS[1], '*', unpack(fields))
else
  redis.call('HSET', KEYS[3], ARGV[4] .. ':k', field(fields, 'k') or '', ARGV[4] .. ':p', field(fields, 'p') or '')
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
end
return 1
"""
)

# KEYS: stream, dead, leases. ARGV[5]: the error, ARGV[6]: how many dead letters to keep (about).
_BURY = (
    _WAITING
    + _OWNED
    + _FIELDS
    + _REMOVE
    + """
local key, payload = field(fields, 'k') or '', field(fields, 'p') or ''
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'k', key, 'p', payload, 'e', ARGV[5])
return 1
"""
)

# KEYS: dead, stream, namespaces. ARGV: the dead letter's id, the namespace.
# An id that is no stream id names no dead letter.
_REVIVE = (
    _WAITING
    + """
local ok, found = pcall(redis.call, 'XRANGE', KEYS[1], ARGV[1], ARGV[1])
if not ok or not found[1] then return 0 end
local fields = found[1][2]
redis.call('XADD', KEYS[2], '*', 'k', field(fields, 'k') or '', 'p', field(fields, 'p') or '')
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""
)

# KEYS: stream. ARGV: group, horizon ms. The jobs whose lease runs: id, fields, Unix ms the lease runs out.
_RUNNING = (
    NOW
    + """
local ok, summary = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if not ok or summary[1] == 0 then return {} end
local horizon, out = tonumber(ARGV[2]), {}
for _, held in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', summary[1])) do
  if held[3] < horizon then
    local entry = redis.call('XRANGE', KEYS[1], held[1], held[1])[1]
    if entry then table.insert(out, {entry[1], entry[2], now - held[3] + horizon}) end
  end
end
return out
"""
)

# KEYS: stream. ARGV: group, horizon ms, limit. The jobs a claim takes next: lapsed leases, then new entries.
_WAITING_JOBS = """
local limit, horizon, out = tonumber(ARGV[3]), tonumber(ARGV[2]), {}
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return out end
local last = '0-0'
for _, group in ipairs(groups) do
  for i = 1, #group - 1, 2 do
    if group[i] == 'name' and group[i + 1] ~= ARGV[1] then break end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
end
for _, held in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', horizon, '-', '+', limit)) do
  local entry = redis.call('XRANGE', KEYS[1], held[1], held[1])[1]
  if entry then table.insert(out, entry) end
end
if #out < limit then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', limit - #out)) do
    table.insert(out, entry)
  end
end
return out
"""

# KEYS: stream. ARGV: group, consumer. Forgets a consumer that holds no job.
_FORGET_CONSUMER = """
local ok, held = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if ok and #held == 0 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""


class RedisQueue(Queue):
    """A stream read through one consumer group per shard; leases ride on delivery times (see the module docstring)."""

    def __init__(self, connection: RedisConnection, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.redis = connection
        self.namespace = namespace
        #: The names of a queue of one shard (on a cluster, what a stored count of 1 keeps).
        self.names = connection.names(namespace)
        self.stream = self.names.jobs
        self._horizon = ms(LEASE_HORIZON)
        self._consumer = ("", 0)  # (name, pid): a forked process is another consumer
        self._shards: list[Names] | None = None
        # Where the next claim starts: each call the next shard, from a point of this process's own.
        self._turns = itertools.count(random.randrange(1 << 16))

    @property
    def consumer(self) -> str:
        name, pid = self._consumer
        if pid != os.getpid():
            name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            self._consumer = (name, os.getpid())
        return name

    @property
    def shards(self) -> list[Names]:
        """The names of each shard, in order (see :mod:`offload.backends.redis_shards`); read once."""
        if self._shards is None:
            self._shards = shards_of(self.redis, self.names)
        return self._shards

    def _run(self, source: str, shard: Names, keys: list[Any], args: list[Any]) -> Any:
        """Run a script on a shard, creating its consumer group if its stream has none (first use, or data lost)."""
        with self.redis.errors():
            try:
                return self.redis.script(source)(keys, [shard.group, *args])
            except redis.ResponseError as error:
                if not is_nogroup(error):
                    raise
            self._create_group(shard)
            return self.redis.script(source)(keys, [shard.group, *args])

    def _create_group(self, shard: Names) -> None:
        try:
            self.redis.client.xgroup_create(shard.jobs, shard.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _lease_ms(self, lease: float) -> int:
        return min(ms(lease), self._horizon)

    def _push_args(
        self, shards: list[Names], key: str, payload: bytes, limit: int | None
    ) -> tuple[list[Any], list[Any]]:
        """The push script's keys and arguments: the key's shard, and that shard's part of the limit."""
        index = shard_of(key, len(shards))
        shard = shards[index]
        keys = [shard.jobs, shard.delayed, shard.namespaces]
        cap = "" if limit is None else share(limit, len(shards), index)
        return keys, [shard.group, self._horizon, cap, key, payload, self.namespace]

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        keys, args = self._push_args(self.shards, key, payload, limit)
        if not self.redis.run(_PUSH, keys, args):
            raise QueueFull()
        self._wake()

    def _wake(self) -> None:
        """Wake one claim blocked on a queue spread over shards; if that fails, claims find the job at a recheck."""
        if len(self.shards) > 1:
            with contextlib.suppress(BackendUnavailable):
                self.redis.run(_WAKE, [self.names.wakeups], [WAKE_BACKLOG])

    def claim(self, lease: float, wait: float) -> Claim | None:
        claims = self.claim_many(lease, wait, 1)
        return claims[0] if claims else None

    def claim_many(self, lease: float, wait: float, limit: int) -> list[Claim]:
        """Claim from the shards in turn; when all are empty, block on the first until a push or a recheck."""
        if limit < 1:
            return []
        deadline = time.monotonic() + wait
        consumer = self.consumer
        while True:
            first = next(self._turns) % len(self.shards)
            claims, due = self._sweep(first, consumer, lease, limit)
            if claims:
                return claims
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            claims = self._wait(first, consumer, min(remaining, due), lease, limit)
            if claims:
                return claims

    def _sweep(self, first: int, consumer: str, lease: float, limit: int) -> tuple[list[Claim], float]:
        """Up to ``limit`` jobs, one script per shard from ``first`` on, until enough are found.

        Each script takes lapsed leases, due delayed jobs and new entries
        (``XREADGROUP COUNT``) of its shard. Starting each call at the next
        shard keeps any shard from starving. With no job anywhere: the
        seconds until a delayed job is due, or :data:`RECHECK`, whichever is sooner.
        A shard whose master is down (failing over) is passed over while
        others have jobs; with none found, its outage is raised.
        """
        claims: list[Claim] = []
        due = RECHECK
        outage: BackendUnavailable | None = None
        count = len(self.shards)
        for step in range(count):
            index = (first + step) % count
            shard = self.shards[index]
            keys = [shard.jobs, shard.delayed, shard.held, shard.leases, shard.rescanned]
            args = [consumer, self._lease_ms(lease), self._horizon, limit - len(claims), ms(RESCAN)]
            try:
                found = self._run(_CLAIM, shard, keys, args)
            except BackendUnavailable as error:
                outage = error
                continue
            if isinstance(found, list):
                claims += [self._claim(index, job, fields, consumer, int(times)) for job, fields, times in found]
                if len(claims) >= limit:
                    break
            elif int(found) > 0:
                due = min(due, int(found) / 1000)
        if outage is not None and not claims:
            raise outage
        return claims, due

    def _wait(self, index: int, consumer: str, seconds: float, lease: float, limit: int) -> list[Claim]:
        """Block until new jobs come or ``seconds`` pass; lease the jobs that came.

        One shard: block on its stream, and a push hands its entry to one
        blocked worker. Several: block on the wake-up list, and return
        nothing, for the caller to look at every shard.
        """
        if len(self.shards) > 1:  # a push to any shard adds a wake-up: the caller then looks at every shard
            with self.redis.errors():
                self.redis.blocking.blpop([self.names.wakeups], timeout=seconds)
            return []
        shard = self.shards[index]
        with self.redis.errors():
            try:
                read: Any = self.redis.blocking.xreadgroup(
                    shard.group, consumer, {shard.jobs: ">"}, count=limit, block=ms(seconds)
                )
            except redis.ResponseError as error:
                if not is_nogroup(error):
                    raise
                self._create_group(shard)
                return []
        if not read:
            return []
        claims = [self._claim(index, job, fields, consumer, 1) for job, fields in read[0][1]]
        self.extend_many(claims, lease)  # until now they had the horizon as their lease
        return claims

    def _claim(self, index: int, entry: bytes, fields: Any, consumer: str, times: int) -> Claim:
        if not isinstance(fields, dict):  # a script returns a flat list of names and values
            fields = dict(zip(fields[::2], fields[1::2], strict=False))
        # An entry offload did not write may lack either field: the worker then
        # drops it as a job not in offload's format, instead of failing here.
        key, payload = fields.get(b"k", b""), fields.get(b"p", b"")
        job = make_job_id(index, entry.decode(), len(self.shards))
        return Claim(job, key.decode("utf-8", "surrogateescape"), payload, f"{consumer}/{times}")

    def _owned(self, claims: Sequence[Claim]) -> dict[int, list[tuple[int, list[Any]]]]:
        """The claims by shard: for each, their places in ``claims`` and owner arguments (consumer, count, entry).

        A claim whose id names no shard of this queue owns nothing and is left out.
        """
        found: dict[int, list[tuple[int, list[Any]]]] = {}
        for place, claim in enumerate(claims):
            where = locate(claim.job_id, len(self.shards))
            if where is not None:
                consumer, _, times = claim.token.rpartition("/")
                found.setdefault(where[0], []).append((place, [consumer, times, where[1]]))
        return found

    def _one(self, claim: Claim) -> tuple[Names, list[Any]] | None:
        """The shard of a claim and its owner arguments, or None if its id names no shard."""
        for index, owned in self._owned([claim]).items():
            return self.shards[index], owned[0][1]
        return None

    def extend(self, claim: Claim, lease: float) -> bool:
        found = self._one(claim)
        if found is None:
            return False
        shard, owner = found
        args = [*owner, self._lease_ms(lease), self._horizon]
        return bool(self._run(_EXTEND, shard, [shard.jobs, shard.leases], args))

    def extend_many(self, claims: Sequence[Claim], lease: float) -> list[bool]:
        """One script per shard renews every claim that still owns its job."""
        renewed = [False] * len(claims)
        for index, owned in self._owned(claims).items():
            shard = self.shards[index]
            args: list[Any] = [self._lease_ms(lease), self._horizon]
            for _, owner in owned:
                args += owner
            done = self._run(_EXTEND_MANY, shard, [shard.jobs, shard.leases], args)
            for (place, _), result in zip(owned, done, strict=True):
                renewed[place] = bool(result)
        return renewed

    def ack(self, claim: Claim) -> None:
        found = self._one(claim)
        if found is not None:
            shard, owner = found
            self._run(_ACK, shard, [shard.jobs, shard.leases], owner)

    def ack_many(self, claims: Sequence[Claim]) -> None:
        """One script per shard removes every job its claim still owns."""
        for index, owned in self._owned(claims).items():
            shard = self.shards[index]
            self._run(_ACK_MANY, shard, [shard.jobs, shard.leases], [arg for _, owner in owned for arg in owner])

    def release(self, claim: Claim, delay: float = 0.0) -> None:
        found = self._one(claim)
        if found is not None:
            shard, owner = found
            keys = [shard.jobs, shard.delayed, shard.held, shard.leases]
            self._run(_RELEASE, shard, keys, [*owner, ms(delay) if delay > 0 else 0])
            if delay <= 0:
                self._wake()

    def bury(self, claim: Claim, error: str) -> None:
        for index, owned in self._owned([claim]).items():
            shard, kept = self.shards[index], share(DEAD_LETTERS, len(self.shards), index)
            self._run(_BURY, shard, [shard.jobs, shard.dead, shard.leases], [*owned[0][1], error, kept])

    def dead(self, limit: int = 100) -> list[DeadJob]:
        """The newest dead letters of every shard, newest first."""
        letters: list[DeadJob] = []
        for index, shard in enumerate(self.shards):
            with self.redis.errors(), contextlib.suppress(redis.ResponseError):  # not a stream: no dead letters
                found: Any = self.redis.client.xrevrange(shard.dead, count=limit)
                letters += [self._dead_job(index, entry, fields) for entry, fields in found]
        if len(self.shards) > 1:
            letters.sort(key=lambda letter: _order(letter.job_id), reverse=True)
        return letters[:limit]

    def _dead_job(self, index: int, entry: bytes, fields: dict[bytes, bytes]) -> DeadJob:
        """A dead letter as the stream holds it: its id tells when it was buried (Unix ms)."""
        text = entry.decode()
        return DeadJob(
            make_job_id(index, text, len(self.shards)),
            fields.get(b"k", b"").decode("utf-8", "surrogateescape"),
            fields.get(b"p", b""),
            fields.get(b"e", b"").decode("utf-8", "replace"),
            int(text.partition("-")[0]) / 1000,
        )

    def revive(self, job_id: str) -> bool:
        where = locate(job_id, len(self.shards))
        if where is None:
            return False
        shard = self.shards[where[0]]
        keys = [shard.dead, shard.jobs, shard.namespaces]
        revived = bool(self.redis.run(_REVIVE, keys, [where[1], self.namespace]))
        if revived:
            self._wake()
        return revived

    def stats(self) -> dict[str, int]:
        """The counts of every shard, summed: one script per shard."""
        totals = {"queued": 0, "running": 0, "dead": 0}
        for shard in self.shards:
            counts = self._run(_STATS, shard, [shard.jobs, shard.delayed, shard.dead], [self._horizon])
            for name, count in zip(totals, counts, strict=True):
                totals[name] += int(count)
        return totals

    def waiting(self, limit: int = 100) -> list[QueuedJob]:
        """The next jobs of each shard; with several shards, the oldest first."""
        jobs: list[QueuedJob] = []
        for index, shard in enumerate(self.shards):
            found = self._run(_WAITING_JOBS, shard, [shard.jobs], [self._horizon, limit])
            jobs += [self._queued_job(index, entry, fields) for entry, fields in found]
        if len(self.shards) > 1:
            jobs.sort(key=lambda job: _order(job.job_id))
        return jobs[:limit]

    def running(self, limit: int = 100) -> list[QueuedJob]:
        jobs: list[QueuedJob] = []
        for index, shard in enumerate(self.shards):
            found = self._run(_RUNNING, shard, [shard.jobs], [self._horizon])
            jobs += [self._queued_job(index, entry, fields, int(until) / 1000) for entry, fields, until in found]
        return sorted(jobs, key=lambda job: job.leased_until or 0.0)[:limit]

    def _queued_job(self, index: int, entry: bytes, fields: Any, leased_until: float | None = None) -> QueuedJob:
        """A job as a script hands it over: its id and its fields as a flat list of names and values."""
        named = dict(zip(fields[::2], fields[1::2], strict=False))
        key, payload = named.get(b"k", b""), named.get(b"p", b"")
        job = make_job_id(index, entry.decode(), len(self.shards))
        return QueuedJob(job, key.decode("utf-8", "surrogateescape"), payload, leased_until)

    def namespaces(self) -> list[str]:
        """The namespaces with jobs in any shard (each shard keeps the set of its own)."""
        found: set[str] = set()
        for shard in self.shards:
            found |= {name for name, (_, _, jobs) in live_namespaces(self.redis, shard).items() if jobs}
        return sorted(found)

    def close(self) -> None:
        name, pid = self._consumer
        if name and pid == os.getpid():
            for shard in self._shards or []:
                with contextlib.suppress(BackendUnavailable):
                    self._run(_FORGET_CONSUMER, shard, [shard.jobs], [name])
        self.redis.close()

    async def apush(self, key: str, payload: bytes, limit: int | None = None) -> None:
        """The coroutine twin of :meth:`push`, for the ASGI middleware."""
        if self._shards is None:
            self._shards = await ashards_of(self.redis, self.names)
        if not await self.redis.arun(_PUSH, *self._push_args(self._shards, key, payload, limit)):
            raise QueueFull()
        if len(self._shards) > 1:
            with contextlib.suppress(BackendUnavailable):
                await self.redis.arun(_WAKE, [self.names.wakeups], [WAKE_BACKLOG])

    async def aclose(self) -> None:
        """Close the connections of the running event loop; call it before the loop ends."""
        await self.redis.aclose()


def _order(job: str) -> tuple[int, int]:
    """A job id's place in time: the (ms, sequence) of its stream entry, whatever its shard."""
    stamp, _, sequence = job.rpartition(":")[2].partition("-")
    return (int(stamp), int(sequence or 0)) if stamp.isdigit() and sequence.isdigit() else (0, 0)
