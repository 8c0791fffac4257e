"""The worker: claim a job, replay it through the app, store the answer, acknowledge.

A job's key is locked while it runs (an atomic add of a running marker), so a
job delivered twice, after a lost lease or a re-enqueue, never runs twice at
once. A heartbeat thread renews the queue lease, the running marker and the
pending marker of every job in flight, so a job longer than the lease is not
taken for dead. If the app raises, the job is retried with exponential
backoff, then an error answer is stored for ``error_ttl`` seconds so clients
stop polling. Signal handlers only set flags: the first SIGTERM or SIGINT lets
running jobs finish and stops claiming; the second hands them back at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from offload.backends import Claim, IndexEntry
from offload.core import Offloader, own_answer
from offload.errors import BackendUnavailable, CorruptRecord
from offload.keys import canonical_path, canonical_query, parse_query
from offload.records import CachedResponse, PendingMarker, StoredRequest
from offload.replay import BodyTooLarge

log = logging.getLogger("offload.worker")

#: Calls the app with a stored request and returns its whole answer.
Replayer = Callable[[StoredRequest, int], CachedResponse]


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
        # By job and claim: a token alone is unique only per job (Redis: consumer and delivery count).
        self._in_flight: dict[tuple[str, str], Claim] = {}
        self._lock = threading.Lock()

    # -- running ---------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        """Process jobs until stopped (or, with ``burst``, until the queue is empty); return an exit code."""
        if install_signals:
            self._install_signal_handlers()
        threads = [
            threading.Thread(target=self._loop, name=f"offload-worker-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        heartbeat = threading.Thread(target=self._heartbeat, name="offload-heartbeat", daemon=True)
        heartbeat.start()
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                if self.aborting.wait(0.2):
                    self._hand_back_all()
                    return 1
            self.stopping.set()
            return 0
        finally:
            self._finished.set()
            heartbeat.join(5)

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
        failures = 0
        while not self.stopping.is_set():
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
            with self._lock:
                self._in_flight[claim.job_id, claim.token] = claim
            try:
                self.process(claim)
            except Exception:
                # An unexpected error (a driver's, or a bug) must not end this thread and
                # leave the worker running with fewer threads: the job stays leased and
                # comes back after its lease; this thread pauses and claims again.
                log.exception("job %s failed unexpectedly; it comes back after its lease", claim.job_id)
                self.stopping.wait(1.0)
            finally:
                with self._lock:
                    self._in_flight.pop((claim.job_id, claim.token), None)

    # -- one job ---------------------------------------------------------------

    def process(self, claim: Claim) -> None:
        """Run one claimed job to its end: an answer stored, or the job handed back."""
        offloader, queue, cache = self.offloader, self.offloader.queue, self.offloader.cache
        try:
            request = StoredRequest.decode(claim.payload)
            if request.key != claim.key:
                raise CorruptRecord("the job's key does not match its request")
        except CorruptRecord as error:
            log.warning("dropping job %s: not in offload's format (%s)", claim.job_id, error)
            self._ack(claim)
            with contextlib.suppress(BackendUnavailable):  # let the next miss queue a good job
                cache.delete(offloader.pending_key(claim.key))
            return
        key = request.key
        running, pending, answer = offloader.running_key(key), offloader.pending_key(key), offloader.response_key(key)
        try:
            marker = PendingMarker("running", time.time()).encode()
            taken, existing = cache.start_job(running, pending, answer, marker, self.settings.lease)
            if not taken:
                # Another worker runs this key, or died running it. Leave this copy
                # leased: it comes back after the lease and is dropped then if the
                # other run stored an answer, or run if the other worker is gone.
                log.debug("job %s for %s runs elsewhere; looking again after the lease", claim.job_id, key)
                return
            if _is_fresh(existing, request.enqueued):  # a copy of a job that already ran
                cache.finish_job(answer, None, 0, None, (pending, running))
                queue.ack(claim)
                return
        except BackendUnavailable as error:
            log.error("cannot start job %s (%s); it will be retried", claim.job_id, error)
            self._release(claim)
            return
        response = self._run_with_retries(request)
        if response is None:  # stopped during a retry: hand the job back
            self._release(claim, running)
            return
        try:
            path = canonical_path(request.path)
            index = IndexEntry(path, canonical_query(parse_query(request.query)), failed=response.failed)
            ttl = self.settings.error_ttl if response.failed else self.settings.ttl_for(path)
            stored = dataclasses.replace(response, expires=response.created + ttl)
            cache.finish_job(answer, stored.encode(), ttl, index, (pending, running))
            queue.ack(claim)
            self.jobs_done += 1
        except BackendUnavailable as error:
            log.error("cannot store the answer of job %s (%s); it will run again", claim.job_id, error)
            self._release(claim, running)

    def _run_with_retries(self, request: StoredRequest) -> CachedResponse | None:
        settings = self.settings
        for attempt in range(1, settings.max_attempts + 1):
            started = time.time()
            try:
                response = self.replay(request, settings.max_body)
            except BodyTooLarge as error:
                log.error("%s: %s; storing a 502 for %ss", _describe(request), error, settings.error_ttl)
                return self._failure(502, f"offload: the answer exceeds max_body ({error.limit} bytes)\n")
            except Exception:
                log.exception("%s failed (attempt %d of %d)", _describe(request), attempt, settings.max_attempts)
                if attempt < settings.max_attempts:
                    if self.aborting.wait(settings.retry_backoff * 2 ** (attempt - 1)):
                        return None
                    continue
                return self._failure(500, f"offload: the job failed {settings.max_attempts} times\n")
            log.info("%s -> %d in %.3fs", _describe(request), response.status, time.time() - started)
            return dataclasses.replace(response, created=time.time())
        raise AssertionError("unreachable")

    def _failure(self, status: int, message: str) -> CachedResponse:
        answer = own_answer(status, int(self.settings.error_ttl), message.encode())
        return CachedResponse(answer.status, answer.headers, answer.body, created=time.time(), failed=True)

    # -- leases ---------------------------------------------------------------------

    def _heartbeat(self) -> None:
        interval = self.settings.lease / 3
        while not self._finished.wait(interval):
            with self._lock:
                claims = list(self._in_flight.values())
            for claim in claims:
                try:
                    if not self.offloader.queue.extend(claim, self.settings.lease):
                        log.warning("job %s lost its lease; another worker may run it", claim.job_id)
                    self.offloader.cache.touch(self.offloader.running_key(claim.key), self.settings.lease)
                    self.offloader.cache.touch(self.offloader.pending_key(claim.key), self.settings.lease)
                except BackendUnavailable as error:
                    log.error("cannot renew the lease of job %s (%s)", claim.job_id, error)

    def _ack(self, claim: Claim) -> None:
        try:
            self.offloader.queue.ack(claim)
        except BackendUnavailable as error:
            log.error("cannot acknowledge job %s (%s)", claim.job_id, error)

    def _release(self, claim: Claim, running: str | None = None) -> None:
        try:
            if running is not None:
                self.offloader.cache.delete(running)
            self.offloader.queue.release(claim)
        except BackendUnavailable as error:
            log.error("cannot hand back job %s (%s); its lease will run out", claim.job_id, error)

    def _hand_back_all(self) -> None:
        with self._lock:
            claims = list(self._in_flight.values())
        for claim in claims:
            log.warning("handing back job %s", claim.job_id)
            self._release(claim, self.offloader.running_key(claim.key))


def _describe(request: StoredRequest) -> str:
    query = f"?{request.query.decode('latin-1')}" if request.query else ""
    return f"GET {request.path.decode('latin-1')}{query}"


def _is_fresh(data: bytes | None, enqueued: float) -> bool:
    """Whether a stored answer was computed after a job was queued, so the job has nothing left to do."""
    if data is None:
        return False
    try:
        return CachedResponse.decode(data).created >= enqueued
    except CorruptRecord:
        return False
