"""``offload proxy`` through real servers: uvicorn and a worker process in front of real upstreams.

The upstreams run in processes of their own: a Python ``http.server``
(``tests/proxy/upstream.py``) and Node's ``http`` module
(``tests/proxy/node_upstream.js``), so what is compared is what goes over the
wire, byte for byte.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.proxy.conftest import Proxy, Started, start_proxy, start_upstream
from tests.proxy.upstream import pattern

MIB = 1024 * 1024


def seen(upstream: Started, path: str) -> dict[str, object]:
    """What the Python upstream saw of ``path``: how many requests, and the last one's If-None-Match."""
    answer: dict[str, object] = httpx.get(f"{upstream.url}/_seen", params={"path": path}, timeout=5).json()
    return answer


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


def test_gets_are_byte_exact_and_served_from_the_store(proxy: Proxy, upstream: Started) -> None:
    path = unique("/bytes")
    direct = httpx.get(f"{upstream.url}{path}?size=300000", timeout=10)
    first = httpx.get(f"{proxy.url}{path}?size=300000", timeout=10)
    again = httpx.get(f"{proxy.url}{path}?size=300000", timeout=10)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content == direct.content == pattern(300000)
    for name in ("cache-control", "etag", "content-type", "content-length"):
        assert first.headers[name] == again.headers[name] == direct.headers[name]
    assert "hit" in again.headers["cache-status"]
    assert seen(upstream, path)["count"] == 2, "the proxy fetched it once; the direct request is the other one"


def test_a_storm_of_misses_makes_one_upstream_request(proxy: Proxy, upstream: Started) -> None:
    path = unique("/slow")
    barrier = threading.Barrier(20)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait()
        answer = httpx.get(f"{proxy.url}{path}?delay=0.5", timeout=30)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answer.status_code for answer in answers] == [200] * 20
    assert {answer.text for answer in answers} == {"slow 1"}
    assert seen(upstream, path)["count"] == 1


def test_a_100_mib_post_streams_through_in_bounded_memory(proxy: Proxy, upstream: Started) -> None:
    size = 100 * MIB
    chunk = pattern(MIB)
    server = proxy.server_pid()
    before = _rss(server)

    def body() -> Iterator[bytes]:
        for _ in range(size // MIB):
            yield chunk

    answer = httpx.post(f"{proxy.url}/upload", content=body(), headers={"Content-Length": str(size)}, timeout=60)
    assert answer.status_code == 200
    expected = hashlib.sha256()
    for _ in range(size // MIB):
        expected.update(chunk)
    assert answer.json() == {"length": size, "sha256": expected.hexdigest()}
    grown = _peak_rss(server) - before
    assert grown < 30 * MIB, f"the server process grew by {grown / MIB:.0f} MiB while 100 MiB went through"


def _rss(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def _peak_rss(pid: int) -> int:
    return _status_kib(pid, "VmHWM") * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def test_a_slow_upstream_is_a_504_after_the_timeout(proxy: Proxy, upstream: Started) -> None:
    started = time.monotonic()
    answer = httpx.get(f"{proxy.url}{unique('/slow')}?delay=5", timeout=30)
    elapsed = time.monotonic() - started
    assert answer.status_code == 504
    assert answer.headers["retry-after"].isdigit()
    assert 1.5 < elapsed < 4.5, f"answered after {elapsed:.1f}s, with a 2s upstream timeout"


def test_revalidation_with_a_304_freshens_the_stored_answer(proxy: Proxy, upstream: Started) -> None:
    path = unique("/etag")
    first = httpx.get(f"{proxy.url}{path}", timeout=10)
    assert (first.status_code, first.text, first.headers["x-version"]) == (200, "version one", "1")
    time.sleep(1.6)  # it was fresh for 1 s
    second = httpx.get(f"{proxy.url}{path}", timeout=10)
    assert seen(upstream, path) == {"count": 2, "if_none_match": '"v1"'}, "the worker asked conditionally"
    assert (second.status_code, second.text) == (200, "version one"), "the stored body, not the 304's"
    assert second.headers["x-version"] == "2", "with the headers the 304 updated"
    assert second.headers["cache-control"] == "max-age=60"
    third = httpx.get(f"{proxy.url}{path}", timeout=10)
    assert (third.text, third.headers["x-version"]) == ("version one", "2")
    assert seen(upstream, path)["count"] == 2, "fresh again for 60 s"


def echoed(proxy: Proxy, method: str, target: str, headers: list[tuple[str, str]]) -> dict[str, str]:
    """The header fields the Node upstream received for a request sent with exactly ``headers``."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in [("Host", f"127.0.0.1:{proxy.port}"), *headers]:
            connection.putheader(name, value)
        connection.endheaders(b"x" if method == "POST" else None)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        raw = json.loads(response.read())["headers"]
    finally:
        connection.close()
    return {name.lower(): value for name, value in zip(raw[::2], raw[1::2], strict=True)}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_hop_by_hop_fields_stay_on_their_hop_and_forwarding_fields_are_added(
    node_proxy: Proxy, node_upstream: Started, method: str
) -> None:
    sent = [("Connection", "keep-alive, X-Private"), ("X-Private", "no"), ("Keep-Alive", "5"), ("X-End", "yes")]
    if method == "POST":
        sent.append(("Content-Length", "1"))
    received = echoed(node_proxy, method, f"/node/echo?{uuid.uuid4().hex}", sent)
    assert received["x-end"] == "yes"
    assert "x-private" not in received and "keep-alive" not in received
    assert received["x-forwarded-for"] == "127.0.0.1"
    assert received["x-forwarded-proto"] == "http"
    assert received["x-forwarded-host"] == f"127.0.0.1:{node_proxy.port}"
    assert received["forwarded"] == f'for=127.0.0.1;host="127.0.0.1:{node_proxy.port}";proto=http'
    assert received["via"] == "1.1 offload"
    assert received["host"] == f"127.0.0.1:{node_upstream.port}"
    added = set(received) - {"x-end", "host", "connection", "content-length"}
    assert added == {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via"}, (
        "nothing else is added: no Accept-Encoding, User-Agent or Accept the client did not send"
    )


def test_cookies_an_answer_sets_never_go_with_another_request(node_proxy: Proxy, node_upstream: Started) -> None:
    assert httpx.get(f"{node_proxy.url}/node/cookies?{uuid.uuid4().hex}", timeout=10).headers.get_list("set-cookie")
    assert httpx.post(f"{node_proxy.url}/node/cookies", content=b"x", timeout=10).headers.get_list("set-cookie")
    for method in ("GET", "POST"):
        length = [("Content-Length", "1")] if method == "POST" else []
        received = echoed(node_proxy, method, f"/node/echo?{uuid.uuid4().hex}", length)
        assert "cookie" not in received, method


def test_answers_of_a_node_upstream_are_byte_exact(node_proxy: Proxy, node_upstream: Started) -> None:
    for path in ("/node/bytes?size=200000", "/node/chunked", "/node/cookies"):
        direct = httpx.get(f"{node_upstream.url}{path}", timeout=10)
        for attempt in ("fetched", "stored"):
            through = httpx.get(f"{node_proxy.url}{path}", timeout=10)
            assert through.status_code == 200, (path, attempt)
            assert through.content == direct.content, (path, attempt)
            for name in ("cache-control", "content-type", "vary", "x-empty"):
                assert through.headers.get(name) == direct.headers.get(name), (path, attempt, name)
            assert through.headers.get_list("set-cookie") == direct.headers.get_list("set-cookie"), (path, attempt)
        assert "hit" in through.headers["cache-status"]


@pytest.fixture
def lone_upstream(tmp_path: Path) -> Iterator[tuple[Started, Proxy]]:
    """An upstream of its own, which the test may stop, and a proxy in front of it."""
    started = start_upstream(tmp_path)
    proxy = start_proxy(tmp_path, started, "--timeout", "2", name="lone-proxy")
    yield started, proxy
    proxy.stop()
    started.stop()


def test_an_upstream_down_is_a_502_and_stale_if_error_serves_the_last_good_answer(
    lone_upstream: tuple[Started, Proxy],
) -> None:
    upstream, proxy = lone_upstream
    good = httpx.get(f"{proxy.url}/flaky/a", timeout=10)
    assert (good.status_code, good.text) == (200, "good 1")
    upstream.stop()
    time.sleep(1.2)  # the good answer is stale now
    stale = httpx.get(f"{proxy.url}/flaky/a", timeout=10)
    assert (stale.status_code, stale.text) == (200, "good 1"), "stale-if-error=60: the last good answer"
    assert "stale-if-error" in stale.headers["cache-status"]
    down = httpx.get(f"{proxy.url}/flaky/never-fetched", timeout=10)
    assert down.status_code == 502
    assert down.headers["retry-after"].isdigit()
    posted = httpx.post(f"{proxy.url}/upload", content=b"x", timeout=10)
    assert posted.status_code == 502


def test_answers_for_one_client_reach_only_the_request_they_were_fetched_for(proxy: Proxy, upstream: Started) -> None:
    path = unique("/private")
    tokens = [f"Bearer {uuid.uuid4().hex}" for _ in range(6)]
    barrier = threading.Barrier(len(tokens))
    got: dict[str, str] = {}

    def client(token: str) -> None:
        barrier.wait()
        got[token] = httpx.get(f"{proxy.url}{path}", headers={"Authorization": token}, timeout=30).text

    threads = [threading.Thread(target=client, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == {token: token for token in tokens}
    assert seen(upstream, path)["count"] == len(tokens), "private: fetched once per request, never shared"


def test_a_vary_learned_on_a_miss_is_honoured_and_the_waiting_client_is_answered_at_once(
    proxy: Proxy, upstream: Started
) -> None:
    path = unique("/vary")
    started = time.monotonic()
    french = httpx.get(f"{proxy.url}{path}", headers={"Accept-Language": "fr"}, timeout=30)
    assert french.text == "fr"
    assert time.monotonic() - started < 2, "woken when the answer and the Vary were stored"
    german = httpx.get(f"{proxy.url}{path}", headers={"Accept-Language": "de"}, timeout=30)
    again = httpx.get(f"{proxy.url}{path}", headers={"Accept-Language": "fr"}, timeout=30)
    assert (german.text, again.text) == ("de", "fr")
    assert "hit" in again.headers["cache-status"]
    assert seen(upstream, path)["count"] == 2


def test_an_unsafe_method_invalidates_the_stored_answer(proxy: Proxy, upstream: Started) -> None:
    path = unique("/bytes")
    httpx.get(f"{proxy.url}{path}?size=10", timeout=10)
    assert "hit" in httpx.get(f"{proxy.url}{path}?size=10", timeout=10).headers["cache-status"]
    assert httpx.post(f"{proxy.url}{path}", content=b"changed", timeout=10).status_code == 200
    assert httpx.get(f"{proxy.url}{path}?size=10", timeout=10).status_code == 200
    assert seen(upstream, path)["count"] == 3, "fetched, posted, fetched again"


@pytest.mark.parametrize("shared_cache", [True, False])
def test_proxy_app_is_an_asgi_app_of_its_own(upstream: Started, shared_cache: bool) -> None:
    """``offload.proxy_app`` in a process of one's own: a memory:// backend, its worker a thread of the process."""
    import asyncio

    import offload

    app = offload.proxy_app(upstream.url, url=f"memory://{uuid.uuid4().hex}", shared_cache=shared_cache)
    path = unique("/bytes")

    async def exchange() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
            return [await client.get(f"{path}?size=5000") for _ in range(2)]

    first, second = asyncio.run(exchange())
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == pattern(5000)
    assert seen(upstream, path)["count"] == 1


def test_an_answer_larger_than_max_body_is_streamed_instead_of_stored(proxy: Proxy, upstream: Started) -> None:
    path = unique("/bytes")
    size = 11 * MIB  # max_body is 10 MiB
    answer = httpx.get(f"{proxy.url}{path}?size={size}", timeout=30)
    assert answer.status_code == 200
    assert answer.content == pattern(size)
    assert seen(upstream, path)["count"] == 2, "the worker stopped at the length, then the request streamed"
    again = httpx.get(f"{proxy.url}{path}?size={size}", timeout=30)
    assert again.content == pattern(size)
    assert seen(upstream, path)["count"] == 3, "streamed straight through from then on"
