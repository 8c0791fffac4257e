"""The backend contract: one cache and one queue per namespace, as offload needs them.

A backend module provides a :class:`Cache`, a :class:`Queue`, or both, and
registers its URL scheme in :mod:`offload.backends`. The middleware, the
worker and the CLI speak only to these two classes, so a new engine slots in
without touching them. Values are opaque ``bytes`` produced by
:mod:`offload.records`; a backend never interprets them, and anything it reads
back that is not bytes (a foreign value, a column of the wrong type) is a miss.

Namespaces: a cache and a queue are opened for one namespace
(:func:`offload.backends.open_backend`), and every structure a backend keeps
beside the values (indexes, jobs, dead letters, channels, counters) belongs to
that namespace: a worker never claims another namespace's job, and
``expire()`` never touches another namespace's answers. Keys handed to a cache
already start with the namespace, so values of two namespaces never meet.

Every method may raise :class:`~offload.errors.BackendUnavailable` when the
engine cannot be reached; the callers answer 503 and try again on the next
request. The behaviour suite in ``tests/backends`` runs against every backend.

Async twins: a cache may also define coroutine methods ``aget``, ``aadd``,
``adelete`` and ``atake``, and a queue ``apush``, with the same arguments and
contract as their blocking names. The ASGI middleware awaits them when
present; otherwise it runs the blocking method in a small, bounded thread pool
(:data:`offload.asgi.BACKEND_THREADS`), so the event loop never blocks.
"""

from __future__ import annotations

import hashlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from offload.keys import params_match, path_matcher

#: The namespace of a cache or queue opened without naming one.
DEFAULT_NAMESPACE = "offload"

#: Rewrites a stored value when an expiry marks it stale instead of removing it; None removes it.
Restamp = Callable[[bytes], "bytes | None"]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What a cached answer is indexed by, so that ``expire()`` and ``status`` can find it."""

    path: str  # canonical, percent-encoded path (offload.keys.canonical_path)
    query: str  # canonical query string (offload.keys.canonical_query)
    failed: bool = False  # an error answer stored after the job failed
    tags: tuple[str, ...] = ()  # labels the app gave the answer; expire(tag=...) finds them exactly


@dataclass(frozen=True, slots=True)
class ExpiryRule:
    """Which answers one ``expire()`` selects: by path pattern and params, or by tag.

    ``pattern`` is decoded text where ``*`` matches anything (see
    :func:`offload.keys.path_matcher`); ``params`` must all be in the query
    exactly (:func:`offload.keys.params_match`); ``tag`` must be one of the
    answer's tags, compared exactly. Given together, all must hold. ``soft``
    marks the answers stale instead of removing them.

    >>> rule = ExpiryRule("/reports/*", (("year", "2024"),))
    >>> rule.matches(IndexEntry("/reports/q3", "year=2024")), rule.matches(IndexEntry("/reports/q3", "year=2023"))
    (True, False)
    >>> ExpiryRule(tag="report").matches(IndexEntry("/x", "", tags=("report", "customer-42")))
    True
    """

    pattern: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    tag: str | None = None
    soft: bool = False
    _match: Callable[[str], bool] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern is None and self.tag is None:
            raise ValueError("an expiry names a path pattern, a tag, or both")
        if self.tag is not None and (not isinstance(self.tag, str) or not self.tag):
            raise ValueError("a tag is a non-empty string")
        if self.pattern is not None:
            object.__setattr__(self, "_match", path_matcher(self.pattern))

    def matches(self, entry: IndexEntry) -> bool:
        if self._match is not None and not self._match(entry.path):
            return False
        if self.tag is not None and self.tag not in entry.tags:
            return False
        return params_match(entry.query, self.params)

    @property
    def literal_prefix(self) -> str:
        """The part of the pattern before its first ``*`` (empty for a tag-only rule): where to look."""
        return (self.pattern or "").partition("*")[0]

    def encode(self) -> str:
        """One line of JSON, for backends that log expiries (see :meth:`Cache.expire`)."""
        import json

        return json.dumps(
            {"pattern": self.pattern, "params": [list(p) for p in self.params], "tag": self.tag, "soft": self.soft},
            separators=(",", ":"),
            ensure_ascii=True,
        )

    @classmethod
    def decode(cls, text: str | bytes) -> ExpiryRule | None:
        """The rule :meth:`encode` wrote, or None for anything else (a foreign or damaged entry)."""
        import json

        try:
            data = json.loads(text)
            params = tuple((str(n), str(v)) for n, v in data["params"])
            pattern, tag, soft = data["pattern"], data["tag"], data["soft"]
            if not (pattern is None or isinstance(pattern, str)) or not isinstance(soft, bool):
                return None
            return cls(pattern, params, tag, soft)
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True, slots=True)
class JobStart:
    """The arguments of one :meth:`Cache.start_counted_job`, so that :meth:`Cache.start_counted_jobs` takes many."""

    running: str
    pending: str
    answer: str
    marker: bytes
    lease: float
    counter: str
    counter_ttl: float


@dataclass(frozen=True, slots=True)
class JobFinish:
    """The arguments of one :meth:`Cache.finish_job`, so that :meth:`Cache.finish_jobs` takes many."""

    answer: str
    value: bytes | None
    ttl: float
    index: IndexEntry | None
    done: tuple[str, ...]
    since: int
    restamp: Restamp | None = None


class Cache(ABC):
    """A key-value store with expiry and an atomic add-if-absent, for one namespace."""

    #: Whether entries survive this process and are seen by other processes.
    shared = True

    #: The namespace this cache was opened for.
    namespace: str = DEFAULT_NAMESPACE

    #: Whether :meth:`watch` can tell of stored answers (False: it returns None, and callers look for themselves).
    notifies = False

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or None if absent, expired, or not bytes."""

    @abstractmethod
    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if ``key`` is absent or expired; return whether it was stored.

        This must be atomic across every process using the backend: of many
        concurrent calls for one key exactly one returns True. It is how
        offload enqueues exactly one job per key.
        """

    @abstractmethod
    def set(self, key: str, value: bytes, ttl: float, index: IndexEntry | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any value.

        With ``index``, the entry is a cached answer that :meth:`expire` and
        :meth:`stats` must be able to find by path, query and tags. A write
        the engine refuses or silently drops raises
        :class:`~offload.errors.BackendUnavailable`: it is never reported as done.
        """

    @abstractmethod
    def touch(self, key: str, ttl: float) -> bool:
        """Give an existing entry a new expiry; return False if it is gone (a lost lease)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    @abstractmethod
    def expire(self, rule: ExpiryRule, restamp: Restamp | None = None) -> int:
        """Remove the indexed answers ``rule`` selects (or, with ``restamp``, rewrite them); return how many.

        Before it touches any answer, the rule is logged under a new expiry
        epoch (see :meth:`epoch` and :meth:`expired_since`), so that a job
        running meanwhile does not store an answer computed from old data.
        With ``restamp`` (a soft purge), each selected answer is replaced by
        ``restamp(value)`` keeping its expiry, or removed when that returns
        None. Only answers of this cache's namespace are touched.
        """

    @abstractmethod
    def epoch(self) -> int:
        """The number of the last expiry logged in this namespace (0 before any)."""

    @abstractmethod
    def expired_since(self, epoch: int, entry: IndexEntry) -> ExpiryRule | None:
        """The first expiry logged after ``epoch`` that selects ``entry``, if any.

        Expiries are kept long enough for the longest job (at least an hour);
        an epoch older than that answers as if every expiry since had matched.
        """

    @abstractmethod
    def incr(self, key: str, ttl: float) -> int:
        """Add one to the counter under ``key`` and return the new count, atomically.

        A missing or expired counter starts at 1 and lives ``ttl`` seconds
        from then; later increments do not extend it (a fixed window).
        Concurrent increments from any process are never lost.
        """

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counts of live indexed answers: ``{"cached": n, "failed": m}``."""

    @abstractmethod
    def namespaces(self) -> list[str]:
        """Every namespace that holds answers or has logged an expiry in this store, sorted."""

    def watch(self, on_stored: Callable[[str], None]) -> Callable[[], None] | None:
        """Call ``on_stored(key)`` whenever :meth:`finish_job` stores an answer in this namespace, anywhere.

        The calls come from a background thread of this process, within
        moments of the store, for as long as the watch runs; a call may come
        more than once, or for a key nobody waits on. Returns a function that
        stops the watch, or None when the engine cannot tell (then the
        caller looks for itself). Engines notify with what they have:
        pub/sub, ``NOTIFY``, datagrams beside a file, a condition in memory.
        """
        return None

    def take(self, key: str) -> bytes | None:
        """Return the value under ``key`` and remove it, atomically: of concurrent takers, one gets it.

        It is how an answer meant for one client is delivered once. The
        default claims the value with :meth:`add` on a key named after it;
        engines with an atomic get-and-delete override it.
        """
        value = self.get(key)
        if value is None:
            return None
        claim = f"{key}:taken:{hashlib.sha256(value).hexdigest()[:32]}"
        if not self.add(claim, b"1", 60):
            return None
        self.delete(key)
        return value

    def start_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float
    ) -> tuple[bool, bytes | None, int]:
        """Begin a job: take the lock ``running``; if taken, mark ``pending`` as running and read ``answer``.

        Returns whether the lock was taken (an atomic add, as :meth:`add`),
        the value under ``answer`` if it was, and the current :meth:`epoch`
        (read after the lock was taken). The same as these calls in turn;
        engines that can do it in one round trip override it.
        """
        if not self.add(running, marker, lease):
            return False, None, 0
        self.set(pending, marker, lease)
        return True, self.get(answer), self.epoch()

    def start_counted_job(
        self, running: str, pending: str, answer: str, marker: bytes, lease: float, counter: str, counter_ttl: float
    ) -> tuple[bool, bytes | None, int, int]:
        """:meth:`start_job`, then, if the lock was taken, :meth:`incr` of ``counter``: a job's starts are counted.

        Returns :meth:`start_job`'s three values and the new count (0 when
        the lock was not taken). The same as these calls in turn; engines
        that can do it in one round trip override it.
        """
        taken, existing, epoch = self.start_job(running, pending, answer, marker, lease)
        if not taken:
            return False, None, 0, 0
        return True, existing, epoch, self.incr(counter, counter_ttl)

    def start_counted_jobs(self, starts: Sequence[JobStart]) -> list[tuple[bool, bytes | None, int, int]]:
        """:meth:`start_counted_job` for each of ``starts``, in order: a worker begins what it claimed together.

        Each start sees the ones before it (of two starts of one key, the
        second finds the lock taken). The default calls
        :meth:`start_counted_job` for each; engines that can do them in one
        round trip override it.
        """
        return [
            self.start_counted_job(s.running, s.pending, s.answer, s.marker, s.lease, s.counter, s.counter_ttl)
            for s in starts
        ]

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
        """End a job: store ``value`` under ``answer`` (unless None), then delete each key of ``done``.

        If an expiry logged after epoch ``since`` (read by :meth:`start_job`)
        selects ``index``, the answer was computed from data older than that
        expiry: it is removed again (or, for a soft expiry with ``restamp``,
        rewritten) before the markers go, and False is returned. Storing
        first and checking after is what makes it safe without a lock: an
        expiry that logs itself after the check deletes the stored answer.
        """
        survived = True
        if value is not None:
            self.set(answer, value, ttl, index)
            if index is not None:
                rule = self.expired_since(since, index)
                if rule is not None:
                    survived = False
                    rewritten = restamp(value) if (rule.soft and restamp is not None) else None
                    if rewritten is None:
                        self.delete(answer)
                    else:
                        self.set(answer, rewritten, ttl, index)
        for key in done:
            self.delete(key)
        return survived

    def finish_jobs(self, finishes: Sequence[JobFinish]) -> list[bool]:
        """:meth:`finish_job` for each of ``finishes``, in order; what each returned.

        A worker stores the answers of the jobs that ended together. If the
        engine fails part way, some may be done: each is safe to do again.
        The default calls :meth:`finish_job` for each; engines that can do
        them in one round trip override it.
        """
        return [self.finish_job(f.answer, f.value, f.ttl, f.index, f.done, f.since, f.restamp) for f in finishes]

    def touch_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
        """:meth:`touch` each key, in order: a heartbeat renews the markers of every job in flight.

        The default calls :meth:`touch` for each; engines that can renew them
        in one round trip override it.
        """
        return [self.touch(key, ttl) for key in keys]

    def generation(self) -> int | None:
        """A number that changes whenever :meth:`expire` removes answers, in any process.

        Web processes keep recent answers in memory only while this number is
        unchanged, so it must be cheap: no network round trip (read shared
        memory, or a value a background listener keeps current). Return None
        when the cache cannot tell cheaply; then nothing is kept in memory.
        """
        return None

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release connections; the cache may be used again afterwards."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A job taken from a queue by one worker, until its lease runs out."""

    job_id: str
    key: str
    payload: bytes
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class DeadJob:
    """A job taken out of the queue for good (a dead letter), with the reason."""

    job_id: str
    key: str
    payload: bytes
    error: str
    buried: float  # Unix time


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job still in the queue, as :meth:`Queue.waiting` and :meth:`Queue.running` list it for operators.

    ``leased_until`` is the Unix time the lease of a running job runs out
    (None for a waiting one): past it, another worker may take the job.
    """

    job_id: str
    key: str
    payload: bytes
    leased_until: float | None = None


class Queue(ABC):
    """A reliable job queue for one namespace: a claimed job is leased, and comes back if its lease runs out."""

    #: Whether a worker in another process can claim what this process pushes.
    shared = True

    #: Whether offload's own workers claim from it (False for queues whose own workers run the jobs: RQ, Celery).
    claimable = True

    #: The namespace this queue was opened for.
    namespace: str = DEFAULT_NAMESPACE

    @abstractmethod
    def push(self, key: str, payload: bytes, limit: int | None = None) -> None:
        """Add a job for ``key`` carrying ``payload``, at the back of the queue.

        With ``limit``, refuse with :class:`~offload.errors.QueueFull` when
        that many jobs are already waiting; the check and the push are one step.
        A queue spread over shards caps each shard at its part of ``limit``, so
        it may refuse a little before ``limit`` jobs wait in all, never after.
        """

    @abstractmethod
    def claim(self, lease: float, wait: float) -> Claim | None:
        """Take the oldest available job of this namespace for ``lease`` seconds.

        Waits up to ``wait`` seconds for one (without busy polling where the
        engine can wake the worker) and returns None if none came. A job whose
        lease ran out without :meth:`ack` is available again. A payload that
        is not bytes in the engine is handed over as ``b""`` (the worker drops
        it as foreign), never as an error. A queue spread over shards (Redis
        Cluster) keeps each shard oldest first and takes from the shards in
        turn, so across shards "oldest" is approximate.
        """

    def claim_many(self, lease: float, wait: float, limit: int) -> list[Claim]:
        """Take up to ``limit`` available jobs, oldest first, each leased for ``lease`` seconds.

        Waits up to ``wait`` seconds for the first, as :meth:`claim`, then takes
        only what is there already; returns ``[]`` if none came. A worker that
        runs many jobs at once fills its free slots with one call. The default
        calls :meth:`claim` until it has ``limit`` jobs or finds none; engines
        that can take several jobs in one round trip override it.
        """
        first = self.claim(lease, wait) if limit > 0 else None
        claims = [] if first is None else [first]
        while claims and len(claims) < limit:
            more = self.claim(lease, 0)
            if more is None:
                break
            claims.append(more)
        return claims

    @abstractmethod
    def extend(self, claim: Claim, lease: float) -> bool:
        """Renew a running job's lease; return False if it was lost to another worker."""

    def extend_many(self, claims: Sequence[Claim], lease: float) -> list[bool]:
        """:meth:`extend` for each claim, in order: one heartbeat renews every job in flight.

        The default calls :meth:`extend` for each; engines that can renew them
        in one round trip override it.
        """
        return [self.extend(claim, lease) for claim in claims]

    @abstractmethod
    def ack(self, claim: Claim) -> None:
        """Remove a finished job for good."""

    def ack_many(self, claims: Sequence[Claim]) -> None:
        """:meth:`ack` each claim: a worker that ends many jobs at once acknowledges them together.

        A claim that no longer owns its job removes nothing, as with :meth:`ack`.
        The default calls :meth:`ack` for each; engines that can remove them
        in one round trip override it.
        """
        for claim in claims:
            self.ack(claim)

    @abstractmethod
    def release(self, claim: Claim, delay: float = 0.0) -> None:
        """Hand a job back, at the back of the queue, claimable again after ``delay`` seconds.

        A claim that no longer owns its job (its lease ran out and another
        worker took it) changes nothing.
        """

    @abstractmethod
    def bury(self, claim: Claim, error: str) -> None:
        """Take a job out of the queue for good, keeping it as a dead letter with ``error``."""

    @abstractmethod
    def dead(self, limit: int = 100) -> list[DeadJob]:
        """The most recent dead letters, newest first."""

    @abstractmethod
    def revive(self, job_id: str) -> bool:
        """Put a dead letter back at the back of the queue; False if there is no such dead letter."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counts of jobs: ``{"queued": n, "running": m, "dead": d}``."""

    def waiting(self, limit: int = 100) -> list[QueuedJob]:
        """Up to ``limit`` jobs waiting for a worker, the next one to be claimed first.

        For operators (the dashboard, the queue-age gauge), not for workers:
        it takes nothing. Jobs held back by a release delay may be left out.
        Every backend module overrides it; a queue that cannot list its jobs
        (one whose own workers run them: RQ, Celery) returns ``[]``.
        """
        return []

    def running(self, limit: int = 100) -> list[QueuedJob]:
        """Up to ``limit`` jobs a worker holds a live lease on, the lease that runs out first first.

        Each has ``leased_until``. As :meth:`waiting`: for operators; ``[]``
        from a queue that cannot tell.
        """
        return []

    @abstractmethod
    def namespaces(self) -> list[str]:
        """Every namespace with jobs (waiting, running or dead) in this store, sorted."""

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release connections; the queue may be used again afterwards."""


def check_namespace(namespace: str) -> str:
    """A namespace as backends use it in names: letters, digits, ``-`` and ``_``, at most 64 characters.

    >>> check_namespace("shop_v2")
    'shop_v2'
    """
    from offload.errors import ConfigurationError

    if (
        not isinstance(namespace, str)
        or not namespace
        or len(namespace) > 64
        or not namespace.replace("-", "").replace("_", "").isalnum()
        or not namespace.isascii()
    ):
        raise ConfigurationError(f"namespace {namespace!r}: use 1 to 64 letters, digits, '-' and '_'")
    return namespace


def as_bytes(value: object) -> bytes | None:
    """A value read back from an engine as bytes, or None for anything else (text, numbers, foreign types)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None


def matching(rule: ExpiryRule, entries: Sequence[tuple[str, IndexEntry]]) -> list[str]:
    """The keys of ``(key, entry)`` pairs that ``rule`` selects: the exact check after an engine's rough one."""
    return [key for key, entry in entries if rule.matches(entry)]
