"""The Redis queue: a stream read through one consumer group, with a lease per job.

A stream ``<prefix>:jobs`` read through the consumer group ``offload``:
a claimed job is pending in the group until it is acked (``XACK`` +
``XDEL``). Workers wait with ``XREADGROUP BLOCK``, so a push wakes one at
once without polling; they also look again every second for leases that
ran out. A lease is per job and rides on the entry's delivery time: a job is
taken back (``XAUTOCLAIM``) once idle for :data:`LEASE_HORIZON`, and a
claim for ``lease`` seconds sets its delivery time (``XCLAIM ... TIME``)
to ``now + lease - LEASE_HORIZON``, so it comes back exactly ``lease``
seconds later. ``extend`` does the same for a job this claim still owns;
``release`` makes it idle for the whole horizon, claimable at once. A claim
is owned by its consumer name and the entry's delivery count, so a claim
that lost its job to another worker (or to a later claim of the same
worker) can no longer extend or ack it. ``push`` with a limit counts the
waiting jobs (stream length minus leases still running) in the same script
that adds the job.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from offload.backends.base import Claim, Queue
from offload.backends.redis import _NOW, RECHECK, RedisConnection, _is_nogroup, _ms
from offload.errors import BackendUnavailable, QueueFull

#: A lease longer than this is cut to it; a job read by a worker that died
#: before it could record its lease also comes back after this long.
LEASE_HORIZON = 3600.0

GROUP = "offload"


_WAITING = """
local function running(stream, group, horizon)
  local summary = redis.pcall('XPENDING', stream, group)
  if type(summary) ~= 'table' or summary.err or summary[1] == 0 then return 0 end
  local lapsed = redis.call('XPENDING', stream, group, 'IDLE', horizon, '-', '+', summary[1])
  return summary[1] - #lapsed
end
"""

# KEYS: stream. ARGV: group, horizon ms, limit or "", key, payload.
_PUSH = (
    _WAITING
    + """
if ARGV[3] ~= '' then
  local busy = running(KEYS[1], ARGV[1], ARGV[2])
  if redis.call('XLEN', KEYS[1]) - busy >= tonumber(ARGV[3]) then return 0 end
end
redis.call('XADD', KEYS[1], '*', 'k', ARGV[4], 'p', ARGV[5])
return 1
"""
)

# KEYS: stream. ARGV: group, horizon ms.
_STATS = (
    _WAITING
    + """
local busy = running(KEYS[1], ARGV[1], ARGV[2])
return {redis.call('XLEN', KEYS[1]) - busy, busy}
"""
)

# KEYS: stream. ARGV: group, consumer, lease ms, horizon ms.
# Takes back a job whose lease ran out, else reads a new one; either way records its lease.
_CLAIM = (
    _NOW
    + """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local entry, count
local cursor = '0-0'
repeat
  local found = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], cursor, 'COUNT', 1)
  cursor = found[1]
  if type(found[2][1]) == 'table' then entry = found[2][1] end
until entry or cursor == '0-0'
if entry then
  count = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)[1][4]
else
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', stream, '>')
  if not read then return false end
  entry = read[1][2][1]
  count = 1
end
local until_ms = now + tonumber(ARGV[3]) - tonumber(ARGV[4])
redis.call('XCLAIM', stream, group, consumer, 0, entry[1], 'TIME', until_ms, 'JUSTID')
return {entry[1], entry[2], count}
"""
)

# Whether the claim (consumer, delivery count) still owns the job. KEYS: stream. ARGV: group, consumer, count, id.
_OWNED = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[4], ARGV[4], 1)[1]
local owned = held ~= nil and held[2] == ARGV[2] and held[4] == tonumber(ARGV[3])
"""

# ARGV[5]: lease ms, ARGV[6]: horizon ms.
_EXTEND = (
    _NOW
    + _OWNED
    + """
if not owned then return 0 end
local until_ms = now + tonumber(ARGV[5]) - tonumber(ARGV[6])
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'TIME', until_ms, 'JUSTID')
return 1
"""
)

_ACK = (
    _OWNED
    + """
if not owned then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[4])
return 1
"""
)

# Idle for the whole horizon: claimable at once. The new delivery count disowns the old claim.
_RELEASE = (
    _OWNED
    + """
if not owned then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'IDLE', ARGV[5], 'RETRYCOUNT', held[4] + 1, 'JUSTID')
return 1
"""
)

# KEYS: stream. ARGV: group, consumer. Forgets a consumer that holds no job.
_FORGET_CONSUMER = """
local ok, held = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if ok and #held == 0 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""


class RedisQueue(Queue):
    """A stream read through one consumer group; leases ride on delivery times (see the module docstring)."""

    def __init__(self, connection: RedisConnection) -> None:
        self.redis = connection
        self.stream = connection.key("jobs")
        self._horizon = _ms(LEASE_HORIZON)
        self._consumer = ("", 0)  # (name, pid): a forked process is another consumer

    @property
    def consumer(self) -> str:
        name, pid = self._consumer
        if pid != os.getpid():
            name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            self._consumer = (name, os.getpid())
        return name

    def _run(self, source: str, args: Sequence[Any]) -> Any:
        """Run a queue script, creating the consumer group if the stream has none (first use, or data lost)."""
        with self.redis.errors():
            try:
                return self.redis.script(source)([self.stream], [GROUP, *args])
            except redis.ResponseError as error:
                if not _is_nogroup(error):
                    raise
            self._create_group()
            return self.redis.script(source)([self.stream], [GROUP, *args])

    def _create_group(self) -> None:
        try:
            self.redis.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _lease_ms(self, lease: float) -> int:
        return min(_ms(lease), self._horizon)

    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        if not self._run(_PUSH, [self._horizon, "" if limit is None else limit, key, payload]):
            raise QueueFull()

    def claim(self, lease: float, wait: float) -> Claim | None:
        deadline = time.monotonic() + wait
        consumer = self.consumer
        while True:
            found = self._run(_CLAIM, [consumer, self._lease_ms(lease), self._horizon])
            if found:
                job_id, fields, count = found
                return self._claim(job_id, fields, consumer, int(count))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            claim = self._wait(consumer, min(remaining, RECHECK), lease)
            if claim is not None:
                return claim

    def _wait(self, consumer: str, seconds: float, lease: float) -> Claim | None:
        """Block on the server until a new job comes or ``seconds`` pass; lease a job that came."""
        with self.redis.errors():
            try:
                read: Any = self.redis.blocking.xreadgroup(
                    GROUP, consumer, {self.stream: ">"}, count=1, block=_ms(seconds)
                )
            except redis.ResponseError as error:
                if not _is_nogroup(error):
                    raise
                self._create_group()
                return None
        if not read:
            return None
        job_id, fields = read[0][1][0]
        claim = self._claim(job_id, fields, consumer, 1)
        self.extend(claim, lease)  # until now it had the horizon as its lease
        return claim

    @staticmethod
    def _claim(job_id: bytes, fields: Any, consumer: str, count: int) -> Claim:
        if not isinstance(fields, dict):  # a script returns a flat list of names and values
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        # An entry offload did not write may lack either field: the worker then
        # drops it as a job not in offload's format, instead of failing here.
        key, payload = fields.get(b"k", b""), fields.get(b"p", b"")
        return Claim(job_id.decode(), key.decode("utf-8", "surrogateescape"), payload, f"{consumer}/{count}")

    def _owner_args(self, claim: Claim) -> list[Any]:
        consumer, _, count = claim.token.rpartition("/")
        return [consumer, count, claim.job_id]

    def extend(self, claim: Claim, lease: float) -> bool:
        return bool(self._run(_EXTEND, [*self._owner_args(claim), self._lease_ms(lease), self._horizon]))

    def ack(self, claim: Claim) -> None:
        self._run(_ACK, self._owner_args(claim))

    def release(self, claim: Claim) -> None:
        self._run(_RELEASE, [*self._owner_args(claim), self._horizon])

    def stats(self) -> dict[str, int]:
        queued, running = self._run(_STATS, [self._horizon])
        return {"queued": int(queued), "running": int(running)}

    def close(self) -> None:
        name, pid = self._consumer
        if name and pid == os.getpid():
            with contextlib.suppress(BackendUnavailable):
                self._run(_FORGET_CONSUMER, [name])
        self.redis.close()

    async def apush(self, key: str, payload: bytes, limit: int | None = None) -> None:
        """The coroutine twin of :meth:`push`, for the ASGI middleware."""
        script = self.redis.async_script(_PUSH)
        args: list[Any] = [GROUP, self._horizon, "" if limit is None else limit, key, payload]
        with self.redis.errors():
            pushed = await script([self.stream], args)
        if not pushed:
            raise QueueFull()

    async def aclose(self) -> None:
        """Close the connections of the running event loop; call it before the loop ends."""
        await self.redis.aclose()
