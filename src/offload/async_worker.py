"""The async engine: many jobs of an ASGI app at once, as tasks on one event loop.

A thread per job costs megabytes and a switch per wait; an ASGI app's job is
mostly waiting (on a database, another service), so one process can run
hundreds of them on one loop. The loop claims as many jobs as it has free
slots in one call (:meth:`~offload.backends.Queue.claim_many`), runs each as
a task through :class:`~offload.replay.AsgiReplayer`, and takes it through
the same steps as the thread engine (:class:`~offload.job_steps.JobSteps`):
begin, tries with backoff, store, acknowledge, retry or bury. Those steps
call the backend, which blocks, so they run in a small thread pool
(``backend_threads``), never on the loop. They run for many jobs at once: the
jobs of one claim are begun in one call
(:meth:`~offload.job_steps.JobSteps.begin_many`), and the answers that came
while one batch was stored are stored, then acknowledged, together
(:meth:`~offload.job_steps.JobSteps.conclude_many`), so a trivial job costs a
share of a few round trips and hand-offs instead of two of each.

One heartbeat task renews the leases of every job in flight in one call
(:meth:`~offload.backends.Queue.extend_many`). A job past ``job_timeout`` is
cancelled and a 504 is stored for it, as the thread engine stores one. A job
that ignores its cancellation no longer holds a slot, as the thread engine
replaces a thread stuck in the app; when more jobs are stuck than the worker
runs at once, it stops (exit code ``EXIT_STUCK``) so that its supervisor
starts a fresh process, and it does not wait for them as it exits. The
first SIGTERM or SIGINT stops claiming and lets the running jobs finish; the
second cancels them and hands them back. An app that blocks the loop
(synchronous work in an ``async def``) blocks every job: run it with the
thread engine (``offload worker --engine threads``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from offload import tags
from offload.core import Offloader
from offload.errors import BackendUnavailable
from offload.job_steps import EXIT_STUCK, Backoff, Engine, Job, Replayed, install_signal_handlers, queue_backoff
from offload.records import CachedResponse, StoredRequest
from offload.replay import AsgiReplayer

log = logging.getLogger("offload.worker")

T = TypeVar("T")

#: Threads that make the backend calls of an async worker's jobs (the loop never blocks on one). As many
#: as the PostgreSQL backend keeps idle connections: a thread more opens and closes a connection per call
#: (measured: 528 jobs/s with 16 threads, 742 with 8, trivial jobs on PostgreSQL).
BACKEND_THREADS = 8

#: Seconds a cancelled job has to end before it counts as stuck (and, as the worker exits, before it is left).
STUCK_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job that ended, the answer to store for it, and what its task waits on until that is done."""

    job: Job
    response: CachedResponse
    stored: asyncio.Future[None]


class AsyncWorker(Engine):
    """Runs up to ``concurrency`` jobs of an ASGI app at once on one event loop.

    >>> from offload.core import Offloader
    >>> async def app(scope, receive, send):
    ...     await send({"type": "http.response.start", "status": 200, "headers": []})
    ...     await send({"type": "http.response.body", "body": b"hi"})
    >>> worker = AsyncWorker(Offloader(url="memory://doctest-async-worker"), app, burst=True)
    >>> worker.run(install_signals=False)
    0
    """

    def __init__(
        self,
        offloader: Offloader,
        app: Any,
        *,
        concurrency: int = 100,
        burst: bool = False,
        claim_wait: float = 1.0,
        backend_threads: int = BACKEND_THREADS,
    ) -> None:
        if backend_threads < 1:
            raise ValueError("backend_threads must be at least 1")
        super().__init__(offloader, concurrency=concurrency, burst=burst, claim_wait=claim_wait)
        self.replay = AsgiReplayer(app)
        self.backend_threads = backend_threads
        self._jobs: dict[asyncio.Task[None], Job] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._outcomes: deque[Outcome] = deque()  # jobs that ended, their answers not yet stored
        self._stores_due: asyncio.Event | None = None
        self._stuck: set[asyncio.Task[CachedResponse]] = set()  # tries that ignored their cancellation
        self.exit_code = 0

    def run(self, install_signals: bool = True) -> int:
        """Process jobs until stopped (or, with ``burst``, until the queue is empty); return an exit code.

        The loop is run and closed here rather than by :func:`asyncio.run`,
        which would wait for a task that ignores its cancellation forever.
        """
        if install_signals:
            install_signal_handlers(self.stop)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(self.serve())
        finally:
            try:
                left = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in left:
                    task.cancel()
                if left:
                    _, stuck = loop.run_until_complete(asyncio.wait(left, timeout=STUCK_GRACE))
                    if stuck:
                        log.error("leaving %d job(s) that ignore their cancellation as the worker exits", len(stuck))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def serve(self) -> int:
        """The worker on the running loop: claim, run, renew, until stopped; returns the exit code."""
        self._executor = ThreadPoolExecutor(self.backend_threads, thread_name_prefix="offload-backend")
        self._stores_due = asyncio.Event()
        storer = asyncio.create_task(self._store())
        heartbeat = asyncio.create_task(self._heartbeat())
        claimer = asyncio.create_task(self._claim_loop())
        aborted = asyncio.create_task(self._wait_for(self.aborting))
        try:
            await asyncio.wait({claimer, aborted}, return_when=asyncio.FIRST_COMPLETED)
            if claimer.done():
                claimer.result()  # an unexpected error in the claim loop ends the worker, loudly
            while self._jobs and not aborted.done():  # stopped claiming: let the running jobs finish
                await asyncio.wait({*self._jobs, aborted}, return_when=asyncio.FIRST_COMPLETED)
            if aborted.done():
                # The claim in flight ends within claim_wait; the jobs it took are handed back with the rest.
                await asyncio.gather(claimer, return_exceptions=True)
                await self._hand_back_all()
                return 1
            return self.exit_code
        finally:
            for task in (heartbeat, claimer, aborted, storer):
                task.cancel()
            await asyncio.gather(heartbeat, claimer, aborted, storer, return_exceptions=True)
            await self._store_now()  # what ended since the last batch; a batch in flight ends in the pool
            await self.replay.aclose()
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _wait_for(self, event: threading.Event) -> None:
        """Return once ``event`` is set (by a signal handler or another thread); it is polled, cheaply."""
        while not event.is_set():
            await asyncio.sleep(0.1)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking backend step in the worker's thread pool, with this task's context."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, function, *args)
        return await loop.run_in_executor(self._executor, call)

    # -- claiming -----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        """Fill the free slots with one claim each time, until stopped (or, in a burst, until none comes)."""
        queue, failures = self.offloader.queue, 0
        wait = 0.2 if self.burst else self.claim_wait
        while not self.stopping.is_set():
            free = self.concurrency - len(self._jobs)
            if free <= 0:  # every slot busy: look again when a job ends, or after a moment (a stop)
                await asyncio.wait(set(self._jobs), timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                claims = await self._call(queue.claim_many, self.settings.lease, wait, free)
            except BackendUnavailable as error:
                failures += 1
                await asyncio.sleep(queue_backoff(error, failures))
                continue
            failures = 0
            if not claims and self.burst:
                return
            if self.aborting.is_set():  # taken while the worker was told to hand its jobs back
                await self._call(self.steps.hand_back, [Job(claim) for claim in claims])
                return
            jobs = [Job(claim) for claim in claims]
            begun = asyncio.ensure_future(self._call(self.steps.begin_many, jobs))  # one hand-off for the claim
            for number, job in enumerate(jobs):
                task = asyncio.create_task(self._process(job, begun, number), name=f"offload-job-{job.claim.job_id}")
                self._jobs[task] = job
                task.add_done_callback(self._jobs.pop)

    # -- one job --------------------------------------------------------------------------

    async def _process(self, job: Job, begun: asyncio.Future[list[bool]], number: int) -> None:
        """Run one claimed job to its end; a cancellation (a second SIGTERM) leaves it to be handed back.

        ``begun`` is the beginning of the claim's jobs, this one ``number`` of them.
        """
        try:
            # Shielded: the other jobs of the claim wait for the same beginning.
            if not (await asyncio.shield(begun))[number] or job.request is None:
                return
            tries = asyncio.create_task(self._run_with_retries(job.request))
            try:
                remaining = self.settings.job_timeout - (time.monotonic() - job.started)
                done, _ = await asyncio.wait({tries}, timeout=max(0.0, remaining))
            except asyncio.CancelledError:
                tries.cancel()
                raise
            if not done:  # past job_timeout: cancelled, and not waited on (an app may ignore the cancellation)
                tries.cancel()
                if self.steps.claim_outcome(job):
                    await self._call(self.steps.time_out, job)
                await asyncio.wait({tries}, timeout=STUCK_GRACE)
                if not tries.done():
                    self._stuck_in(tries)
                return
            if self.steps.claim_outcome(job):
                # The job holds its slot until its answer is stored. Shielded: a second SIGTERM does not
                # take back a store that was queued; the worker stores it before it ends.
                stored = asyncio.get_running_loop().create_future()
                self._outcomes.append(Outcome(job, tries.result(), stored))
                if self._stores_due is not None:
                    self._stores_due.set()
                await asyncio.shield(stored)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A driver's error or a bug: the job stays leased and comes back after its lease.
            log.exception("job %s failed unexpectedly; it comes back after its lease", job.claim.job_id)

    def _stuck_in(self, tries: asyncio.Task[CachedResponse]) -> None:
        """A job ignored its cancellation: its slot is free again; too many such jobs stop the worker."""
        self._stuck.add(tries)
        tries.add_done_callback(self._stuck.discard)
        if len(self._stuck) > self.concurrency:
            log.error(
                "%d jobs ignore their cancellation past job_timeout: stopping so a fresh process starts",
                len(self._stuck),
            )
            self.exit_code = EXIT_STUCK
            self.stop()

    async def _run_with_retries(self, request: StoredRequest) -> CachedResponse:
        """Drive :meth:`JobSteps.attempts` on the loop: each try awaited, each backoff slept."""
        attempts = self.steps.attempts(request)
        try:
            step = next(attempts)
            while True:
                if isinstance(step, Backoff):
                    await asyncio.sleep(step.seconds)
                    step = attempts.send(None)
                else:
                    step = attempts.send(await self._replay_once(request))
        except StopIteration as stop:
            result: CachedResponse = stop.value
            return result

    async def _replay_once(self, request: StoredRequest) -> Replayed:
        started = time.time()
        try:
            with tags.collecting() as tagged:
                response = await self.replay(request, self.settings.max_body)
        except Exception as error:
            return Replayed(started, error=error)
        return Replayed(started, response, tuple(tagged))

    # -- storing -------------------------------------------------------------------------

    async def _store(self) -> None:
        """Store answers together: what ended while one batch was stored makes the next."""
        while self._stores_due is not None:
            await self._stores_due.wait()
            self._stores_due.clear()
            await asyncio.shield(self._store_now())  # a batch taken is stored, even as the worker stops

    async def _store_now(self) -> None:
        """Store and acknowledge every answer not yet stored, in one hand-off (see :meth:`JobSteps.conclude_many`)."""
        batch = list(self._outcomes)
        self._outcomes.clear()
        if not batch:
            return
        try:
            await self._call(self.steps.conclude_many, [(outcome.job, outcome.response) for outcome in batch])
        except Exception:
            # A driver's error or a bug: the jobs stay leased and come back after their lease.
            log.exception("storing the answers of %d job(s) failed unexpectedly", len(batch))
        finally:
            for outcome in batch:
                if not outcome.stored.done():
                    outcome.stored.set_result(None)

    # -- leases and handing back ---------------------------------------------------------

    async def _heartbeat(self) -> None:
        """One task renews the leases of every job in flight, in one call, every third of a lease."""
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            jobs = [job for job in self._jobs.values() if not job.abandoned]
            try:
                await self._call(self.steps.renew, jobs)
            except Exception:  # a driver's error or a bug must not end the heartbeat
                log.exception("renewing the leases of %d job(s) failed", len(jobs))

    async def _hand_back_all(self) -> None:
        """Cancel the running jobs and hand back those whose outcome is not being stored."""
        running = list(self._jobs.items())
        for task, _ in running:
            task.cancel()
        await asyncio.gather(*(task for task, _ in running), return_exceptions=True)
        jobs = [job for _, job in running if self.steps.claim_outcome(job)]
        await self._call(self.steps.hand_back, jobs)
