"""The Redis cache's index of answers: what lets ``expire()`` and ``stats`` find answers without scanning keys.

Every cached answer (a ``set`` with an :class:`~offload.backends.base.IndexEntry`)
is recorded, in the same script that stores it, in structures of its
namespace (names in :class:`~offload.backends.redis_connection.Names`):

``answers`` / ``failed``
    sorted sets of keys scored by expiry (ms): ``stats`` is two ``ZCOUNT``.
``paths``
    a sorted set with every score 0 and one member per answer,
    ``path NUL query NUL <n>:<tags> key`` (path and query canonical, so ASCII;
    ``<tags>`` is ``<len>:<tag>`` per tag, ``n`` bytes in all): ``expire("/reports/*")``
    reads only the members starting with ``/reports/`` (``ZRANGEBYLEX``), and
    the member alone holds all that :meth:`ExpiryRule.matches
    <offload.backends.base.ExpiryRule.matches>` needs.
``entries``
    a hash of key -> its member, to drop it when the key is replaced or deleted.
``tag:<tag>``
    per tag, the set of keys of the answers carrying it: ``expire(tag=...)``
    reads that set only. Lua names these sets from the tags in a member, the
    same way :meth:`Names.tag <offload.backends.redis_connection.Names.tag>` does.

An answer replaced, deleted or taken leaves every structure in the same
script. Answers that expire stay indexed until swept: ``stats`` and
``expire()`` ignore them, and each indexed ``set`` sweeps a few.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from offload.backends.base import ExpiryRule, IndexEntry, Restamp
from offload.backends.redis_connection import NOW, Names, RedisConnection
from offload.keys import canonical_path

#: Answers handled per script call of ``expire()``, so that Redis is never blocked for long.
BATCH = 200

# The Lua every cache script starts with. KEYS[1..5]: answers, failed, paths, entries, the set of
# namespaces; ARGV[1..2]: the tag prefix, the namespace. A script's own keys and arguments follow.
LIBRARY = (
    NOW
    + """
local answers, failed, paths, entries, namespaces = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local tag_prefix, namespace = ARGV[1], ARGV[2]

local function tags_of(member)
  local tags = {}
  local first = string.find(member, '\\0', 1, true)
  local second = first and string.find(member, '\\0', first + 1, true)
  local colon = second and string.find(member, ':', second + 1, true)
  local size = colon and tonumber(string.sub(member, second + 1, colon - 1))
  if not size then return tags end
  local pos, stop = colon + 1, colon + size
  while pos <= stop do
    local mark = string.find(member, ':', pos, true)
    local n = mark and tonumber(string.sub(member, pos, mark - 1))
    if not n then break end
    tags[#tags + 1] = string.sub(member, mark + 1, mark + n)
    pos = mark + n + 1
  end
  return tags
end

local function unindex(key)
  local member = redis.call('HGET', entries, key)
  if member then
    redis.call('ZREM', paths, member)
    redis.call('HDEL', entries, key)
    for _, tag in ipairs(tags_of(member)) do redis.call('SREM', tag_prefix .. tag, key) end
  end
  redis.call('ZREM', answers, key)
  redis.call('ZREM', failed, key)
end

local function sweep()
  for _, index in ipairs({answers, failed}) do
    for _, gone in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, 20)) do unindex(gone) end
  end
end

-- Store a value; kind '' (not an answer), 'ok' or 'failed' (an answer, indexed under member).
local function store(key, value, ttl, kind, member)
  redis.call('SET', key, value, 'PX', ttl)
  unindex(key)
  if kind == '' then return end
  redis.call('ZADD', kind == 'failed' and failed or answers, now + tonumber(ttl), key)
  redis.call('ZADD', paths, 0, member)
  redis.call('HSET', entries, key, member)
  for _, tag in ipairs(tags_of(member)) do redis.call('SADD', tag_prefix .. tag, key) end
  redis.call('SADD', namespaces, namespace)
  sweep()
end

local function remove(key)
  local gone = redis.call('DEL', key)
  unindex(key)
  return gone
end
"""
)

# KEYS[6...]: keys. ARGV[3...]: the member each was found under.
# Removes those still indexed under that member; counts the ones whose value had not expired.
_DROP = (
    LIBRARY
    + """
local removed = 0
for i = 6, #KEYS do
  if redis.call('HGET', entries, KEYS[i]) == ARGV[i - 3] then removed = removed + remove(KEYS[i]) end
end
return removed
"""
)

# KEYS[6...]: keys. ARGV[3...]: per key its member, the SHA-1 of the value read, 'drop' or 'rewrite', the new value.
# Touches only what is unchanged since it was read: a newer answer checked the expiry log by itself.
_REWRITE = (
    LIBRARY
    + """
local touched = 0
for i = 6, #KEYS do
  local key, at = KEYS[i], (i - 6) * 4 + 3
  local ok, value = pcall(redis.call, 'GET', key)
  if ok and value and redis.call('HGET', entries, key) == ARGV[at] and redis.sha1hex(value) == ARGV[at + 1] then
    if ARGV[at + 2] == 'drop' then remove(key) else redis.call('SET', key, ARGV[at + 3], 'KEEPTTL') end
    touched = touched + 1
  end
end
return touched
"""
)

# KEYS[6]: a tag's set. ARGV[3]: the tag. The members of the answers in it; forgets the keys no longer tagged so.
_TAGGED = (
    LIBRARY
    + """
local found = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  local member = redis.call('HGET', entries, key)
  local tagged = false
  if member then
    for _, tag in ipairs(tags_of(member)) do tagged = tagged or tag == ARGV[3] end
  end
  if tagged then found[#found + 1] = member else redis.call('SREM', KEYS[6], key) end
end
return found
"""
)


class Index:
    """The index of one namespace: the keys and arguments every cache script starts with, and the lookups."""

    def __init__(self, connection: RedisConnection, names: Names) -> None:
        self.redis = connection
        self.names = names
        self.keys: list[Any] = [names.answers, names.failed, names.paths, names.entries, names.namespaces]
        self.args: list[Any] = [names.tag_prefix, names.namespace]

    def run(self, source: str, keys: list[Any], args: list[Any]) -> Any:
        """Run a cache script (one that starts with :data:`LIBRARY`)."""
        return self.redis.run(source, [*self.keys, *keys], [*self.args, *args])

    def run_many(self, source: str, calls: Sequence[tuple[list[Any], list[Any]]]) -> list[Any]:
        """:meth:`run` once per ``(keys, args)``, in one pipeline (see :meth:`RedisConnection.run_many`)."""
        return self.redis.run_many(source, [([*self.keys, *keys], [*self.args, *args]) for keys, args in calls])

    async def arun(self, source: str, keys: list[Any], args: list[Any]) -> Any:
        return await self.redis.arun(source, [*self.keys, *keys], [*self.args, *args])

    def selected(self, rule: ExpiryRule) -> list[tuple[str, bytes]]:
        """The ``(key, member)`` of every indexed answer ``rule`` selects (expired ones included)."""
        found = []
        for member in self._candidates(rule):
            parsed = parse_member(member)
            if parsed is not None and rule.matches(parsed[1]):
                found.append((parsed[0], member))
        return found

    def _candidates(self, rule: ExpiryRule) -> Iterator[bytes]:
        """The members that may match: those of the rule's tag, else those under its literal path prefix."""
        if rule.tag is not None:
            yield from self.run(_TAGGED, [self.names.tag(rule.tag)], [rule.tag.encode("utf-8", "surrogatepass")])
            return
        prefix = canonical_path(rule.literal_prefix.encode("utf-8", "surrogateescape")).encode()
        if "*" not in (rule.pattern or "*"):
            prefix += b"\0"  # an exact path: its members start with the path and a NUL
        low, high = (b"[" + prefix, b"(" + prefix + b"\xff") if prefix else (b"-", b"+")
        while True:  # a page at a time, each starting after the last member seen
            with self.redis.errors():
                page: Any = self.redis.client.zrangebylex(self.names.paths, low, high, start=0, num=1000)
            yield from page
            if len(page) < 1000:
                return
            low = b"(" + page[-1]

    def drop(self, selected: list[tuple[str, bytes]]) -> int:
        """Remove the selected answers still indexed as they were found; how many had not expired."""
        removed = 0
        for start in range(0, len(selected), BATCH):
            batch = selected[start : start + BATCH]
            removed += int(self.run(_DROP, [key for key, _ in batch], [member for _, member in batch]))
        return removed

    def rewrite(self, selected: list[tuple[str, bytes]], restamp: Restamp) -> int:
        """Replace each selected answer by ``restamp(value)`` keeping its expiry (remove it on None); how many."""
        touched = 0
        for start in range(0, len(selected), BATCH // 4):
            batch = selected[start : start + BATCH // 4]
            with self.redis.errors():
                values: Any = self.redis.client.mget([key for key, _ in batch])
            keys: list[str] = []
            args: list[Any] = []
            for (key, member), value in zip(batch, values, strict=True):
                if value is None:
                    continue  # expired meanwhile
                rewritten = restamp(value)
                keys.append(key)
                args += [member, sha1(value), "drop" if rewritten is None else "rewrite", rewritten or b""]
            if keys:
                touched += int(self.run(_REWRITE, keys, args))
        return touched


def sha1(value: bytes) -> str:
    """What Lua's ``redis.sha1hex`` gives for ``value``: how a script tells a value is unchanged since read."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()


def member(key: str, index: IndexEntry) -> bytes:
    """The member of an answer in ``paths``: path, query, tags and key (see the module docstring)."""
    tags = b"".join(b"%d:%b" % (len(tag), tag) for tag in (t.encode("utf-8", "surrogatepass") for t in index.tags))
    head = b"%b\0%b\0" % (index.path.encode("ascii", "replace"), index.query.encode("ascii", "replace"))
    return head + b"%d:%b%b" % (len(tags), tags, key.encode())


def parse_member(member: bytes) -> tuple[str, IndexEntry] | None:
    """The key and index entry a member holds, or None for a member not in this form."""
    path, _, rest = member.partition(b"\0")
    query, _, rest = rest.partition(b"\0")
    size, _, rest = rest.partition(b":")
    if not size.isdigit():
        return None
    blob, key = rest[: int(size)], rest[int(size) :]
    tags = []
    while blob:
        length, _, blob = blob.partition(b":")
        if not length.isdigit():
            return None
        try:
            tags.append(blob[: int(length)].decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            return None
        blob = blob[int(length) :]
    entry = IndexEntry(path.decode("ascii", "replace"), query.decode("ascii", "replace"), tags=tuple(tags))
    return key.decode("utf-8", "surrogateescape"), entry
