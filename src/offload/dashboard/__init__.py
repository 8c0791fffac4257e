"""The operator's dashboard: queues, running and dead jobs, slow URLs, hit ratio, expiry; mountable anywhere.

::

    import offload.dashboard

    def staff_only(request):                       # your check: a session, a header, a client certificate
        return request.raw.get("REMOTE_USER") in {"alice", "bob"}

    dashboard = offload.dashboard.wsgi_app(app.wsgi_app, auth=staff_only)
    # mount it, e.g. werkzeug's DispatcherMiddleware(app.wsgi_app, {"/offload": dashboard})

``asgi_app(...)`` is the same for ASGI apps (Starlette's ``Mount("/offload",
app=...)``); ``offload dashboard --url ...`` serves it by itself. There is no
default that lets anyone in: ``auth`` is required (:func:`basic_auth` builds
one from a user name and a password). ``read_only=True`` shows everything and
refuses every action. See :mod:`offload.dashboard.app` for the routes and the
CSRF protection, :mod:`offload.dashboard.data` for where each figure comes from.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from offload.dashboard.app import Auth, Dashboard, Request, Response
from offload.dashboard.data import Source

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["Auth", "Dashboard", "Request", "asgi_app", "basic_auth", "loopback_only", "wsgi_app"]


def _dashboard(
    target: Any, url: str | None, namespace: str | None, auth: Auth, read_only: bool, metrics_url: str | None
) -> Dashboard:
    from offload.importer import offloader_of

    offloader = offloader_of(target) if target is not None else None
    return Dashboard(Source(offloader, url, namespace, metrics_url), auth, read_only=read_only)


def wsgi_app(
    target: Any = None,
    *,
    auth: Auth,
    url: str | None = None,
    namespace: str | None = None,
    read_only: bool = False,
    metrics_url: str | None = None,
) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    """The dashboard as a WSGI app.

    :param target: an offload middleware (or an app holding one): the
        dashboard shows its namespace. Without it, every namespace of the
        store ``url`` names (``OFFLOAD_URL``, else the SQLite default).
    :param auth: called with each :class:`Request`; only a true answer passes.
    :param namespace: with ``url``, show only this namespace.
    :param read_only: refuse every action (retry, expire).
    :param metrics_url: a Prometheus exposition to read hit ratios and fill
        times from, when this process has no metrics of its own.
    """
    dashboard = _dashboard(target, url, namespace, auth, read_only, metrics_url)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        mount = environ.get("SCRIPT_NAME", "")
        path = environ.get("PATH_INFO", "")
        if path == "" and environ.get("REQUEST_METHOD") == "GET":  # mounted at /x: the page's links need /x/
            start_response("308 Permanent Redirect", [("Location", f"{mount}/"), ("Content-Length", "0")])
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(min(length, 65536)) if length > 0 else b""
        headers = {
            key[5:].lower().replace("_", "-"): str(value) for key, value in environ.items() if key[:5] == "HTTP_"
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        request = Request(
            str(environ.get("REQUEST_METHOD", "GET")), path, headers, environ.get("REMOTE_ADDR"), body, mount, environ
        )
        response = dashboard.handle(request)
        start_response(response.status_line, [*response.headers, ("Content-Length", str(len(response.body)))])
        return [b"" if request.method == "HEAD" else response.body]

    app.dashboard = dashboard  # type: ignore[attr-defined]
    return app


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


def asgi_app(
    target: Any = None,
    *,
    auth: Auth,
    url: str | None = None,
    namespace: str | None = None,
    read_only: bool = False,
    metrics_url: str | None = None,
) -> ASGIApp:
    """The dashboard as an ASGI app; the options are those of :func:`wsgi_app`.

    Backend calls run in a thread, so the event loop never blocks on them.
    """
    dashboard = _dashboard(target, url, namespace, auth, read_only, metrics_url)

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body") or len(body) > 65536:
                break
        headers = {
            bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1") for name, value in scope["headers"]
        }
        mount = scope.get("root_path", "")
        path = scope.get("path", "")
        if mount and path.startswith(mount):
            path = path[len(mount) :]
        client = scope.get("client")
        request = Request(scope["method"], path, headers, client[0] if client else None, body, mount, scope)
        if path == "" and request.method == "GET":
            response = Response(308, [("Location", f"{mount}/")])
        else:
            response = await asyncio.get_running_loop().run_in_executor(None, dashboard.handle, request)
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
        raw.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else response.body})

    app.dashboard = dashboard  # type: ignore[attr-defined]
    return app


def loopback_only(request: Request) -> bool:
    """Let in requests from this machine only (127.0.0.0/8, ::1): what ``offload dashboard`` uses without ``--auth``."""
    try:
        return request.remote_addr is not None and ipaddress.ip_address(request.remote_addr).is_loopback
    except ValueError:
        return False


def basic_auth(username: str, password: str, realm: str = "offload") -> Auth:
    """An ``auth`` check for HTTP Basic credentials (serve it over HTTPS); browsers ask for them on a 401."""
    expected = base64.b64encode(f"{username}:{password}".encode()).decode()

    def check(request: Request) -> bool:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "basic" and hmac.compare_digest(sent.strip().encode(), expected.encode())

    check.challenge = f'Basic realm="{realm}"'  # type: ignore[attr-defined]
    return check
