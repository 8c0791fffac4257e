"""offload.client: follows 202s (Retry-After, backoff, Prefer: wait), honours its deadline, raises clear errors.

The server side is an httpx mock transport scripted per test; the README's
client example runs against a real ``offload serve`` in ``tests/test_readme.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from offload.client import AsyncClient, Client, Failed, Polling, TimedOut


def scripted(answers: list[httpx.Response], seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """A handler giving ``answers`` in turn (the last one for ever), keeping each request in ``seen``."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    return handle


def accepted(retry_after: str = "0") -> httpx.Response:
    return httpx.Response(202, headers={"Retry-After": retry_after, "Cache-Control": "no-store"})


def client(answers: list[httpx.Response], seen: list[httpx.Request], **options: float) -> Client:
    transport = httpx.MockTransport(scripted(answers, seen))
    return Client(client=httpx.Client(transport=transport, base_url="http://app.test"), max_delay=0.05, **options)


def test_it_asks_again_until_the_answer_is_final_and_says_prefer_wait() -> None:
    seen: list[httpx.Request] = []
    with client([accepted(), accepted(), httpx.Response(200, json={"total": 42})], seen) as offloaded:
        response = offloaded.get("/report", params={"year": 2024})
    assert response.json() == {"total": 42}
    assert [str(request.url) for request in seen] == ["http://app.test/report?year=2024"] * 3
    assert {request.headers["Prefer"] for request in seen} == {"wait=10"}


def test_it_waits_as_long_as_retry_after_says() -> None:
    seen: list[httpx.Request] = []
    started = time.monotonic()
    with client([accepted("1"), httpx.Response(200)], seen) as offloaded:
        assert offloaded.get("/report").status_code == 200
    assert 1.0 <= time.monotonic() - started < 5


def test_a_503_with_retry_after_is_asked_again_and_a_final_error_raises_failed() -> None:
    seen: list[httpx.Request] = []
    unavailable = httpx.Response(503, headers={"Retry-After": "0"})
    with client([unavailable, httpx.Response(500, text="boom")], seen) as offloaded, pytest.raises(Failed) as failed:
        offloaded.get("/report")
    assert failed.value.status == 500 and failed.value.response.text == "boom"
    assert "answered 500" in str(failed.value)
    with client([httpx.Response(404)], []) as offloaded:
        offloaded.raise_for_failure = False
        assert offloaded.get("/missing").status_code == 404


def test_past_the_deadline_it_raises_timed_out_with_the_last_answer() -> None:
    seen: list[httpx.Request] = []
    started = time.monotonic()
    with client([accepted()], seen, deadline=0.3) as offloaded, pytest.raises(TimedOut) as timed_out:
        offloaded.get("/report")
    assert time.monotonic() - started < 2
    assert timed_out.value.response is not None and timed_out.value.response.status_code == 202
    assert "within 0.3s" in str(timed_out.value)
    assert seen[-1].headers.get("Prefer") is None, "less than a second left: no Prefer: wait"


def test_a_request_that_outlives_the_deadline_is_timed_out() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    offloaded = Client(client=httpx.Client(transport=httpx.MockTransport(hang)), deadline=1)
    with offloaded, pytest.raises(TimedOut):
        offloaded.get("http://app.test/report")


def test_the_async_client_does_the_same() -> None:
    seen: list[httpx.Request] = []
    answers = [accepted(), httpx.Response(200, text="done")]

    async def main() -> str:
        transport = httpx.MockTransport(scripted(answers, seen))
        async with AsyncClient(client=httpx.AsyncClient(transport=transport), max_delay=0.05, wait=3) as offloaded:
            return (await offloaded.get("http://app.test/report")).text

    assert asyncio.run(main()) == "done"
    assert [request.headers["Prefer"] for request in seen] == ["wait=3", "wait=3"]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        Polling(deadline=0)
    with pytest.raises(TypeError):
        Client(client=httpx.Client(), timeout=3)
