"""The steps of one job, the same for every worker engine: begin, judge each try, store, acknowledge, bury.

:class:`~offload.worker.Worker` runs jobs on threads and
:class:`~offload.async_worker.AsyncWorker` runs them as tasks on one event
loop; both take every step here, so a job ends the same way whichever engine
ran it. The steps call the backend, which blocks: the thread engine calls
them on its job threads, the async engine in a small thread pool.

A job's key is locked while it runs (an atomic add of a running marker), so a
job delivered twice, after a lost lease or a re-enqueue, never runs twice at
once. If the app raises or answers with a failure status (any 5xx by
default), the job is retried with exponential backoff
(:meth:`JobSteps.attempts`), then the failure is stored for ``error_ttl``
seconds so clients stop polling. Each start of a job is counted in the
backend: a job started ``max_deliveries`` times without finishing (its worker
died each time, or its answer could not be stored) becomes a dead letter and
a failure is stored. What may be stored, and for whom, is
:mod:`offload.storable`'s decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from offload import freshness, tags
from offload.answers import own_answer
from offload.backends import Claim, IndexEntry, JobFinish, JobStart
from offload.core import Offloader, keys_of
from offload.errors import BackendUnavailable, CorruptRecord
from offload.keys import canonical_path, personal_key, variant_key
from offload.records import CachedResponse, PendingMarker, StoredRequest, VaryRecord, is_valid_header
from offload.replay import BodyTooLarge
from offload.settings import Settings
from offload.storable import Verdict, is_failure

log = logging.getLogger("offload.worker")

#: Exit code of a worker that stopped because more of its jobs were stuck in the app, past ``job_timeout``,
#: than it runs at once (threads that never returned, or tasks that ignored their cancellation).
EXIT_STUCK = 75


@dataclass(eq=False)
class Job:
    """A job in flight: what the heartbeat renews and the job timeout counts from."""

    claim: Claim
    started: float = field(default_factory=time.monotonic)
    request: StoredRequest | None = None
    epoch: int = 0
    abandoned: bool = False  # its outcome is being stored (or a 504 was): nothing else may end it


@dataclass(frozen=True, slots=True)
class Replayed:
    """What one try of a job gave: the app's answer and the tags collected while it ran, or the error it raised."""

    started: float  # Unix time the try began
    response: CachedResponse | None = None
    tags: tuple[str, ...] = ()
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait this long before the next try (an engine waits its own way, and may be stopped meanwhile)."""

    seconds: float


#: What :meth:`JobSteps.attempts` asks its engine for: a try of the app (None) or a wait.
Step = Backoff | None


class JobSteps:
    """Every step of a job that talks to the backend or decides its outcome, for one offloader."""

    def __init__(self, offloader: Offloader) -> None:
        self.offloader = offloader
        self.settings = offloader.settings
        self.jobs_done = 0
        self.store_failures: dict[str, int] = {}  # by key, in this process: a dead letter then stores a 502
        self._lock = threading.Lock()

    # -- beginning ------------------------------------------------------------------

    def begin(self, job: Job) -> bool:
        """Check a claimed job and take its key's lock; return whether the app is to be run for it.

        A job not in offload's format is dropped; a job whose key runs
        elsewhere is left leased; a copy of a job that already ran is
        acknowledged; a job started too often becomes a dead letter. For a job
        to run, ``job.request`` and ``job.epoch`` are set.
        """
        return self.begin_many([job])[0]

    def begin_many(self, jobs: Sequence[Job]) -> list[bool]:
        """:meth:`begin` each job, their locks taken in one call (:meth:`~offload.backends.Cache.start_counted_jobs`).

        Every rule of :meth:`begin` holds for each job; of two jobs of one
        key, the second finds the key running. If the backend cannot be
        reached, every job is handed back.
        """
        offloader, settings = self.offloader, self.settings
        requests = [self._decoded(job.claim) for job in jobs]
        valid = [(job, request) for job, request in zip(jobs, requests, strict=True) if request is not None]
        started = {id(job): False for job in jobs}
        marker, lease = PendingMarker("running", time.time(), 1).encode(), settings.lease
        starts = [
            JobStart(
                offloader.running_key(request.key),
                offloader.pending_key(request.key),
                offloader.response_key(request.key),
                marker,
                lease,
                offloader.attempts_key(request.key),
                settings.pending_ttl,
            )
            for _, request in valid
        ]
        try:
            results = offloader.cache.start_counted_jobs(starts) if starts else []
        except BackendUnavailable as error:
            for job, _ in valid:
                log.error("cannot start job %s (%s); it will be retried", job.claim.job_id, error)
                self.release(job.claim)
            return [False] * len(jobs)
        for (job, request), result in zip(valid, results, strict=True):
            started[id(job)] = self._started(job, request, *result)
        return [started[id(job)] for job in jobs]

    def _decoded(self, claim: Claim) -> StoredRequest | None:
        """The request a claimed job carries, or None for one not in offload's format (dropped here)."""
        offloader = self.offloader
        try:
            request = StoredRequest.decode(claim.payload)
            if (request.primary, request.key) != keys_of(request, offloader.policy) or request.key != claim.key:
                raise CorruptRecord("the job's keys do not match its request")
        except CorruptRecord as error:
            log.warning("dropping job %s: not in offload's format (%s)", claim.job_id, error)
            self.ack(claim)
            with contextlib.suppress(BackendUnavailable):  # let the next miss queue a good job
                offloader.cache.delete(offloader.pending_key(claim.key))
            return None
        return request

    def _started(
        self, job: Job, request: StoredRequest, taken: bool, existing: bytes | None, epoch: int, starts: int
    ) -> bool:
        """What a job's start found decides whether it runs: :meth:`begin`'s rules after the lock."""
        claim, key = job.claim, request.key
        if not taken:
            # Another worker runs this key, or died running it. Leave this copy
            # leased: it comes back after the lease and is dropped then if the
            # other run stored an answer, or run if the other worker is gone.
            log.debug("job %s for %s runs elsewhere; looking again after the lease", claim.job_id, key)
            return False
        if is_fresh(existing, request.enqueued):  # a copy of a job that already ran
            try:
                self.offloader.cache.finish_job(
                    self.offloader.response_key(key), None, 0, None, self.markers(key), epoch
                )
                self.offloader.queue.ack(claim)
            except BackendUnavailable as error:
                log.error("cannot start job %s (%s); it will be retried", claim.job_id, error)
                self.release(claim)
            return False
        job.request, job.epoch = request, epoch
        if starts > self.settings.max_deliveries:
            self.bury(job, starts)
            return False
        self.emit("job.started", request, attempt=starts)
        return True

    # -- trying ---------------------------------------------------------------------

    def attempts(self, request: StoredRequest) -> Generator[Step, Replayed | None, CachedResponse]:
        """Try the app until it gives an answer that is not a failure, or the tries run out.

        Sans I/O: it yields None when the engine is to replay the request
        (and send back a :class:`Replayed`), or a :class:`Backoff` to wait
        before the next try, and returns the answer to store.
        """
        settings = self.settings
        failure: CachedResponse | None = None
        for attempt in range(1, settings.max_attempts + 1):
            replayed = yield None
            if replayed is None:  # pragma: no cover - engines always send a try's outcome
                raise RuntimeError("the engine sent no outcome for a try")
            final, failure = self._judge(request, attempt, replayed)
            if final is not None:
                return final
            if attempt < settings.max_attempts:
                self.emit("job.retried", request, attempt=attempt)
                self.mark(request, PendingMarker("retrying", time.time(), attempt + 1))
                yield Backoff(settings.retry_backoff * 2 ** (attempt - 1))
                self.mark(request, PendingMarker("running", time.time(), attempt + 1))
        if failure is not None:  # the app's own failure page, kept for error_ttl
            return failure
        return self.failure(500, f"offload: the job failed {settings.max_attempts} times\n")

    def _judge(
        self, request: StoredRequest, attempt: int, replayed: Replayed
    ) -> tuple[CachedResponse | None, CachedResponse | None]:
        """One try's outcome: (the answer to store now, or None to try again; the failure to store if none comes)."""
        settings = self.settings
        error, response = replayed.error, replayed.response
        if isinstance(error, BodyTooLarge):
            log.error("%s: %s; storing a 502 for %ss", describe(request), error, settings.error_ttl)
            self.emit("job.failed", request, attempt=attempt, status=502, error=str(error))
            return self.failure(502, f"offload: the answer exceeds max_body ({error.limit} bytes)\n"), None
        if error is not None or response is None:
            log.error(
                "%s failed (attempt %d of %d)",
                describe(request),
                attempt,
                settings.max_attempts,
                exc_info=(type(error), error, error.__traceback__) if error is not None else None,
            )
            self.emit("job.failed", request, attempt=attempt, status=500, error=f"{type(error).__name__}: {error}")
            return None, None
        invalid = [name for name, value in response.headers if not is_valid_header(name, value)]
        if invalid:
            log.error("%s: the app sent headers that cannot be sent on: %r", describe(request), invalid)
            self.emit("job.failed", request, attempt=attempt, status=502, error="invalid header")
            return self.failure(502, "offload: the app answered with a header that cannot be sent on\n"), None
        duration = time.time() - replayed.started
        log.info("%s -> %d in %.3fs", describe(request), response.status, duration)
        headers, labels = tags.from_headers(response.headers)
        response = dataclasses.replace(
            # Made when the app answered: its lifetimes and Age count from then, as from a Date header.
            response,
            headers=headers,
            created=replayed.started + duration,
            duration=duration,
            tags=(*labels, *replayed.tags),
        )
        if not is_failure(response, settings):
            self.emit("job.succeeded", request, attempt=attempt, status=response.status, seconds=duration)
            return response, None
        self.emit("job.failed", request, attempt=attempt, status=response.status, seconds=duration)
        return None, dataclasses.replace(response, failed=True)

    def failure(self, status: int, message: str) -> CachedResponse:
        """One of offload's own failure answers, kept for ``error_ttl``."""
        answer = own_answer(status, int(self.settings.error_ttl), message.encode())
        return dataclasses.replace(answer, created=time.time(), failed=True)

    # -- ending ---------------------------------------------------------------------

    def claim_outcome(self, job: Job) -> bool:
        """Take the right to end ``job``: False if it was ended already (a 504 stored past its timeout)."""
        with self._lock:
            if job.abandoned:
                return False
            job.abandoned = True
            return True

    def conclude(self, job: Job, response: CachedResponse, ack: Callable[[Claim], None] | None = None) -> None:
        """Store the outcome of a job and acknowledge it; if the store fails, hand it back with a backoff.

        ``ack`` replaces the queue's own, for an engine that acknowledges
        many jobs together (:meth:`~offload.backends.Queue.ack_many`): a job
        whose acknowledgement is lost comes back after its lease and is
        dropped then, its answer being newer than the job.
        """
        request, claim = job.request, job.claim
        if request is None:  # pragma: no cover - set before any outcome exists
            return
        try:
            shared = self.store(request, response, job.epoch)
            (ack or self.offloader.queue.ack)(claim)
        except BackendUnavailable as error:
            self._store_failed(job, error)
            return
        self._stored(request, response, shared)

    def conclude_many(self, outcomes: Sequence[tuple[Job, CachedResponse]]) -> None:
        """:meth:`conclude` each job: their answers stored in one call, then acknowledged in one.

        The store of each is decided as :meth:`store` decides it; the jobs whose
        store takes more than one step (a ``Vary`` learned) are stored on their
        own, after the others. A job whose store fails is handed back with its
        backoff, as :meth:`conclude` does; one whose acknowledgement is lost
        comes back after its lease and is dropped then.
        """
        batched: list[tuple[Job, StoredRequest, CachedResponse, bool, JobFinish]] = []
        alone: list[tuple[Job, StoredRequest, CachedResponse, bool, list[JobFinish]]] = []
        for job, response in outcomes:
            request = job.request
            if request is None:  # pragma: no cover - set before any outcome exists
                continue
            try:
                shared, finishes = self.storing(request, response, job.epoch)
            except BackendUnavailable as error:  # the read of a failed refresh's good copy
                self._store_failed(job, error)
                continue
            if len(finishes) == 1:
                batched.append((job, request, response, shared, finishes[0]))
            else:
                alone.append((job, request, response, shared, finishes))
        stored: list[tuple[Job, StoredRequest, CachedResponse, bool]] = []
        try:
            if batched:
                self.offloader.cache.finish_jobs([finish for *_, finish in batched])
            stored = [(job, request, response, shared) for job, request, response, shared, _ in batched]
        except BackendUnavailable as error:
            for job, *_ in batched:
                self._store_failed(job, error)
        for job, request, response, shared, finishes in alone:
            try:
                self._finish(finishes)
                stored.append((job, request, response, shared))
            except BackendUnavailable as error:
                self._store_failed(job, error)
        if not stored:
            return
        try:
            self.offloader.queue.ack_many([job.claim for job, *_ in stored])
        except BackendUnavailable as error:
            log.error("cannot acknowledge %d job(s) (%s)", len(stored), error)
        for _, request, response, shared in stored:
            self._stored(request, response, shared)

    def _stored(self, request: StoredRequest, response: CachedResponse, shared: bool) -> None:
        """A job's answer is in place: count it and tell."""
        self.jobs_done += 1
        self.store_failures.pop(request.key, None)
        waited = time.time() - request.enqueued
        self.emit("job.stored", request, status=response.status, shared=shared, waited=waited)

    def _store_failed(self, job: Job, error: BackendUnavailable) -> None:
        """A job's answer could not be stored: unlock its key and hand it back, to run again after a backoff."""
        request, claim = job.request, job.claim
        if request is None:  # pragma: no cover - set before any outcome exists
            return
        self.emit("job.store_failed", request, error=str(error))
        failures = self.store_failures[request.key] = self.store_failures.get(request.key, 0) + 1
        delay = min(60.0, self.settings.retry_backoff * 2 ** (failures - 1))
        log.error(
            "cannot store the answer of job %s (%s); it runs again in %.1fs at the back of the queue",
            claim.job_id,
            error,
            delay,
        )
        with contextlib.suppress(BackendUnavailable):
            self.offloader.cache.delete(self.offloader.running_key(request.key))
        self.release(claim, delay=delay)

    def time_out(self, job: Job) -> None:
        """Store a 504 for a job past ``job_timeout`` (the caller took the right to end it), or hand it back."""
        request = job.request
        what = describe(request) if request is not None else f"job {job.claim.job_id}"
        log.error("%s ran past job_timeout=%ss: storing a 504", what, self.settings.job_timeout)
        if request is None:
            self.release(job.claim)
            return
        self.emit("job.timed_out", request, seconds=time.monotonic() - job.started)
        self.conclude(job, self.failure(504, f"offload: the job ran past {self.settings.job_timeout}s\n"))

    def store(self, request: StoredRequest, response: CachedResponse, epoch: int) -> bool:
        """Store an answer where and for as long as it may be kept, then drop the job's markers.

        Returns whether the answer is shared (False for one meant for its
        client only, or none stored). The steps are :meth:`storing`'s, taken
        in turn.
        """
        shared, finishes = self.storing(request, response, epoch)
        self._finish(finishes)
        return shared

    def _finish(self, finishes: Sequence[JobFinish]) -> None:
        """Make a job's :meth:`~offload.backends.Cache.finish_job` calls in turn, the answer's first."""
        cache = self.offloader.cache
        for finish in finishes:
            cache.finish_job(
                finish.answer, finish.value, finish.ttl, finish.index, finish.done, finish.since, finish.restamp
            )

    def storing(self, request: StoredRequest, response: CachedResponse, epoch: int) -> tuple[bool, list[JobFinish]]:
        """How to store an answer: whether it is shared, and its :meth:`~offload.backends.Cache.finish_job` calls.

        Whether it is shared and under which key is :mod:`offload.storable`'s
        decision, how long it lives :mod:`offload.freshness`'s. A failure does
        not replace a good answer that may still be served if a refresh fails
        (``stale_if_error``): that answer is kept, marked so that no refresh is
        queued again before ``error_ttl`` (the one step here that reads the
        backend). The calls are data, so that an engine can make many jobs'
        calls in one round trip (:meth:`~offload.backends.Cache.finish_jobs`).
        """
        offloader, settings, policy = self.offloader, self.settings, self.offloader.policy
        target = request.target
        path = canonical_path(target.full_path)
        key, done = request.key, self.markers(request.key)
        now = time.time()
        if response.failed:
            good = self._keep_good_copy(request, now, epoch)
            if good is not None:
                return True, [good]
        # offload's own failures say no-store to proxies, yet every poller of the key must get them
        verdict = policy.judge(response, request, settings) if response.from_app else Verdict()
        vary: VaryRecord | None = None  # stored under the URL's key once the answer is in place
        if verdict.learn and not response.failed:
            learned = tuple(sorted({*request.learned, *verdict.learn}))
            vary = VaryRecord(learned)
            if any(name in request.present for name in verdict.learn):
                # Computed without a header this client sent and the app varies on: not its
                # answer. Its next request is keyed on that header and queues a job that has it.
                log.info("%s varies on %s: learned; computing it again with them", describe(request), verdict.learn)
                return False, [self._learn(request, vary, path, done, epoch)]
            key = variant_key(request.primary, policy.key_headers(learned, request.header))
            if request.personal:
                key = personal_key(key, request.owner)
        life = policy.lifetimes(response, request, settings, now)
        markers = () if vary is not None else done  # with a Vary learned, they go with the URL's record
        learn = [] if vary is None else [self._learn(request, vary, path, done, epoch)]
        if verdict.private or not life.reusable:
            reason = verdict.reason or "its lifetime is zero"
            log.debug("%s is kept for one delivery only: %s", describe(request), reason)
            stored = dataclasses.replace(
                response, private=True, expires=response.created + settings.private_ttl, owner=request.owner
            )
            answer = JobFinish(offloader.response_key(key), stored.encode(), settings.private_ttl, None, markers, epoch)
            return False, [answer, *learn]
        stored = dataclasses.replace(
            response,
            headers=freshness.with_validator(response) if settings.etags and not response.failed else response.headers,
            expires=response.created + life.fresh,
            stale=life.stale,
            stale_if_error=life.stale_if_error,
            request=request.encode() if policy.keeps_request(request) else b"",
            url=url_of(request),
        )
        index = IndexEntry(path, target.query.decode("latin-1"), failed=response.failed, tags=response.tags)
        kept = max(1.0, response.created + life.kept - now)
        answer = JobFinish(
            offloader.response_key(key), stored.encode(), kept, index, markers, epoch, freshness.mark_stale
        )
        return True, [answer, *learn]

    def _learn(
        self, request: StoredRequest, vary: VaryRecord, path: str, done: tuple[str, ...], epoch: int
    ) -> JobFinish:
        """Store the headers a URL's answers vary on under its key, and end the job.

        It comes after the answer is in place: requests waiting on the URL's
        key are woken by it, and find the answer of their variant at once.
        """
        ttl = self.settings.ttl_for(path)
        return JobFinish(self.offloader.response_key(request.primary), vary.encode(), ttl, None, done, epoch)

    def _keep_good_copy(self, request: StoredRequest, now: float, epoch: int) -> JobFinish | None:
        """After a failed refresh: keep the stored answer if it may still be served, marked as cooling down."""
        offloader, cache = self.offloader, self.offloader.cache
        answer_key = offloader.response_key(request.key)
        data = cache.get(answer_key)
        if data is None:
            return None
        try:
            good = CachedResponse.decode(data)
        except CorruptRecord:
            return None
        if not freshness.keeps_for_errors(good, now):
            return None
        log.warning("%s failed; serving the last good answer (stale-if-error)", describe(request))
        cooled = dataclasses.replace(good, retry_at=now + self.settings.error_ttl)
        path = canonical_path(request.target.full_path)
        index = IndexEntry(path, request.target.query.decode("latin-1"), tags=good.tags)
        ttl = max(1.0, good.expires + good.stale_if_error - now)
        # Stored as a job's answer, so that requests waiting for the refresh are woken and served it.
        return JobFinish(
            answer_key, cooled.encode(), ttl, index, self.markers(request.key), epoch, freshness.mark_stale
        )

    def markers(self, key: str) -> tuple[str, ...]:
        """The keys a finished job removes: its pending and running markers and its start count."""
        offloader = self.offloader
        return (offloader.pending_key(key), offloader.running_key(key), offloader.attempts_key(key))

    def bury(self, job: Job, starts: int) -> None:
        """A job started too often without finishing: keep it as a dead letter and store a failure."""
        request, claim = job.request, job.claim
        if request is None:  # pragma: no cover - set before bury is called
            return
        store_failed = request.key in self.store_failures
        reason = f"started {starts - 1} times without finishing: " + (
            "its answer could not be stored" if store_failed else "its worker stopped each time"
        )
        log.error("%s: %s; keeping it as a dead letter", describe(request), reason)
        self.emit("job.dead_lettered", request, error=reason, attempt=starts)
        failure = self.failure(502 if store_failed else 500, f"offload: the job was {reason}\n")
        try:
            self.store(request, failure, job.epoch)
            self.offloader.queue.bury(claim, reason)
            self.store_failures.pop(request.key, None)
        except BackendUnavailable as error:
            log.error("cannot bury job %s (%s); it comes back after its lease", claim.job_id, error)

    # -- leases -----------------------------------------------------------------------

    def renew(self, jobs: Sequence[Job]) -> None:
        """Renew the queue leases of ``jobs`` in one call, and their running and pending markers in another."""
        if not jobs:
            return
        offloader, lease = self.offloader, self.settings.lease
        try:
            renewed = offloader.queue.extend_many([job.claim for job in jobs], lease)
        except BackendUnavailable as error:
            log.error("cannot renew the leases of %d job(s) (%s)", len(jobs), error)
            return
        for job, kept in zip(jobs, renewed, strict=True):
            if not kept:
                log.warning("job %s lost its lease; another worker may run it", job.claim.job_id)
                if job.request is not None:
                    self.emit("job.lease_lost", job.request)
        markers = [
            marker
            for job in jobs
            for marker in (offloader.running_key(job.claim.key), offloader.pending_key(job.claim.key))
        ]
        try:
            offloader.cache.touch_many(markers, lease)
        except BackendUnavailable as error:
            log.error("cannot renew the markers of %d job(s) (%s)", len(jobs), error)

    def hand_back(self, jobs: Sequence[Job]) -> None:
        """Hand running jobs back at once (a second SIGTERM), their keys unlocked."""
        for job in jobs:
            log.warning("handing back job %s", job.claim.job_id)
            self.release(job.claim, self.offloader.running_key(job.claim.key))

    def mark(self, request: StoredRequest, marker: PendingMarker) -> None:
        """Say where the job stands, for status monitors; a failure to say so changes nothing else."""
        with contextlib.suppress(BackendUnavailable):
            self.offloader.cache.set(self.offloader.pending_key(request.key), marker.encode(), self.settings.lease)

    def emit(self, name: str, request: StoredRequest, **fields: Any) -> None:
        events = self.offloader.events
        if events.listeners:
            path = request.target.full_path.decode("latin-1")
            events.emit(name, key=request.key, path=path, trace=request.trace, **fields)

    def ack(self, claim: Claim) -> None:
        try:
            self.offloader.queue.ack(claim)
        except BackendUnavailable as error:
            log.error("cannot acknowledge job %s (%s)", claim.job_id, error)

    def release(self, claim: Claim, running: str | None = None, delay: float = 0.0) -> None:
        """Hand a job back to the queue (after ``delay``), first unlocking its key if ``running`` is given."""
        try:
            if running is not None:
                self.offloader.cache.delete(running)
            self.offloader.queue.release(claim, delay)
        except BackendUnavailable as error:
            log.error("cannot hand back job %s (%s); its lease will run out", claim.job_id, error)


def url_of(request: StoredRequest) -> str:
    """The path and query of a request, as a status monitor sends a client back to it."""
    target = request.target
    if target.raw_path is None:
        path = canonical_path(target.full_path)
    else:  # as sent, its escapes kept, anything unsafe in a header escaped too
        path = quote(target.raw_path, "/:@!$&'()*+,;=-._~%")
    return f"{path}?{target.query.decode('latin-1')}" if target.query else path


def describe(request: StoredRequest) -> str:
    """``GET scheme://host/path?query``, for logs."""
    target = request.target
    query = f"?{target.query.decode('latin-1')}" if target.query else ""
    return f"GET {target.scheme}://{target.host}{target.full_path.decode('latin-1')}{query}"


def is_fresh(data: bytes | None, enqueued: float) -> bool:
    """Whether a stored answer was computed after a job was queued, so the job has nothing left to do."""
    if data is None:
        return False
    try:
        found = CachedResponse.decode(data)
    except CorruptRecord:
        return False
    return not found.private and found.created >= enqueued


class Engine:
    """What every worker engine has: the offloader and its job steps, how many jobs run at once, the stop flags."""

    def __init__(self, offloader: Offloader, *, concurrency: int, burst: bool, claim_wait: float) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.offloader = offloader
        self.steps = JobSteps(offloader)
        self.concurrency = concurrency
        self.burst = burst
        self.claim_wait = claim_wait
        self.stopping = threading.Event()  # finish running jobs, claim no more
        self.aborting = threading.Event()  # hand running jobs back now

    @property
    def settings(self) -> Settings:
        """The settings the jobs run with (the offloader's, unless replaced, as a test kit does)."""
        return self.steps.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.steps.settings = settings

    @property
    def jobs_done(self) -> int:
        """How many jobs this worker ran to a stored answer."""
        return self.steps.jobs_done

    def stop(self, graceful: bool = True) -> None:
        """Stop claiming; unless ``graceful`` (or stopped before), hand running jobs back at once."""
        if self.stopping.is_set() or not graceful:
            self.aborting.set()
        self.stopping.set()


def install_signal_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call ``stop``, which only sets flags: the first stops claiming, the second hands back."""

    def handle(signum: int, frame: Any) -> None:
        stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


def queue_backoff(error: BackendUnavailable, failures: int) -> float:
    """How long to wait after ``failures`` claims in a row found the queue unreachable; logs it."""
    delay = min(30.0, 0.5 * float(2 ** min(failures, 6)))
    log.error("cannot reach the queue (%s); retrying in %.1fs", error, delay)
    return delay
