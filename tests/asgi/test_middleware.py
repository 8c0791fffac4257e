"""What the ASGI adapter adds to the shared behaviour: scopes it leaves alone, the event loop, async backends."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from offload.asgi import ASGIMiddleware, scope_path
from offload.backends.memory import MemoryCache, MemoryQueue
from offload.importer import find_offloader
from offload.records import CachedResponse
from tests.asgi.apps import behaviour
from tests.asgi.harness import ASGIHarness, call_asgi, http_scope


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
def test_non_http_scopes_reach_the_app_untouched(kind: str, tmp_path: Path) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    # A backend that cannot open: touching it would fail the call.
    middleware = ASGIMiddleware(inner, url=f"sqlite:///{tmp_path}/missing/offload.sqlite3")
    scope = {"type": kind, "asgi": {"version": "3.0"}, "path": "/ws", "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": f"{kind}.connect"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent on the app's behalf")

    asyncio.run(middleware(scope, receive, send))
    assert len(seen) == 1
    assert seen[0][0] is scope and seen[0][1] is receive and seen[0][2] is send


def test_replayed_requests_pass_through(tmp_path: Path) -> None:
    harness = ASGIHarness(behaviour.app, url=f"sqlite:///{tmp_path / 'offload.sqlite3'}")
    scope = http_scope("GET", b"/hello", b"r=1", [])
    scope["offload.replay"] = True
    result = asyncio.run(call_asgi(harness.middleware, scope))
    assert (result.status, result.body) == (200, b"hello r=1")
    assert harness.offloader.queue.stats()["queued"] == 0


def test_the_raw_path_is_part_of_the_key_and_reaches_the_app() -> None:
    """``/a%2Fb`` and ``/a/b`` are two resources for apps that route on ``raw_path`` (Datasette does)."""
    seen: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["raw_path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": scope["raw_path"]})

    harness = ASGIHarness(app, url=f"memory://{uuid.uuid4().hex}")

    def get(raw: bytes) -> Any:
        scope = http_scope("GET", b"/a/b", b"", [])
        scope["raw_path"] = raw
        return asyncio.run(call_asgi(harness.middleware, scope))

    assert get(b"/a%2Fb").status == 202
    assert get(b"/a/b").status == 202, "another key: another job"
    assert harness.work() == 2
    assert sorted(seen) == [b"/a%2Fb", b"/a/b"]
    assert (get(b"/a%2Fb").body, get(b"/a/b").body) == (b"/a%2Fb", b"/a/b")


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"path": "/caf\xe9", "raw_path": b"/caf%C3%A9"}, (b"", b"/caf\xc3\xa9")),
        ({"path": "/caf\xe9"}, (b"", b"/caf\xc3\xa9")),  # a server without raw_path
        ({"root_path": "/m", "path": "/m/x", "raw_path": b"/m/x"}, (b"/m", b"/x")),  # uvicorn: the mount point included
        ({"root_path": "/m", "path": "/x", "raw_path": b"/x"}, (b"/m", b"/x")),  # servers that leave it out
    ],
)
def test_the_path_is_what_a_wsgi_server_puts_in_script_name_and_path_info(
    scope: dict[str, Any], expected: tuple[bytes, bytes]
) -> None:
    assert scope_path(scope) == expected


class GatedCache(MemoryCache):
    """A cache whose next ``get`` hangs until released: a slow or stuck backend."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_next = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()

    def get(self, key: str) -> bytes | None:
        if self.hold_next.is_set():
            self.hold_next.clear()
            self.held.set()
            self.release.wait(60)
        return super().get(key)


def test_a_stuck_backend_call_does_not_stall_other_requests() -> None:
    cache = GatedCache()
    harness = ASGIHarness(behaviour.app, cache=cache, queue=MemoryQueue())
    harness.get_after_work("/hello", "cached=1")

    async def scenario() -> None:
        cache.hold_next.set()
        stuck = asyncio.create_task(harness.arequest("GET", "/hello", "stuck=1"))
        assert await asyncio.to_thread(cache.held.wait, 60), "the first request reached the backend"
        hit = await asyncio.wait_for(harness.arequest("GET", "/hello", "cached=1"), 60)
        miss = await asyncio.wait_for(harness.arequest("GET", "/hello", "other=1"), 60)
        posted = await asyncio.wait_for(harness.arequest("POST", "/form", body=b"x"), 60)
        assert not stuck.done(), "the stuck request is still waiting for its backend call"
        cache.release.set()
        assert (await stuck).status == 202
        assert (hit.status, hit.body) == (200, b"hello cached=1")
        assert miss.status == 202
        assert posted.status == 201

    asyncio.run(scenario())


class NativeAsyncCache(MemoryCache):
    """A cache with coroutine twins of the methods the middleware uses, recording which ran."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.native: list[str] = []
        self.blocking: list[str] = []

    def get(self, key: str) -> bytes | None:
        self.blocking.append("get")
        return super().get(key)

    async def aget(self, key: str) -> bytes | None:
        self.native.append("get")
        if self.fail:
            raise ConnectionError("the server went away")
        return super().get(key)

    async def aadd(self, key: str, value: bytes, ttl: float) -> bool:
        self.native.append("add")
        return super().add(key, value, ttl)

    async def adelete(self, key: str) -> None:
        self.native.append("delete")
        super().delete(key)


class NativeAsyncQueue(MemoryQueue):
    def __init__(self) -> None:
        super().__init__()
        self.native: list[str] = []

    async def apush(self, key: str, payload: bytes, limit: int | None = None) -> None:
        self.native.append("push")
        super().push(key, payload, limit)


def test_a_backend_with_native_coroutines_is_awaited_directly() -> None:
    cache, queue = NativeAsyncCache(), NativeAsyncQueue()
    harness = ASGIHarness(behaviour.app, cache=cache, queue=queue)
    assert harness.request("GET", "/hello", "n=1").status == 202
    assert (cache.native, queue.native, cache.blocking) == (["get", "add", "get"], ["push"], [])
    assert queue.stats()["queued"] == 1


def test_a_native_driver_error_is_an_outage_answer_not_a_traceback() -> None:
    harness = ASGIHarness(behaviour.app, cache=NativeAsyncCache(fail=True), queue=NativeAsyncQueue())
    down = harness.request("GET", "/hello")
    assert down.status == 503
    assert down.header("Retry-After") == "1"


def test_starlette_add_middleware_passes_the_options() -> None:
    from starlette.applications import Starlette

    url = f"memory://{uuid.uuid4().hex}"
    app = Starlette()
    app.add_middleware(ASGIMiddleware, url=url, ttl=42, retry_after=3)
    offloader = find_offloader(app)
    assert offloader is not None
    assert (offloader.url, offloader.settings.ttl, offloader.settings.retry_after) == (url, 42, 3)


def test_expire_drops_answers_by_path() -> None:
    harness = ASGIHarness(behaviour.app, url=f"memory://{uuid.uuid4().hex}")
    harness.get_after_work("/hello", "a=1")
    assert isinstance(harness.offloader.cache, MemoryCache)
    assert harness.middleware.expire("/hel*", {"a": "1"}) == 1
    assert harness.request("GET", "/hello", "a=1").status == 202


def test_the_cached_answer_is_sent_as_latin_1_bytes() -> None:
    harness = ASGIHarness(behaviour.app, url=f"memory://{uuid.uuid4().hex}")
    key = _key(harness, "/x")
    answer = CachedResponse(299, (("X-Name", "caf\xe9"), ("x-name", "b")), b"\x00\xff", expires=time.time() + 60)
    harness.offloader.cache.set(harness.offloader.response_key(key), answer.encode(), 60)
    result = harness.request("GET", "/x")
    expected = (299, [("X-Name", "caf\xe9"), ("x-name", "b")], b"\x00\xff")
    assert (result.status, result.app_headers, result.body) == expected


def _key(harness: ASGIHarness, path: str) -> str:
    return harness.middleware.key_for(f"http://testserver{path}")
