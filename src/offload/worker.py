"""The thread engine: claim a job, replay it through the app, store the answer, acknowledge.

Each of ``concurrency`` threads claims a job and takes it through the steps
of :class:`~offload.job_steps.JobSteps`, which every engine shares (the
async engine, :mod:`offload.async_worker`, runs an ASGI app's jobs as tasks
on one event loop instead). A heartbeat renews the queue leases of every job
in flight in one call, with their running and pending markers, so a job
longer than the lease is not taken for dead, but only up to
``job_timeout``: past it, a 504 is stored as the job's failure, the job is
acknowledged, and the thread stuck in the app is abandoned and replaced by a
fresh one (Python cannot stop a thread; when more threads are stuck than the
worker runs, it exits so that its supervisor starts a fresh process).

Signal handlers only set flags: the first SIGTERM or SIGINT lets running
jobs finish and stops claiming; the second hands them back at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from offload import tags
from offload.backends import Claim
from offload.core import Offloader
from offload.errors import BackendUnavailable
from offload.job_steps import EXIT_STUCK, Backoff, Engine, Job, Replayed, install_signal_handlers, queue_backoff
from offload.records import CachedResponse, StoredRequest

log = logging.getLogger("offload.worker")

#: Calls the app with a stored request and returns its whole answer.
Replayer = Callable[[StoredRequest, int], CachedResponse]

__all__ = ["EXIT_STUCK", "Job", "Replayer", "Worker"]


class Worker(Engine):
    """Runs jobs from the offloader's queue through ``replay``, in ``concurrency`` threads.

    >>> from offload.answers import own_answer
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
        super().__init__(offloader, concurrency=concurrency, burst=burst, claim_wait=claim_wait)
        self.replay = replay
        self._finished = threading.Event()  # run() returned: the heartbeat stops
        self.exit_code = 0
        self._jobs: dict[threading.Thread, Job] = {}
        self._threads: list[threading.Thread] = []
        self._abandoned: set[threading.Thread] = set()
        self._lock = threading.Lock()

    # -- running ---------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        """Process jobs until stopped (or, with ``burst``, until the queue is empty); return an exit code."""
        if install_signals:
            install_signal_handlers(self.stop)
        for _ in range(self.concurrency):
            self._start_thread()
        heartbeat = threading.Thread(target=self._heartbeat, name="offload-heartbeat", daemon=True)
        heartbeat.start()
        try:
            while self._working():
                if self.aborting.wait(0.2):
                    with self._lock:
                        jobs = [job for job in self._jobs.values() if not job.abandoned]
                    self.steps.hand_back(jobs)
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

    def _loop(self) -> None:
        me = threading.current_thread()
        failures = 0
        while not self.stopping.is_set() and me not in self._abandoned:
            try:
                claim = self.offloader.queue.claim(self.settings.lease, 0.2 if self.burst else self.claim_wait)
            except BackendUnavailable as error:
                failures += 1
                self.stopping.wait(queue_backoff(error, failures))
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
        if not self.steps.begin(job) or job.request is None:
            return
        response = self._run_with_retries(job.request)
        if response is None:  # stopped during a retry: hand the job back
            self.steps.release(claim, self.offloader.running_key(job.request.key))
            return
        if self.steps.claim_outcome(job):  # else the watchdog stored a 504 and acknowledged the job meanwhile
            self.steps.conclude(job, response)

    def _run_with_retries(self, request: StoredRequest) -> CachedResponse | None:
        """Drive :meth:`JobSteps.attempts` on this thread; None if stopped during a backoff."""
        attempts = self.steps.attempts(request)
        try:
            step = next(attempts)
            while True:
                if isinstance(step, Backoff):
                    if self.aborting.wait(step.seconds):
                        return None
                    step = attempts.send(None)
                else:
                    step = attempts.send(self._replay_once(request))
        except StopIteration as stop:
            result: CachedResponse = stop.value
            return result

    def _replay_once(self, request: StoredRequest) -> Replayed:
        started = time.time()
        try:
            with tags.collecting() as tagged:
                response = self.replay(request, self.settings.max_body)
        except Exception as error:
            return Replayed(started, error=error)
        return Replayed(started, response, tuple(tagged))

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
                self.steps.renew([job for _, job in jobs if not job.abandoned])

    def _time_out(self, thread: threading.Thread, job: Job) -> None:
        """Store a 504 for a job past ``job_timeout``, and replace the thread stuck in it."""
        if not self.steps.claim_outcome(job):
            return
        with self._lock:
            self._abandoned.add(thread)
            stuck = sum(1 for stuck_thread in self._abandoned if stuck_thread.is_alive())
        self.steps.time_out(job)
        if stuck > self.concurrency:
            log.error("%d threads are stuck in the app past job_timeout: stopping so a fresh process starts", stuck)
            self.exit_code = EXIT_STUCK
            self.stop()
        elif not self.stopping.is_set():
            self._start_thread()
