"""What the Redis cache, queue and channels share: the connection of one URL, the names of a namespace, helpers.

:mod:`offload.backends.redis` (the cache), :mod:`offload.backends.redis_queue`
(the queue) and :mod:`offload.backends.redis_pubsub` (the channels) import
this module and nothing of each other's, so there is no import cycle.
Connections fail fast (2 s to connect, 5 s per reply, no silent retries), so
an outage is a :class:`~offload.errors.BackendUnavailable` at once, never a
hung request; redis-py's own URL options (``?socket_timeout=10``) override
these. ``?prefix=name`` (default ``offload``) is the outer prefix of every
name offload gives a key or a channel (see :class:`Names`).

``redis+cluster://HOST:PORT/`` (``rediss+cluster://`` with TLS) opens a
``redis.RedisCluster`` instead; ``?seeds=HOST:PORT,HOST:PORT`` adds more
nodes to discover the cluster from, should the first be down. On a cluster
every name carries the hash tag ``{<prefix>}``, so that each script and
transaction touches one slot (see :class:`Names`), except the queue's, which
is spread over shards of their own tags (``?queue_shards=``, see
:mod:`offload.backends.redis_shards`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from offload.backends.base import check_namespace
from offload.errors import BackendUnavailable, ConfigurationError, MissingDependency, install_hint

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as error:  # pragma: no cover - depends on the environment
    raise MissingDependency(f"the Redis backend needs the redis client: {install_hint('redis')} ({error})") from None

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript, Script

__all__ = [
    "CLUSTER_SCHEMES",
    "ERRORS",
    "MAX_QUEUE_SHARDS",
    "NOW",
    "RECHECK",
    "Names",
    "NoBackoff",
    "RedisConnection",
    "Retry",
    "bytes_or_none",
    "is_namespace",
    "is_nogroup",
    "live_namespaces",
    "ms",
    "redis",
]

#: How long a waiting worker blocks before it looks again for lapsed leases and due jobs.
RECHECK = 1.0

#: Connections of a client of one server: more than the threads a worker or a web server runs at
#: once (redis-py's own default, 100, fails the 101st thread). The pool opens them as needed.
CONNECTIONS = 1024

#: Connections of the asyncio client of one event loop; more requests at once wait their turn.
ASYNC_CONNECTIONS = 64

#: Connections of the asyncio cluster client of one event loop, per node.
ASYNC_CLUSTER_CONNECTIONS = 1024

#: Lua that sets ``now`` to the server's clock in milliseconds: every process of a deployment agrees on it.
NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

_DEFAULTS = {"socket_connect_timeout": "2", "socket_timeout": "5"}

#: The most shards a queue may be spread over (``?queue_shards=``): a claim that finds nothing visits each.
MAX_QUEUE_SHARDS = 256

#: URL schemes of a Redis Cluster.
CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})

#: A client of one Redis server or of a Redis Cluster: offload calls what both have.
Client = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

#: What a client raises when the server or the cluster cannot answer. A cluster client's own
#: errors (no node reachable, slots not covered while a master fails over) are not RedisErrors.
ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)


class Names:
    """Every Redis key and channel offload uses for one namespace, named here and nowhere else.

    Keys handed to the cache already start with the namespace; everything
    offload keeps beside them is ``<prefix>:<namespace>:<what>``. Channels
    carry the database number, since Redis pub/sub ignores databases.

    On a Redis Cluster (``tagged``) the prefix is a hash tag, ``{<prefix>}``,
    and :meth:`key` puts it before each key handed to the cache too: every key
    of the prefix lives in one slot, so a script may touch a key's markers,
    its answer, the index and the expiry log at once. A queue spread over
    shards has the names of :meth:`shard`, one hash tag per shard. Without a
    cluster, names are as they always were.
    """

    #: The consumer group every worker of a namespace reads the stream through.
    group = "offload"

    def __init__(
        self, prefix: str, namespace: str, database: str, tagged: bool = False, head: str | None = None
    ) -> None:
        self.prefix, self.namespace, self.database = prefix, check_namespace(namespace), database
        self.tagged = tagged
        #: What every name starts with: the prefix, as a hash tag on a cluster (a queue shard's own: see shard()).
        self.head = head or (f"{{{prefix}}}" if tagged else prefix)
        base = f"{self.head}:{namespace}"
        #: The namespaces that hold something: one set per prefix, maintained on write.
        self.namespaces = f"{self.head}:namespaces"
        #: How many shards the queues of the prefix are spread over (see offload.backends.redis_shards).
        self.queue_shards = f"{self.head}:queue-shards"
        # The cache's index of answers (see offload.backends.redis).
        self.answers = f"{base}:answers"
        self.failed = f"{base}:failed"
        self.paths = f"{base}:paths"
        self.entries = f"{base}:entries"
        #: ``tag_prefix + tag`` is the set of the answers carrying that tag (Lua builds them the same way).
        self.tag_prefix = f"{base}:tag:".encode()
        # The expiry log.
        self.epoch = f"{base}:epoch"
        self.log = f"{base}:expiries"
        # The queue (see offload.backends.redis_queue).
        self.jobs = f"{base}:jobs"
        self.delayed = f"{base}:delayed"
        self.held = f"{base}:held"
        self.leases = f"{base}:leases"
        self.rescanned = f"{base}:rescanned"
        self.dead = f"{base}:dead"
        #: A queue spread over shards: one entry per push, for one claim blocked on it (see redis_queue).
        self.wakeups = f"{base}:wakeups"
        # Channels.
        self.expired = f"{base}:expired:{database}"
        self.stored = f"{base}:stored:{database}"

    def key(self, key: str) -> str:
        """The Redis key of a key handed to the cache: the same, or after the hash tag on a cluster."""
        return f"{self.head}:{key}" if self.tagged else key

    def caller_key(self, stored: str) -> str:
        """The key handed to the cache that :meth:`key` turned into ``stored``."""
        return stored.removeprefix(f"{self.head}:") if self.tagged else stored

    def tag(self, tag: str) -> bytes:
        """The set of the answers carrying ``tag``."""
        return self.tag_prefix + tag.encode("utf-8", "surrogatepass")

    def of(self, namespace: str) -> Names:
        """The names of another namespace under the same prefix and database (and queue shard)."""
        return Names(self.prefix, namespace, self.database, self.tagged, self.head)

    def shard(self, tag: int) -> Names:
        """The names of a shard of a queue spread over a cluster: its hash tag is ``{<prefix>:q<tag>}``.

        A tag of its own puts each shard in a slot of its own, so the shards
        of a queue land on different masters, while each shard's stream,
        lease index, delayed jobs and dead letters share a slot, as its
        scripts need.
        """
        return Names(self.prefix, self.namespace, self.database, self.tagged, f"{{{self.prefix}:q{tag}}}")

    @staticmethod
    def wake(prefix: str, token: str) -> str:
        """The private channel that wakes one process's subscriber thread (see :mod:`offload.backends.redis_pubsub`)."""
        return f"{prefix}:wake:{token}"


class RedisConnection:
    """The clients of one URL: one pool for commands, one for blocking reads, one async client per event loop."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.prefix = options.pop("prefix", "offload") or "offload"
        self.socket_timeout = float(options.get("socket_timeout", _DEFAULTS["socket_timeout"]))
        self.cluster = parts.scheme.lower() in CLUSTER_SCHEMES
        #: The other nodes a cluster client may discover the cluster from.
        self.seeds = _seeds(options.pop("seeds", "")) if self.cluster else []
        #: The shards a queue should have, if the URL says (``?queue_shards=``); the cluster's stored count wins.
        self.queue_shards = _queue_shards(options.pop("queue_shards", ""), self.cluster)
        self.display_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))
        if self.cluster:
            parts = parts._replace(scheme=parts.scheme.lower().partition("+")[0])
            if "{" in self.prefix or "}" in self.prefix:
                raise ConfigurationError(f"?prefix={self.prefix!r}: a Redis Cluster prefix may not hold {{ or }}")
        self.url = urlunsplit(parts._replace(query=urlencode({**_DEFAULTS, **options})))
        self.database = str(options.get("db") or parts.path.strip("/") or "0")
        if self.cluster and self.database != "0":
            raise ConfigurationError(f"{self.display_url}: a Redis Cluster has database 0 only")
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._blocking: Client | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = weakref.WeakKeyDictionary()
        self._scripts: dict[tuple[int, str], Script] = {}
        self.external = False  # a client of the application's own (see from_client)
        self._async_scripts: dict[tuple[int, str], AsyncScript] = {}

    @classmethod
    def from_client(cls, client: redis.Redis, prefix: str = "offload") -> RedisConnection:
        """Use a client the application already has; offload never closes it."""
        connection = cls(f"redis://?prefix={prefix}")
        connection._client = connection._blocking = client
        connection.external = True
        pool = getattr(client, "connection_pool", None)
        connection.database = str(getattr(pool, "connection_kwargs", {}).get("db", 0))  # names its channels
        return connection

    def names(self, namespace: str) -> Names:
        return Names(self.prefix, namespace, self.database, self.cluster)

    @property
    def client(self) -> Client:
        """The client for short commands; its pool reconnects by itself after an outage or a fork."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    @property
    def blocking(self) -> Client:
        """A client whose read timeout outlasts one ``XREADGROUP BLOCK``."""
        if self._blocking is None:
            with self._lock:
                if self._blocking is None:
                    self._blocking = self._connect(socket_timeout=self.socket_timeout + RECHECK)
        return self._blocking

    def _connect(self, **options: Any) -> Client:
        """A new client of the URL. A cluster client finds the nodes from the URL's host and its seeds.

        Neither retries a command (an outage is reported at once); a cluster
        client follows ``MOVED`` and, after a connection error, reads the
        cluster's slots again, so it finds a promoted replica by itself.
        """
        if self.cluster:
            seeds = [redis.cluster.ClusterNode(host, port) for host, port in self.seeds]  # type: ignore[no-untyped-call]
            return redis.cluster.RedisCluster.from_url(
                self.url, startup_nodes=seeds, retry=Retry(NoBackoff(), 0), **options
            )
        return redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0), max_connections=CONNECTIONS, **options)

    def subscriber_client(self, **options: Any) -> redis.Redis:
        """A client of one server that can hold a subscription: the URL's, or a live node of the cluster.

        A message published anywhere in a cluster reaches the subscribers of
        every node, so any node that answers will do.
        """
        if not self.cluster:
            return redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0), **options)
        cluster = self.client
        nodes = cluster.get_nodes() if isinstance(cluster, redis.cluster.RedisCluster) else []  # type: ignore[no-untyped-call]
        parts = urlsplit(self.url)
        error: Exception = BackendUnavailable(f"Redis Cluster at {self.display_url}: no node answers")
        for node in nodes:
            client = redis.Redis.from_url(
                urlunsplit(parts._replace(netloc=_with_address(parts.netloc, node.host, node.port))),
                retry=Retry(NoBackoff(), 0),
                **options,
            )
            try:
                client.ping()
            except (*ERRORS, OSError) as failed:
                error = failed
                client.close()
                continue
            return client
        raise error

    def async_client(self) -> AsyncClient:
        """An asyncio client for the running event loop (an asyncio connection belongs to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is not None:
            return client
        retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
        if self.cluster:
            seeds = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in self.seeds]
            # redis-py's asyncio cluster client has no pool that waits: past max_connections to a
            # node it fails at once. The bound is set high, so a burst opens connections instead.
            client = redis.asyncio.cluster.RedisCluster.from_url(
                self.url, startup_nodes=seeds, retry=retry, max_connections=ASYNC_CLUSTER_CONNECTIONS
            )
        else:
            # A bounded pool that makes a burst of requests wait for a connection (up to the
            # socket timeout), where redis-py's default pool fails the 101st at once.
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url, max_connections=ASYNC_CONNECTIONS, timeout=self.socket_timeout
            )
            client = redis.asyncio.Redis(connection_pool=pool, retry=retry)
            client.auto_close_connection_pool = True  # aclose() closes the pool too
        self._async[loop] = client
        return client

    async def async_ready(self) -> AsyncClient:
        """:meth:`async_client`, once it knows the cluster's layout.

        An asyncio cluster client learns the layout on its first command; the
        other commands of a burst that started meanwhile could find their
        connections closed under them. Here they all wait for that first read.
        """
        client = self.async_client()
        if isinstance(client, redis.asyncio.cluster.RedisCluster):
            await client.initialize()  # at once when done: it only reads a flag
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

    def run(self, source: str, keys: list[Any], args: list[Any]) -> Any:
        """Run a Lua script (one round trip: ``EVALSHA``, or ``EVAL`` the first time), errors as outages."""
        with self.errors():
            return self.script(source)(keys, args)

    def run_many(self, source: str, calls: Sequence[tuple[list[Any], list[Any]]]) -> list[Any]:
        """Run a Lua script once per ``(keys, args)``, in order, in one pipeline: one round trip for all.

        Each run is atomic on its own; the pipeline is not a transaction.
        ``EVALSHA`` goes straight into it, as redis-py's scripts in a pipeline
        would first ask ``SCRIPT EXISTS``, a trip more; runs the server lacked
        the script for are sent again once it is loaded. redis-py's cluster
        pipeline refuses scripts, so on a cluster the pipeline goes to the
        master of the first run's slot directly (a prefix's cache is one
        slot); runs it turns away (another slot, or one that moved) go one by
        one, each redirected as :meth:`run` is.
        """
        if len(calls) <= 1:
            return [self.run(source, *call) for call in calls]
        with self.errors():
            client = self._slot_client(calls) if self.cluster else self.client
            if client is None:
                return [self.run(source, keys, args) for keys, args in calls]
            replies, moved = self._pipelined(client, source, calls)
        for i in moved:
            replies[i] = self.run(source, *calls[i])
        return replies

    def _slot_client(self, calls: Sequence[tuple[list[Any], list[Any]]]) -> Any:
        """The client of the master of the first run's slot (every run of a prefix's cache is in it)."""
        cluster = self.client
        if not isinstance(cluster, redis.cluster.RedisCluster) or not calls[0][0]:
            return None
        return cluster.get_redis_connection(cluster.get_node_from_key(calls[0][0][0]))  # type: ignore[no-untyped-call]

    def _pipelined(
        self, client: Any, source: str, calls: Sequence[tuple[list[Any], list[Any]]]
    ) -> tuple[list[Any], list[int]]:
        """The replies of ``calls`` pipelined on ``client``, and the runs a cluster node turned away (MOVED, ASK)."""
        replies: list[Any] = [None] * len(calls)
        todo, moved = list(range(len(calls))), []
        sha = self.script(source).sha
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                pipe.evalsha(sha, len(keys), *keys, *args)
            missing = []
            for i, reply in zip(todo, pipe.execute(raise_on_error=False), strict=True):
                if attempt == 1 and isinstance(reply, redis.exceptions.NoScriptError):
                    missing.append(i)
                elif isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith(("MOVED", "ASK")):
                    moved.append(i)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    replies[i] = reply
            if not missing:
                break
            client.script_load(source)
            todo = missing
        return replies, moved

    async def arun(self, source: str, keys: list[Any], args: list[Any]) -> Any:
        """:meth:`run` on the running event loop's client."""
        with self.errors():
            if self.cluster:
                await self.async_ready()
            return await self.async_script(source)(keys, args)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn the client's errors into :class:`BackendUnavailable` (a missing consumer group excepted)."""
        try:
            yield
        except ERRORS as error:
            if is_nogroup(error):
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


def _seeds(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT,HOST:PORT`` as pairs; a port that is not a number is a configuration error."""
    seeds = []
    for seed in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = seed.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"?seeds={text!r}: write HOST:PORT,HOST:PORT")
        seeds.append((host.strip("[]"), int(port)))
    return seeds


def _queue_shards(text: str, cluster: bool) -> int | None:
    """``?queue_shards=N``: a whole number from 1 to :data:`MAX_QUEUE_SHARDS`, above 1 only on a cluster."""
    if not text:
        return None
    count = int(text) if text.isdigit() else 0
    if not 1 <= count <= MAX_QUEUE_SHARDS:
        raise ConfigurationError(f"?queue_shards={text!r}: write a whole number from 1 to {MAX_QUEUE_SHARDS}")
    if count > 1 and not cluster:
        raise ConfigurationError(
            f"?queue_shards={text}: one Redis server keeps its queue in one stream; shards are for redis+cluster://"
        )
    return count


def _with_address(netloc: str, host: str, port: int) -> str:
    """``netloc`` (with its credentials, if any) naming ``host:port`` instead."""
    credentials, at, _ = netloc.rpartition("@")
    address = f"[{host}]" if ":" in host else host
    return f"{credentials}{at}{address}:{port}"


def is_nogroup(error: Exception) -> bool:
    """Whether Redis refused a stream command because the consumer group does not exist (yet)."""
    return isinstance(error, redis.ResponseError) and str(error).startswith("NOGROUP")


def ms(seconds: float) -> int:
    """Seconds as the whole milliseconds Redis takes, at least one."""
    return max(1, round(seconds * 1000))


def bytes_or_none(value: Any) -> bytes | None:
    """A reply as bytes, or None for a nil reply."""
    return None if value is None else bytes(value)


# KEYS: for each namespace, in this order: answers, failed, epoch, jobs, delayed, dead; then the set of namespaces.
# ARGV: the namespaces. Returns per namespace whether it has live answers, logged expiries and jobs;
# forgets the namespaces that have none of them (a writer adds its namespace back in the same script as its write).
_NAMESPACES = (
    NOW
    + """
local set, found = KEYS[#KEYS], {}
for i, namespace in ipairs(ARGV) do
  local k = (i - 1) * 6
  local answers = redis.call('ZCOUNT', KEYS[k + 1], '(' .. now, '+inf')
  answers = answers + redis.call('ZCOUNT', KEYS[k + 2], '(' .. now, '+inf')
  local expiries = redis.call('EXISTS', KEYS[k + 3])
  local jobs = redis.call('ZCARD', KEYS[k + 5])
  for _, stream in ipairs({KEYS[k + 4], KEYS[k + 6]}) do
    if redis.call('TYPE', stream).ok == 'stream' then jobs = jobs + redis.call('XLEN', stream) end
  end
  if answers + expiries + jobs == 0 then redis.call('SREM', set, namespace) end
  found[i] = {answers > 0 and 1 or 0, expiries, jobs > 0 and 1 or 0}
end
return found
"""
)


def is_namespace(namespace: str) -> bool:
    """Whether a name read back from Redis is a namespace offload could have written."""
    try:
        check_namespace(namespace)
    except ConfigurationError:
        return False  # not written by offload
    return True


def live_namespaces(connection: RedisConnection, names: Names) -> dict[str, tuple[bool, bool, bool]]:
    """Each namespace of ``names``'s prefix that holds something: (live answers, logged expiries, jobs)."""
    with connection.errors():
        members: Any = connection.client.smembers(names.namespaces)
    namespaces = sorted(
        name for name in (member.decode("ascii", "replace") for member in members) if is_namespace(name)
    )
    keys: list[str] = []
    for namespace in namespaces:
        other = names.of(namespace)
        keys += [other.answers, other.failed, other.epoch, other.jobs, other.delayed, other.dead]
    if not namespaces:
        return {}
    found: Any = connection.run(_NAMESPACES, [*keys, names.namespaces], list(namespaces))
    return {
        namespace: (bool(answers), bool(expiries), bool(jobs))
        for namespace, (answers, expiries, jobs) in zip(namespaces, found, strict=True)
        if answers or expiries or jobs
    }
