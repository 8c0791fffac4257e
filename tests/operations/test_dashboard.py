"""The dashboard's app in-process: auth, CSRF, read-only, the overview and its actions, on both protocols."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import pytest

import offload.dashboard
from offload.backends import Claim
from offload.dashboard.app import CSRF_COOKIE
from tests.behaviour import apps
from tests.behaviour.harness import WSGIHarness


def everyone(request: offload.dashboard.Request) -> bool:
    return True


class Client:
    """Calls a dashboard WSGI app like a browser: keeps its cookie, sends the page's token."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookie = ""

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "/ops",
            "PATH_INFO": path,
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "testserver",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.input": io.BytesIO(data),
        }
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        seen: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
            seen["status"], seen["headers"] = int(status.split()[0]), response_headers

        seen["body"] = b"".join(self.app(environ, start_response))
        for name, value in seen["headers"]:
            if name == "Set-Cookie":
                self.cookie = value.split(";")[0]
        return seen

    @property
    def token(self) -> str:
        return self.cookie.partition("=")[2]

    def action(self, name: str, body: dict[str, Any], token: str | None = None) -> Any:
        return self.call("POST", f"/api/{name}", body, {"X-Offload-CSRF": self.token if token is None else token})


@pytest.fixture
def harness() -> WSGIHarness:
    return WSGIHarness(apps.wsgi_app, url=f"memory://{uuid.uuid4().hex}", namespace="dash")


def test_nobody_passes_a_check_that_says_no_or_fails(harness: WSGIHarness) -> None:
    def broken(request: offload.dashboard.Request) -> bool:
        raise RuntimeError("the session store is down")

    for check in (lambda request: False, broken):
        assert Client(offload.dashboard.wsgi_app(harness.middleware, auth=check)).call("GET", "/")["status"] == 403
    with pytest.raises(TypeError):
        offload.dashboard.wsgi_app(harness.middleware)  # type: ignore[call-arg]
    basic = offload.dashboard.basic_auth("ops", "secret")
    client = Client(offload.dashboard.wsgi_app(harness.middleware, auth=basic))
    denied = client.call("GET", "/")
    assert denied["status"] == 401 and ("WWW-Authenticate", 'Basic realm="offload"') in denied["headers"]
    assert client.call("GET", "/", headers={"Authorization": "Basic b3BzOnNlY3JldA=="})["status"] == 200


def test_the_page_and_the_overview(harness: WSGIHarness) -> None:
    harness.request("GET", "/hello", "a=1")
    harness.request("GET", "/slow")
    claim = harness.offloader.queue.claim(lease=30, wait=0.1)
    assert isinstance(claim, Claim)
    client = Client(offload.dashboard.wsgi_app(harness.middleware, auth=everyone))
    page = client.call("GET", "/")
    assert page["status"] == 200 and client.token and client.token.encode() in page["body"]
    assert any(name == "Content-Security-Policy" for name, _ in page["headers"])
    assert f"{CSRF_COOKIE}=" in client.cookie
    assert client.call("GET", "/static/dashboard.js")["status"] == 200
    data = json.loads(client.call("GET", "/api/overview")["body"])
    (namespace,) = data["namespaces"]
    assert namespace["name"] == "dash" and namespace["queued"] == 1 and namespace["running"] == 1
    assert [job["path"] for job in namespace["running_jobs"]] == ["/hello?a=1"]
    assert [job["path"] for job in namespace["waiting"]] == ["/slow"]
    assert namespace["running_jobs"][0]["lease_left"] > 20


def test_actions_need_the_token_and_post(harness: WSGIHarness) -> None:
    client = Client(offload.dashboard.wsgi_app(harness.middleware, auth=everyone))
    client.call("GET", "/")
    assert client.action("expire", {"namespace": "dash", "path": "/*"}, token="forged")["status"] == 403
    assert client.call("POST", "/api/expire", {"namespace": "dash", "path": "/*"})["status"] == 403
    foreign = client.call(
        "POST",
        "/api/expire",
        {"namespace": "dash", "path": "/*"},
        {"X-Offload-CSRF": client.token, "Origin": "https://evil.example"},
    )
    assert foreign["status"] == 403
    assert client.call("GET", "/api/expire")["status"] == 404  # a GET never acts
    assert client.action("expire", {"namespace": "nope", "path": "/*"})["status"] == 404


def test_retry_a_dead_letter_and_expire_an_answer(harness: WSGIHarness) -> None:
    harness.get_after_work("/hello")
    harness.request("GET", "/slow")
    queue = harness.offloader.queue
    claim = queue.claim(lease=30, wait=0.1)
    assert claim is not None
    queue.bury(claim, "its worker stopped each time")
    client = Client(offload.dashboard.wsgi_app(harness.middleware, auth=everyone))
    client.call("GET", "/")
    (letter,) = json.loads(client.call("GET", "/api/overview")["body"])["namespaces"][0]["dead_letters"]
    assert letter["error"] == "its worker stopped each time" and letter["path"] == "/slow"
    assert client.action("revive", {"namespace": "dash", "job_id": letter["job_id"]})["status"] == 200
    assert queue.stats() == {"queued": 1, "running": 0, "dead": 0}
    assert client.action("revive", {"namespace": "dash", "job_id": letter["job_id"]})["status"] == 404
    expired = client.action("expire", {"namespace": "dash", "path": "/hel*", "params": ""})
    assert json.loads(expired["body"]) == {"expired": 1}
    assert harness.request("GET", "/hello").status == 202


def test_read_only_refuses_every_action(harness: WSGIHarness) -> None:
    client = Client(offload.dashboard.wsgi_app(harness.middleware, auth=everyone, read_only=True))
    client.call("GET", "/")
    assert client.action("expire", {"namespace": "dash", "path": "/*"})["status"] == 403
    assert json.loads(client.call("GET", "/api/overview")["body"])["read_only"] is True


def test_the_asgi_app_answers_the_same(harness: WSGIHarness) -> None:
    app = offload.dashboard.asgi_app(harness.middleware, auth=offload.dashboard.loopback_only)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def call(path: str, client: tuple[str, int]) -> int:
        sent.clear()
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [], "client": client}
        asyncio.run(app(scope, receive, send))
        return int(sent[0]["status"])

    assert call("/api/overview", ("127.0.0.1", 5000)) == 200
    assert json.loads(sent[1]["body"])["namespaces"][0]["name"] == "dash"
    assert call("/api/overview", ("10.0.0.8", 5000)) == 403
