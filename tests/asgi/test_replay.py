"""Replaying a stored request through an ASGI app, as the worker does."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from offload.keys import Target
from offload.records import StoredRequest
from offload.replay import BodyTooLarge, close_replay_loop, replay_asgi, replay_asgi_sync

T = TypeVar("T")

REQUEST = StoredRequest(
    key="k",
    primary="k",
    target=Target("https", "example.org:8443", b"/m", "/caf\xe9".encode(), b"a=1&b=%20", b"/m/caf%C3%A9"),
    headers=(("accept", b"text/plain"), ("x-twice", b"1,2")),
    vary=("accept", "x-twice"),
)


def in_a_thread(func: Callable[[], T], close: bool = True) -> T:
    """Run ``func`` in a thread of its own, as a worker thread, which closes its loop as it stops."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(func())
        except BaseException as error:
            errors.append(error)
        finally:
            if close:
                close_replay_loop()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    if errors:
        raise errors[0]
    return results[0]


def test_the_scope_is_what_a_server_would_build() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        seen["message"] = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    asyncio.run(replay_asgi(app, REQUEST, 100))
    assert seen["type"] == "http"
    assert seen["asgi"]["version"] == "3.0"
    assert (seen["method"], seen["scheme"], seen["http_version"]) == ("GET", "https", "1.1")
    assert (seen["path"], seen["raw_path"], seen["root_path"]) == ("/m/caf\xe9", b"/m/caf%C3%A9", "/m")
    assert seen["query_string"] == b"a=1&b=%20"
    assert seen["headers"] == [(b"host", b"example.org:8443"), (b"accept", b"text/plain"), (b"x-twice", b"1,2")]
    assert (seen["client"], seen["server"]) == (None, ("example.org", 8443))
    assert seen["offload.replay"] is True
    assert seen["message"] == {"type": "http.request", "body": b"", "more_body": False}


def test_a_streamed_body_is_collected_whole_with_repeated_headers() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"Set-Cookie", b"a=1"), (b"content-type", b"application/octet-stream"), (b"Set-Cookie", b"b=2")]
        await send({"type": "http.response.start", "status": 203, "headers": headers})
        for chunk in (b"\x00\x01", b"", b"\xff"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})

    answer = asyncio.run(replay_asgi(app, REQUEST, 100))
    assert answer.status == 203
    assert answer.headers == (
        ("Set-Cookie", "a=1"),
        ("content-type", "application/octet-stream"),
        ("Set-Cookie", "b=2"),
    )
    assert answer.body == b"\x00\x01\xffend"


def test_disconnect_comes_only_after_the_answer_so_streaming_responses_finish() -> None:
    from starlette.responses import StreamingResponse

    async def chunks() -> Any:
        for n in range(5):
            await asyncio.sleep(0.01)
            yield b"%d" % n

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await StreamingResponse(chunks(), media_type="text/plain")(scope, receive, send)

    assert asyncio.run(replay_asgi(app, REQUEST, 100)).body == b"01234"


def test_an_answer_over_max_body_raises() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 60, "more_body": True})
        await send({"type": "http.response.body", "body": b"x" * 60})

    with pytest.raises(BodyTooLarge):
        asyncio.run(replay_asgi(app, REQUEST, 100))


@pytest.mark.parametrize("sent", [0, 1, 2])
def test_an_incomplete_answer_is_an_error(sent: int) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if sent:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        if sent > 1:
            await send({"type": "http.response.body", "body": b"part", "more_body": True})

    with pytest.raises(RuntimeError, match="complete answer"):
        asyncio.run(replay_asgi(app, REQUEST, 100))


class LifespanApp:
    """An app with a lifespan that counts startups and the loops requests ran on."""

    def __init__(self, fail_startups: int = 0) -> None:
        self.events: list[str] = []
        self.loops: set[int] = set()
        self.fail_startups = fail_startups

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if self.fail_startups:
                        self.fail_startups -= 1
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                        return
                    scope["state"]["pool"] = "pool-1"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.loops.add(id(asyncio.get_running_loop()))
        body = scope["state"]["pool"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def test_one_loop_and_one_lifespan_startup_per_worker_thread() -> None:
    app = LifespanApp()
    bodies = in_a_thread(lambda: [replay_asgi_sync(app, REQUEST, 100).body for _ in range(3)])
    assert bodies == [b"pool-1"] * 3
    assert len(app.loops) == 1
    assert app.events == ["lifespan.startup", "lifespan.shutdown"], "shut down when the thread stops"


def test_a_failed_lifespan_startup_fails_the_job_and_is_tried_again() -> None:
    app = LifespanApp(fail_startups=1)

    def two_jobs() -> tuple[str, bytes]:
        with pytest.raises(RuntimeError, match="lifespan startup failed: no database") as failed:
            replay_asgi_sync(app, REQUEST, 100)
        return str(failed.value), replay_asgi_sync(app, REQUEST, 100).body

    assert in_a_thread(two_jobs)[1] == b"pool-1"


def test_apps_without_lifespan_are_used_without_it() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("http only")  # what Django's ASGIHandler does
        assert "state" not in scope
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"fine"})

    assert in_a_thread(lambda: [replay_asgi_sync(app, REQUEST, 100).body for _ in range(2)]) == [b"fine"] * 2


def test_the_loop_of_a_thread_that_ended_without_closing_it_is_shut_down_by_the_next_replay() -> None:
    class Failing(LifespanApp):
        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await super().__call__(scope, receive, send)
                return
            raise ValueError("the handler failed")

    app = Failing()
    kept: list[BaseException] = []

    def failing_job() -> None:
        try:
            replay_asgi_sync(app, REQUEST, 100)
        except ValueError as error:
            kept.append(error)  # its traceback holds the thread's loop in a reference cycle

    in_a_thread(failing_job, close=False)
    assert app.events == ["lifespan.startup"]
    kept.clear()

    async def collect_inside_an_event_loop() -> None:
        gc.collect()  # must not find an unclosed loop (warnings are errors in this suite)

    asyncio.run(collect_inside_an_event_loop())
    other = LifespanApp()
    assert in_a_thread(lambda: replay_asgi_sync(other, REQUEST, 100).body) == b"pool-1"
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
