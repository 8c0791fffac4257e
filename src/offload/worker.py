"""The worker: claim a job, replay it through the app, store the answer, acknowledge.

A job's key is locked while it runs (an atomic add of a running marker), so a
job delivered twice, after a lost lease or a re-enqueue, never runs twice at
once. A heartbeat renews the queue lease, the running marker and the pending
marker of every job in flight, so a job longer than the lease is not taken
for dead, but only up to ``job_timeout``: past it, a 504 is stored as the
job's failure, the job is acknowledged, and the thread stuck in the app is
abandoned and replaced by a fresh one (Python cannot stop a thread; when more
threads are stuck than the worker runs, it exits so that its supervisor
starts a fresh process).

If the app raises or answers with a failure status (any 5xx by default), the
job is retried with exponential backoff, then the failure is stored for
``error_ttl`` seconds so clients stop polling. Each start of a job is counted
in the backend: a job started ``max_deliveries`` times without finishing
(its worker died each time, or its answer could not be stored) becomes a
dead letter and a failure is stored. What may be stored, and for whom, is
:mod:`offload.storable`'s decision. Signal handlers only set flags: the first
SIGTERM or SIGINT lets running jobs finish and stops claiming; the second
hands them back at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from offload import freshness, tags
from offload.answers import own_answer
from offload.backends import Claim, IndexEntry
from offload.core import Offloader, keys_of
from offload.errors import BackendUnavailable, CorruptRecord
from offload.keys import canonical_path, personal_key, variant_key
from offload.records import CachedResponse, PendingMarker, StoredRequest, VaryRecord, is_valid_header
from offload.replay import BodyTooLarge
from offload.storable import Verdict, is_failure

log = logging.getLogger("offload.worker")

#: Calls the app with a stored request and returns its whole answer.
Replayer = Callable[[StoredRequest, int], CachedResponse]

#: Exit code of a worker that stopped because too many of its threads were stuck in the app.
EXIT_STUCK = 75


@dataclass(eq=False)
class Job:
    """A job in flight on one thread: what the heartbeat renews and the watchdog times."""

    claim: Claim
    started: float = field(default_factory=time.monotonic)
    request: StoredRequest | None = None
    epoch: int = 0
    abandoned: bool = False


class Worker:
    """Runs jobs from the offloader's queue through ``replay``, in ``concurrency`` threads.

    >>> from offload.core import Offloader
    >>> offloader = Offloader(url="memory://doctest-worker")
    >>> worker = Worker(offloader, lambda request, limit: own_answer(200, body=b"hi"), burst=True)
    >>> worker.run(install_signals=False)
    0
    """

    def __init__(
        self,
        offloader: Offloader,
        replay: Replayer,
        *,
        concurrency: int = 1,
        burst: bool = False,
        claim_wait: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.offloader = offloader
        self.settings = offloader.settings
        self.replay = replay
        self.concurrency = concurrency
        self.burst = burst
        self.claim_wait = claim_wait
        self.stopping = threading.Event()  # finish running jobs, claim no more
        self.aborting = threading.Event()  # hand running jobs back now
        self._finished = threading.Event()  # run() returned: the heartbeat stops
        self.jobs_done = 0
        self.exit_code = 0
        self._jobs: dict[threading.Thread, Job] = {}
        self._threads: list[threading.Thread] = []
        self._abandoned: set[threading.Thread] = set()
        self._store_failures: dict[str, int] = {}  # by key, in this process: a dead letter then stores a 502
        self._lock = threading.Lock()

    # -- running ---------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        """Process jobs until stopped (or, with ``burst``, until the queue is empty); return an exit code."""
        if install_signals:
            self._install_signal_handlers()
        for _ in range(self.concurrency):
            self._start_thread()
        heartbeat = threading.Thread(target=self._heartbeat, name="offload-heartbeat", daemon=True)
        heartbeat.start()
        try:
            while self._working():
                if self.aborting.wait(0.2):
                    self._hand_back_all()
                    return 1
            self.stopping.set()
            return self.exit_code
        finally:
            self._finished.set()
            heartbeat.join(5)

    def _working(self) -> bool:
        with self._lock:
            return any(thread.is_alive() for thread in self._threads if thread not in self._abandoned)

    def _start_thread(self) -> None:
        with self._lock:
            number = len(self._threads)
            thread = threading.Thread(target=self._loop, name=f"offload-worker-{number}", daemon=True)
            self._threads.append(thread)
        thread.start()

    def stop(self, graceful: bool = True) -> None:
        """Stop claiming; unless ``graceful``, hand running jobs back at once."""
        if self.stopping.is_set() or not graceful:
            self.aborting.set()
        self.stopping.set()

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, frame: Any) -> None:
            self.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handle)

    def _loop(self) -> None:
        me = threading.current_thread()
        failures = 0
        while not self.stopping.is_set() and me not in self._abandoned:
            try:
                claim = self.offloader.queue.claim(self.settings.lease, 0.2 if self.burst else self.claim_wait)
            except BackendUnavailable as error:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.error("cannot reach the queue (%s); retrying in %.1fs", error, delay)
                self.stopping.wait(delay)
                continue
            failures = 0
            if claim is None:
                if self.burst:
                    return
                continue
            job = Job(claim)
            with self._lock:
                self._jobs[me] = job
            try:
                self.process(claim, job)
            except Exception:
                # An unexpected error (a driver's, or a bug) must not end this thread and
                # leave the worker running with fewer threads: the job stays leased and
                # comes back after its lease; this thread pauses and claims again.
                log.exception("job %s failed unexpectedly; it comes back after its lease", claim.job_id)
                self.stopping.wait(1.0)
            finally:
                with self._lock:
                    if self._jobs.get(me) is job:
                        del self._jobs[me]

    # -- one job ---------------------------------------------------------------

    def process(self, claim: Claim, job: Job | None = None) -> None:
        """Run one claimed job to its end: an answer stored, the job handed back, or a dead letter."""
        job = job or Job(claim)
        offloader, queue, cache = self.offloader, self.offloader.queue, self.offloader.cache
        try:
            request = StoredRequest.decode(claim.payload)
            if (request.primary, request.key) != keys_of(request, offloader.policy) or request.key != claim.key:
                raise CorruptRecord("the job's keys do not match its request")
        except CorruptRecord as error:
            log.warning("dropping job %s: not in offload's format (%s)", claim.job_id, error)
            self._ack(claim)
            with contextlib.suppress(BackendUnavailable):  # let the next miss queue a good job
                cache.delete(offloader.pending_key(claim.key))
            return
        key = request.key
        running, pending, answer = offloader.running_key(key), offloader.pending_key(key), offloader.response_key(key)
        try:
            marker = PendingMarker("running", time.time(), 1).encode()
            taken, existing, epoch = cache.start_job(running, pending, answer, marker, self.settings.lease)
            if not taken:
                # Another worker runs this key, or died running it. Leave this copy
                # leased: it comes back after the lease and is dropped then if the
                # other run stored an answer, or run if the other worker is gone.
                log.debug("job %s for %s runs elsewhere; looking again after the lease", claim.job_id, key)
                return
            if _is_fresh(existing, request.enqueued):  # a copy of a job that already ran
                cache.finish_job(answer, None, 0, None, self._markers(key), epoch)
                queue.ack(claim)
                return
            starts = cache.incr(offloader.attempts_key(key), self.settings.pending_ttl)
        except BackendUnavailable as error:
            log.error("cannot start job %s (%s); it will be retried", claim.job_id, error)
            self._release(claim)
            return
        job.request, job.epoch = request, epoch
        if starts > self.settings.max_deliveries:
            self._bury(job, starts)
            return
        self._emit("job.started", request, attempt=starts)
        response = self._run_with_retries(request)
        if response is None:  # stopped during a retry: hand the job back
            self._release(claim, running)
            return
        with self._lock:
            if job.abandoned:  # the watchdog stored a 504 and acknowledged the job meanwhile
                return
            job.abandoned = True  # from here on the watchdog leaves this job alone
        self._conclude(job, response)

    def _conclude(self, job: Job, response: CachedResponse) -> None:
        """Store the outcome of a job and acknowledge it; if the store fails, hand it back with a backoff."""
        request, claim = job.request, job.claim
        if request is None:  # pragma: no cover - set before any outcome exists
            return
        try:
            shared = self._store(request, response, job.epoch)
            self.offloader.queue.ack(claim)
            self.jobs_done += 1
            self._store_failures.pop(request.key, None)
            waited = time.time() - request.enqueued
            self._emit("job.stored", request, status=response.status, shared=shared, waited=waited)
        except BackendUnavailable as error:
            self._emit("job.store_failed", request, error=str(error))
            failures = self._store_failures[request.key] = self._store_failures.get(request.key, 0) + 1
            delay = min(60.0, self.settings.retry_backoff * 2 ** (failures - 1))
            log.error(
                "cannot store the answer of job %s (%s); it runs again in %.1fs at the back of the queue",
                claim.job_id,
                error,
                delay,
            )
            with contextlib.suppress(BackendUnavailable):
                self.offloader.cache.delete(self.offloader.running_key(request.key))
            self._release(claim, delay=delay)

    def _store(self, request: StoredRequest, response: CachedResponse, epoch: int) -> bool:
        """Store an answer where and for as long as it may be kept, then drop the job's markers.

        Whether it is shared and under which key is :mod:`offload.storable`'s
        decision, how long it lives :mod:`offload.freshness`'s. A failure does
        not replace a good answer that may still be served if a refresh fails
        (``stale_if_error``): that answer is kept, marked so that no refresh is
        queued again before ``error_ttl``. Returns whether the answer is
        shared (False for one meant for its client only, or none stored).
        """
        offloader, settings, cache, policy = self.offloader, self.settings, self.offloader.cache, self.offloader.policy
        target = request.target
        path = canonical_path(target.full_path)
        key, done = request.key, self._markers(request.key)
        now = time.time()
        if response.failed and self._keep_good_copy(request, now, epoch):
            return True
        # offload's own failures say no-store to proxies, yet every poller of the key must get them
        verdict = policy.judge(response, request, settings) if response.from_app else Verdict()
        vary: VaryRecord | None = None  # stored under the URL's key once the answer is in place
        if verdict.learn and not response.failed:
            learned = tuple(sorted({*request.learned, *verdict.learn}))
            vary = VaryRecord(learned)
            if any(name in request.present for name in verdict.learn):
                # Computed without a header this client sent and the app varies on: not its
                # answer. Its next request is keyed on that header and queues a job that has it.
                log.info("%s varies on %s: learned; computing it again with them", _describe(request), verdict.learn)
                self._learn(request, vary, path, done, epoch)
                return False
            key = variant_key(request.primary, policy.key_headers(learned, request.header))
            if request.personal:
                key = personal_key(key, request.owner)
        life = policy.lifetimes(response, request, settings, now)
        markers = () if vary is not None else done  # with a Vary learned, they go with the URL's record
        if verdict.private or not life.reusable:
            reason = verdict.reason or "its lifetime is zero"
            log.debug("%s is kept for one delivery only: %s", _describe(request), reason)
            stored = dataclasses.replace(
                response, private=True, expires=response.created + settings.private_ttl, owner=request.owner
            )
            cache.finish_job(offloader.response_key(key), stored.encode(), settings.private_ttl, None, markers, epoch)
            if vary is not None:
                self._learn(request, vary, path, done, epoch)
            return False
        stored = dataclasses.replace(
            response,
            headers=freshness.with_validator(response) if settings.etags and not response.failed else response.headers,
            expires=response.created + life.fresh,
            stale=life.stale,
            stale_if_error=life.stale_if_error,
            request=request.encode() if policy.keeps_request(request) else b"",
            url=_url(request),
        )
        index = IndexEntry(path, target.query.decode("latin-1"), failed=response.failed, tags=response.tags)
        kept = max(1.0, response.created + life.kept - now)
        cache.finish_job(
            offloader.response_key(key), stored.encode(), kept, index, markers, epoch, freshness.mark_stale
        )
        if vary is not None:
            self._learn(request, vary, path, done, epoch)
        return True

    def _learn(self, request: StoredRequest, vary: VaryRecord, path: str, done: tuple[str, ...], epoch: int) -> None:
        """Store the headers a URL's answers vary on under its key, and end the job.

        It comes after the answer is in place: requests waiting on the URL's
        key are woken by it, and find the answer of their variant at once.
        """
        cache = self.offloader.cache
        ttl = self.settings.ttl_for(path)
        cache.finish_job(self.offloader.response_key(request.primary), vary.encode(), ttl, None, done, epoch)

    def _keep_good_copy(self, request: StoredRequest, now: float, epoch: int) -> bool:
        """After a failed refresh: keep the stored answer if it may still be served, marked as cooling down."""
        offloader, cache = self.offloader, self.offloader.cache
        answer_key = offloader.response_key(request.key)
        data = cache.get(answer_key)
        if data is None:
            return False
        try:
            good = CachedResponse.decode(data)
        except CorruptRecord:
            return False
        if not freshness.keeps_for_errors(good, now):
            return False
        log.warning("%s failed; serving the last good answer (stale-if-error)", _describe(request))
        cooled = dataclasses.replace(good, retry_at=now + self.settings.error_ttl)
        path = canonical_path(request.target.full_path)
        index = IndexEntry(path, request.target.query.decode("latin-1"), tags=good.tags)
        ttl = max(1.0, good.expires + good.stale_if_error - now)
        # Stored as a job's answer, so that requests waiting for the refresh are woken and served it.
        cache.finish_job(
            answer_key, cooled.encode(), ttl, index, self._markers(request.key), epoch, freshness.mark_stale
        )
        return True

    def _markers(self, key: str) -> tuple[str, ...]:
        offloader = self.offloader
        return (offloader.pending_key(key), offloader.running_key(key), offloader.attempts_key(key))

    def _run_with_retries(self, request: StoredRequest) -> CachedResponse | None:
        """Replay until the app gives an answer that is not a failure, or the tries run out; None if stopped."""
        settings = self.settings
        failure: CachedResponse | None = None
        for attempt in range(1, settings.max_attempts + 1):
            started = time.time()
            try:
                with tags.collecting() as tagged:
                    response = self.replay(request, settings.max_body)
            except BodyTooLarge as error:
                log.error("%s: %s; storing a 502 for %ss", _describe(request), error, settings.error_ttl)
                self._emit("job.failed", request, attempt=attempt, status=502, error=str(error))
                return self._failure(502, f"offload: the answer exceeds max_body ({error.limit} bytes)\n")
            except Exception as error:
                log.exception("%s failed (attempt %d of %d)", _describe(request), attempt, settings.max_attempts)
                self._emit("job.failed", request, attempt=attempt, status=500, error=f"{type(error).__name__}: {error}")
                failure = None
            else:
                invalid = [name for name, value in response.headers if not is_valid_header(name, value)]
                if invalid:
                    log.error("%s: the app sent headers that cannot be sent on: %r", _describe(request), invalid)
                    self._emit("job.failed", request, attempt=attempt, status=502, error="invalid header")
                    return self._failure(502, "offload: the app answered with a header that cannot be sent on\n")
                duration = time.time() - started
                log.info("%s -> %d in %.3fs", _describe(request), response.status, duration)
                headers, labels = tags.from_headers(response.headers)
                response = dataclasses.replace(
                    # Made when the app answered: its lifetimes and Age count from then, as from a Date header.
                    response,
                    headers=headers,
                    created=started + duration,
                    duration=duration,
                    tags=(*labels, *tagged),
                )
                if not is_failure(response, settings):
                    self._emit("job.succeeded", request, attempt=attempt, status=response.status, seconds=duration)
                    return response
                self._emit("job.failed", request, attempt=attempt, status=response.status, seconds=duration)
                failure = dataclasses.replace(response, failed=True)
            if attempt < settings.max_attempts:
                self._emit("job.retried", request, attempt=attempt)
                self._mark(request, PendingMarker("retrying", time.time(), attempt + 1))
                if self.aborting.wait(settings.retry_backoff * 2 ** (attempt - 1)):
                    return None
                self._mark(request, PendingMarker("running", time.time(), attempt + 1))
        if failure is not None:  # the app's own failure page, kept for error_ttl
            return failure
        return self._failure(500, f"offload: the job failed {settings.max_attempts} times\n")

    def _failure(self, status: int, message: str) -> CachedResponse:
        answer = own_answer(status, int(self.settings.error_ttl), message.encode())
        return dataclasses.replace(answer, created=time.time(), failed=True)

    def _bury(self, job: Job, starts: int) -> None:
        """A job started too often without finishing: keep it as a dead letter and store a failure."""
        request, claim = job.request, job.claim
        if request is None:  # pragma: no cover - set before _bury is called
            return
        store_failed = request.key in self._store_failures
        reason = f"started {starts - 1} times without finishing: " + (
            "its answer could not be stored" if store_failed else "its worker stopped each time"
        )
        log.error("%s: %s; keeping it as a dead letter", _describe(request), reason)
        self._emit("job.dead_lettered", request, error=reason, attempt=starts)
        failure = self._failure(502 if store_failed else 500, f"offload: the job was {reason}\n")
        try:
            self._store(request, failure, job.epoch)
            self.offloader.queue.bury(claim, reason)
            self._store_failures.pop(request.key, None)
        except BackendUnavailable as error:
            log.error("cannot bury job %s (%s); it comes back after its lease", claim.job_id, error)

    # -- leases and the watchdog ----------------------------------------------------

    def _heartbeat(self) -> None:
        """Renew the leases of running jobs every third of a lease; time them out past ``job_timeout``."""
        interval = min(1.0, self.settings.lease / 3)
        last_renewal = time.monotonic()
        while not self._finished.wait(interval):
            with self._lock:
                jobs = [(thread, job) for thread, job in self._jobs.items() if not job.abandoned]
            now = time.monotonic()
            for thread, job in jobs:
                if now - job.started > self.settings.job_timeout:
                    self._time_out(thread, job)
            if now - last_renewal >= self.settings.lease / 3:
                last_renewal = now
                self._renew([job for _, job in jobs if not job.abandoned])

    def _renew(self, jobs: list[Job]) -> None:
        offloader, lease = self.offloader, self.settings.lease
        for job in jobs:
            claim = job.claim
            try:
                if not offloader.queue.extend(claim, lease):
                    log.warning("job %s lost its lease; another worker may run it", claim.job_id)
                    if job.request is not None:
                        self._emit("job.lease_lost", job.request)
                offloader.cache.touch(offloader.running_key(claim.key), lease)
                offloader.cache.touch(offloader.pending_key(claim.key), lease)
            except BackendUnavailable as error:
                log.error("cannot renew the lease of job %s (%s)", claim.job_id, error)

    def _time_out(self, thread: threading.Thread, job: Job) -> None:
        """Store a 504 for a job past ``job_timeout``, and replace the thread stuck in it."""
        with self._lock:
            if job.abandoned:
                return
            job.abandoned = True
            self._abandoned.add(thread)
            stuck = sum(1 for stuck_thread in self._abandoned if stuck_thread.is_alive())
        request = job.request
        what = _describe(request) if request is not None else f"job {job.claim.job_id}"
        log.error("%s ran past job_timeout=%ss: storing a 504", what, self.settings.job_timeout)
        if request is not None:
            self._emit("job.timed_out", request, seconds=time.monotonic() - job.started)
        if request is not None:
            self._conclude(job, self._failure(504, f"offload: the job ran past {self.settings.job_timeout}s\n"))
        else:
            self._release(job.claim)
        if stuck > self.concurrency:
            log.error("%d threads are stuck in the app past job_timeout: stopping so a fresh process starts", stuck)
            self.exit_code = EXIT_STUCK
            self.stop()
        elif not self.stopping.is_set():
            self._start_thread()

    def _mark(self, request: StoredRequest, marker: PendingMarker) -> None:
        """Say where the job stands, for status monitors; a failure to say so changes nothing else."""
        with contextlib.suppress(BackendUnavailable):
            self.offloader.cache.set(self.offloader.pending_key(request.key), marker.encode(), self.settings.lease)

    def _emit(self, name: str, request: StoredRequest, **fields: Any) -> None:
        events = self.offloader.events
        if events.listeners:
            path = request.target.full_path.decode("latin-1")
            events.emit(name, key=request.key, path=path, trace=request.trace, **fields)

    def _ack(self, claim: Claim) -> None:
        try:
            self.offloader.queue.ack(claim)
        except BackendUnavailable as error:
            log.error("cannot acknowledge job %s (%s)", claim.job_id, error)

    def _release(self, claim: Claim, running: str | None = None, delay: float = 0.0) -> None:
        try:
            if running is not None:
                self.offloader.cache.delete(running)
            self.offloader.queue.release(claim, delay)
        except BackendUnavailable as error:
            log.error("cannot hand back job %s (%s); its lease will run out", claim.job_id, error)

    def _hand_back_all(self) -> None:
        with self._lock:
            jobs = [job for job in self._jobs.values() if not job.abandoned]
        for job in jobs:
            log.warning("handing back job %s", job.claim.job_id)
            self._release(job.claim, self.offloader.running_key(job.claim.key))


def _url(request: StoredRequest) -> str:
    """The path and query of a request, as a status monitor sends a client back to it."""
    target = request.target
    if target.raw_path is None:
        path = canonical_path(target.full_path)
    else:  # as sent, its escapes kept, anything unsafe in a header escaped too
        path = quote(target.raw_path, "/:@!$&'()*+,;=-._~%")
    return f"{path}?{target.query.decode('latin-1')}" if target.query else path


def _describe(request: StoredRequest) -> str:
    target = request.target
    query = f"?{target.query.decode('latin-1')}" if target.query else ""
    return f"GET {target.scheme}://{target.host}{target.full_path.decode('latin-1')}{query}"


def _is_fresh(data: bytes | None, enqueued: float) -> bool:
    """Whether a stored answer was computed after a job was queued, so the job has nothing left to do."""
    if data is None:
        return False
    try:
        found = CachedResponse.decode(data)
    except CorruptRecord:
        return False
    return not found.private and found.created >= enqueued
