"""offload.testing: eager and recording modes, the record they keep, and the app's own backend given back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from flask import Flask, make_response

import offload
from offload.errors import ConfigurationError
from offload.testing import Recorder, eager, recording

calls: list[str] = []


def flask_app(url: str = "memory://testing-flask") -> Flask:
    app = Flask("testing_app")

    @app.get("/report")
    def report() -> Any:
        calls.append("report")
        return {"total": 42}

    @app.get("/broken")
    def broken() -> Any:
        calls.append("broken")
        raise RuntimeError("the report failed")

    @app.get("/session")
    def session() -> Any:
        response = make_response("yours")
        response.set_cookie("session", "abc")
        return response

    app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app, url=url)  # type: ignore[method-assign]
    return app


@pytest.fixture(autouse=True)
def _no_calls() -> None:
    calls.clear()


def test_eager_answers_in_the_same_request_and_records_the_job_and_the_answer(
    offload_eager: Callable[..., Recorder],
) -> None:
    app = flask_app()
    record = offload_eager(app)
    response = app.test_client().get("/report?b=2&a=1", headers={"X-Other": "not keyed"})
    assert (response.status_code, response.get_json()) == (200, {"total": 42})
    assert [(job.path, job.query, job.url) for job in record.jobs] == [
        ("/report", "a=1&b=2", "http://localhost/report?a=1&b=2")
    ]
    assert [(answer.status, answer.shared, answer.failed) for answer in record.answers] == [(200, True, False)]
    assert app.test_client().get("/report?a=1&b=2").status_code == 200 and calls == ["report"], "then a hit"


def test_a_failing_view_is_retried_without_waiting_then_its_failure_is_the_answer() -> None:
    app = flask_app()
    started = time.monotonic()
    with eager(app) as record:
        response = app.test_client().get("/broken")
    assert response.status_code == 500
    assert calls == ["broken"] * 3, "max_attempts tries"
    assert time.monotonic() - started < 2, "no backoff between tries in a test"
    assert record.answers[-1].failed


def test_recording_leaves_jobs_queued_until_run_jobs(offload_recording: Callable[..., Recorder]) -> None:
    app = flask_app()
    record = offload_recording(app)
    client = app.test_client()
    assert client.get("/report").status_code == 202
    assert client.get("/report").status_code == 202, "one job per URL, however many requests"
    time.sleep(0.3)  # the app's own worker thread (memory://) must not take the job meanwhile
    assert calls == [] and len(record.jobs) == 1
    assert record.run_jobs() == 1 and record.run_jobs() == 0
    assert client.get("/report").get_json() == {"total": 42}


def test_an_answer_for_one_client_is_recorded_as_not_shared() -> None:
    app = flask_app()
    with recording(app) as record:
        client = app.test_client()
        client.get("/session")
        record.run_jobs()
        assert client.get("/session").headers["Set-Cookie"].startswith("session=abc")
        assert client.get("/session").status_code == 202, "delivered once"
    stored = record.answers[0]
    assert not stored.shared and (stored.header("set-cookie") or "").startswith("session=abc")


def test_expiries_are_recorded_and_the_apps_backend_comes_back() -> None:
    app = flask_app("memory://testing-restore")
    middleware = app.wsgi_app
    own = middleware.offloader.backend  # type: ignore[attr-defined]
    with eager(app) as record:
        app.test_client().get("/report")
        assert middleware.expire("/rep*") == 1  # type: ignore[attr-defined]
    assert [(rule.pattern, count) for rule, count in record.expiries] == [("/rep*", 1)]
    assert middleware.offloader.backend is own  # type: ignore[attr-defined]


def test_an_asgi_app_runs_eagerly_too() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"from " + scope["path"].encode()})

    app = offload.ASGIMiddleware(inner, url="memory://testing-asgi")

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            return await client.get("/report")

    with eager(app) as record:
        response = asyncio.run(get())
    assert (response.status_code, response.text) == (200, "from /report")
    assert len(record.jobs) == 1


def test_an_app_without_offload_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no offload middleware"), eager(Flask("bare")):
        pass
