"""The job steps of many jobs at once (begin_many, conclude_many), on the memory backend.

Each batch must end every job as the step of one job ends it: these tests
take a claim of several jobs through the batched steps and check each job's
end, including when the backend fails under the batch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from offload import WSGIMiddleware
from offload.backends import Claim
from offload.errors import BackendUnavailable
from offload.job_steps import Job, JobSteps
from offload.records import CachedResponse


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


@pytest.fixture
def middleware() -> Iterator[WSGIMiddleware]:
    found = WSGIMiddleware(app, url=f"memory://steps-{uuid.uuid4().hex}", worker_threads=0, max_queued=None)
    yield found
    found.offloader.cache.close()
    found.offloader.queue.close()


def get(middleware: WSGIMiddleware, path: str) -> int:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1"}
    environ.update({"SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http"})
    statuses: list[str] = []
    b"".join(middleware(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return int(statuses[0][:3])


def claimed(middleware: WSGIMiddleware, paths: list[str]) -> list[Job]:
    for path in paths:
        assert get(middleware, path) == 202
    return [Job(claim) for claim in middleware.offloader.queue.claim_many(30, 0, 100)]


def answer(body: bytes) -> CachedResponse:
    return CachedResponse(200, [("Content-Type", "text/plain")], body, created=time.time())


def test_a_claim_is_begun_in_one_call_each_job_ending_as_alone(
    middleware: WSGIMiddleware, monkeypatch: pytest.MonkeyPatch
) -> None:
    offloader = middleware.offloader
    steps = JobSteps(offloader)
    jobs = claimed(middleware, ["/plain", "/elsewhere", "/dying"])
    plain, elsewhere, dying = jobs
    jobs.append(Job(Claim("copy", plain.claim.key, plain.claim.payload)))  # a copy of /plain, in the same claim
    jobs.append(Job(Claim("corrupt", "offload:r:corrupt", b"not a request")))
    offloader.cache.add(offloader.running_key(elsewhere.claim.key), b"another worker", 60)
    for _ in range(offloader.settings.max_deliveries):
        offloader.cache.incr(offloader.attempts_key(dying.claim.key), 600)
    calls: list[int] = []
    batched = offloader.cache.start_counted_jobs
    monkeypatch.setattr(
        offloader.cache, "start_counted_jobs", lambda starts: calls.append(len(starts)) or batched(starts)
    )
    assert steps.begin_many(jobs) == [True, False, False, False, False]
    assert calls == [4], "one call for the four jobs in offload's format"
    assert plain.request is not None and elsewhere.request is None
    assert [dead.job_id for dead in offloader.queue.dead()] == [dying.claim.job_id]
    assert get(middleware, "/dying") == 500, "a dead letter's failure is stored"


def test_an_outage_while_beginning_hands_every_job_back(
    middleware: WSGIMiddleware, monkeypatch: pytest.MonkeyPatch
) -> None:
    offloader = middleware.offloader
    jobs = claimed(middleware, ["/a", "/b"])

    def down(starts: Any) -> Any:
        raise BackendUnavailable("down")

    monkeypatch.setattr(offloader.cache, "start_counted_jobs", down)
    assert JobSteps(offloader).begin_many(jobs) == [False, False]
    assert offloader.queue.stats()["queued"] == 2, "both handed back, claimable again"


def test_answers_are_stored_in_one_call_and_acknowledged_in_one(
    middleware: WSGIMiddleware, monkeypatch: pytest.MonkeyPatch
) -> None:
    offloader = middleware.offloader
    steps = JobSteps(offloader)
    jobs = claimed(middleware, ["/a", "/b", "/c"])
    assert steps.begin_many(jobs) == [True, True, True]
    finishes: list[int] = []
    acks: list[int] = []
    finish_jobs, ack_many = offloader.cache.finish_jobs, offloader.queue.ack_many
    monkeypatch.setattr(offloader.cache, "finish_jobs", lambda batch: finishes.append(len(batch)) or finish_jobs(batch))
    monkeypatch.setattr(offloader.queue, "ack_many", lambda claims: acks.append(len(claims)) or ack_many(claims))
    steps.conclude_many([(job, answer(b"body")) for job in jobs])
    assert (finishes, acks) == ([3], [3])
    assert steps.jobs_done == 3
    assert [get(middleware, path) for path in ("/a", "/b", "/c")] == [200, 200, 200]
    assert offloader.queue.stats() == {"queued": 0, "running": 0, "dead": 0}


def test_a_store_that_fails_hands_each_job_back_with_its_backoff(
    middleware: WSGIMiddleware, monkeypatch: pytest.MonkeyPatch
) -> None:
    offloader = middleware.offloader
    steps = JobSteps(offloader)
    jobs = claimed(middleware, ["/a", "/b"])
    assert steps.begin_many(jobs) == [True, True]
    released: list[tuple[str, float]] = []
    release = offloader.queue.release

    def down(batch: Any) -> Any:
        raise BackendUnavailable("down")

    def recorded(claim: Claim, delay: float = 0.0) -> None:
        released.append((claim.job_id, delay))
        release(claim, delay)

    monkeypatch.setattr(offloader.cache, "finish_jobs", down)
    monkeypatch.setattr(offloader.queue, "release", recorded)
    steps.conclude_many([(job, answer(b"body")) for job in jobs])
    backoff = offloader.settings.retry_backoff
    assert released == [(job.claim.job_id, backoff) for job in jobs]
    assert steps.jobs_done == 0 and set(steps.store_failures) == {job.claim.key for job in jobs}
    assert all(offloader.cache.get(offloader.running_key(job.claim.key)) is None for job in jobs), "keys unlocked"
