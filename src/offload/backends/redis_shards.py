"""How a Redis queue is spread over the masters of a Redis Cluster: shards, their count, and job ids.

A Lua script may only touch keys of one slot, and everything of a prefix
carries the hash tag ``{<prefix>}``, so a queue under that tag lives on one
master. On a cluster the queue of a namespace is therefore ``N`` shards, each
a complete queue of its own (stream, consumer group, lease index, delayed
jobs, dead letters, the set of namespaces) under the hash tag
``{<prefix>:q<i>}`` (:meth:`Names.shard <offload.backends.redis_connection.Names.shard>`):
the tags hash to different slots, chosen to fall evenly on the masters.

Agreement
    Every process of a deployment must spread jobs over the same shards, or
    a worker would never look where a web process pushed. The shards are
    stored in the cluster, under ``{<prefix>}:queue-shards``, by the first
    process that needs them (``SET NX``): their count and the number in
    each one's tag, chosen so that the tags fall evenly on the masters of
    that moment (:func:`even_tags`), e.g. ``16:0,1,2,4,...``. Every process
    reads them once and uses them, whatever its own URL says
    (``?queue_shards=``), logging a warning once when the counts differ.
    Without the URL option the first process stores :data:`DEFAULT_SHARDS`
    shards; but if jobs wait in the one-shard names of any namespace of the
    prefix (queued before the queues were spread), it stores ``1``, so that
    none of them is stranded.
One shard
    A queue of one shard (every queue on a single server, and a cluster whose
    stored count is 1) keeps the names it always had: ``<prefix>:<ns>:jobs``
    (``{<prefix>}:<ns>:jobs`` on a cluster), and job ids that are plain
    stream ids. Nothing changes for those deployments, and nothing is stored.
Job ids
    With several shards a job id is ``<shard>:<stream id>``, so a claim or a
    dead letter names the shard to route its ack, extend, release, bury or
    revive to.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

from offload.backends.redis_connection import MAX_QUEUE_SHARDS, Names, RedisConnection, is_namespace
from offload.errors import BackendUnavailable

log = logging.getLogger("offload.redis")

#: Shards of a queue on a cluster when the first process's URL does not say. The count is fixed once
#: stored, while a cluster may grow: 16 shards use up to 16 masters, and 3 to 8 evenly enough.
DEFAULT_SHARDS = 16

# KEYS: the shards' key, then the one-shard stream and delayed set of each namespace of the prefix.
# ARGV: the shards to store if none are (see _wanted). Returns the stored shards. Jobs queued before the
# queues were spread (in the one-shard names, the prefix's slot) keep the queue one shard: none is stranded.
_AGREE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local count = ARGV[1]
  for i = 2, #KEYS - 1, 2 do
    local jobs = redis.call('TYPE', KEYS[i]).ok == 'stream' and redis.call('XLEN', KEYS[i]) or 0
    local delayed = redis.call('TYPE', KEYS[i + 1]).ok == 'zset' and redis.call('ZCARD', KEYS[i + 1]) or 0
    if jobs + delayed > 0 then count = '1' end
  end
  redis.call('SET', KEYS[1], count, 'NX')
end
return redis.call('GET', KEYS[1])
"""

_warned: set[tuple[str, str]] = set()


def shards_of(connection: RedisConnection, names: Names) -> list[Names]:
    """The names of each shard of ``names``'s queue, in order: none on one server; on a cluster, read once.

    One round trip when the shards are stored; the first process stores them, in two more.
    """
    if not connection.cluster:
        return [names]
    with connection.errors():
        client = connection.client
        stored: Any = client.get(names.queue_shards)
        if stored is None:
            namespaces: Any = client.smembers(names.namespaces)
            stored = connection.run(_AGREE, _agree_keys(names, namespaces), [_wanted(connection, client, names)])
    return _layout(connection, names, stored)


async def ashards_of(connection: RedisConnection, names: Names) -> list[Names]:
    """:func:`shards_of` on the running event loop's client."""
    if not connection.cluster:
        return [names]
    with connection.errors():
        client = await connection.async_ready()
        stored: Any = await client.get(names.queue_shards)
        if stored is None:
            namespaces: Any = await client.smembers(names.namespaces)
            wanted = _wanted(connection, client, names)
            stored = await connection.arun(_AGREE, _agree_keys(names, namespaces), [wanted])
    return _layout(connection, names, stored)


def _agree_keys(names: Names, namespaces: Iterable[bytes]) -> list[str]:
    """The shards' key, then the one-shard stream and delayed set of ``names``'s namespace and each listed one."""
    keys = [names.queue_shards, names.jobs, names.delayed]
    for member in namespaces:
        namespace = member.decode("ascii", "replace")
        if namespace != names.namespace and is_namespace(namespace):
            keys += [names.of(namespace).jobs, names.of(namespace).delayed]
    return keys


def _wanted(connection: RedisConnection, client: Any, names: Names) -> str:
    """What the first process stores: ``1``, or ``<count>:<tag>,<tag>,...``, the tags of the shards in order."""
    count = DEFAULT_SHARDS if connection.queue_shards is None else connection.queue_shards
    if count == 1:
        return "1"
    return f"{count}:{','.join(map(str, even_tags(client, names.prefix, count)))}"


def even_tags(client: Any, prefix: str, count: int) -> list[int]:
    """``count`` shard tags (``{<prefix>:q<tag>}``) whose slots fall evenly on the cluster's masters as they are now.

    Tags taken in turn (q0, q1, ...) would fall where their slots happen to
    be: 16 of them on three masters can split 7, 6 and 3. Here each master
    takes ``count // masters`` of them, and ``count % masters`` masters one
    more (6, 5 and 5); the first tags that fit win. ``client`` is a cluster
    client, blocking or asyncio, that knows the cluster's slots (it asks no
    server).
    """
    each, extra = divmod(count, max(1, len(client.get_primaries())))
    placed: Counter[str] = Counter()
    tags: list[int] = []
    for tag in range(64 * count):
        node = client.get_node_from_key(f"{{{prefix}:q{tag}}}")
        name = str(getattr(node, "name", ""))
        if placed[name] > each or (placed[name] == each and extra == 0):
            continue  # that master has its share
        if placed[name] == each:
            extra -= 1
        placed[name] += 1
        tags.append(tag)
        if len(tags) == count:
            return tags
    return list(range(count))  # a cluster whose slots this client does not know yet: the first tags


def _layout(connection: RedisConnection, names: Names, stored: object) -> list[Names]:
    """The shards the stored value names; a count the URL disagrees with is used all the same, with a warning."""
    text = stored.decode("ascii", "replace") if isinstance(stored, bytes) else str(stored)
    head, _, listed = text.partition(":")
    count = int(head) if head.isdigit() else 0
    tags = [int(tag) for tag in listed.split(",") if tag.isdigit()] if listed else list(range(count))
    if not 1 <= count <= MAX_QUEUE_SHARDS or len(set(tags)) != count or len(tags) != count:
        raise BackendUnavailable(
            f"Redis at {connection.display_url}: {names.queue_shards} holds {text!r}, not a shard layout;"
            " delete it once no job is queued"
        )
    wanted = connection.queue_shards
    if wanted is not None and wanted != count and (connection.display_url, names.prefix) not in _warned:
        _warned.add((connection.display_url, names.prefix))
        log.warning(
            "?queue_shards=%d, but the queues of prefix %r are spread over %d shards (stored in %s):"
            " using %d, as every other process does",
            wanted,
            names.prefix,
            count,
            names.queue_shards,
            count,
        )
    if count == 1:
        return [names]
    return [names.shard(tag) for tag in tags]


def shard_of(key: str, count: int) -> int:
    """The shard a job for ``key`` goes to, by CRC-32: every process computes it alike (``hash()`` does not)."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % count if count > 1 else 0


def share(limit: int, count: int, shard: int) -> int:
    """Shard ``shard``'s part of a cap of ``limit`` over ``count`` shards.

    The parts add up to ``limit`` (the first ``limit % count`` shards take one
    more), so the whole queue never holds more; but each is at least one, so
    that no key is refused on an empty queue: a cap below ``count`` holds at
    one job per shard.
    """
    part, rest = divmod(limit, count)
    return max(1, part + (shard < rest))


def make_job_id(shard: int, entry: str, count: int) -> str:
    """The id of stream entry ``entry`` of ``shard``: the entry's own with one shard, ``<shard>:<entry>`` with more."""
    return f"{shard}:{entry}" if count > 1 else entry


def locate(job: str, count: int) -> tuple[int, str] | None:
    """The shard and stream entry a :func:`make_job_id` names, or None if it names none of ``count`` shards."""
    if count == 1:
        return 0, job
    shard, colon, entry = job.partition(":")
    if not colon or not shard.isdigit() or int(shard) >= count:
        return None
    return int(shard), entry
