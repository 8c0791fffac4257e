"""The dashboard's requests and answers, free of WSGI and ASGI: :func:`handle` maps one to the other.

Routes, relative to where the dashboard is mounted:

``GET /``                 the page (plain HTML, CSS and JS shipped in the package)
``GET /static/NAME``      its stylesheet and script
``GET /api/overview``     what the page shows, as JSON (:func:`offload.dashboard.data.overview`)
``POST /api/revive``      put a dead letter back in its queue: ``{"namespace", "job_id"}``
``POST /api/expire``      ``Offloader.expire``: ``{"namespace", "path", "params", "tag", "soft", "refresh"}``

Every request passes the ``auth`` check first. Actions are POST only, and
carry the CSRF token of the page (double submit: a random token in an
``HttpOnly; SameSite=Strict`` cookie and in the page, sent back in the
``X-Offload-CSRF`` header, compared in constant time); a cross-site
``Origin`` is refused too. In read-only mode every action is refused.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from offload.dashboard.data import Source, overview, retry_dead_letter
from offload.errors import OffloadError

CSRF_COOKIE = "offload_dashboard_csrf"
CSRF_HEADER = "x-offload-csrf"
STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
)


@dataclass
class Request:
    """A request to the dashboard, as the ``auth`` callable gets it.

    ``headers`` by lowercase name; ``remote_addr`` the client's address as
    the server saw it; ``raw`` the WSGI environ or the ASGI scope, for checks
    that need more (a session your framework put there, a client certificate).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    remote_addr: str | None
    body: bytes = b""
    mount: str = ""
    raw: Any = None

    @property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no cookie
            return {}
        return {name: morsel.value for name, morsel in jar.items()}


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def status_line(self) -> str:
        from http import HTTPStatus

        return f"{self.status} {HTTPStatus(self.status).phrase}"


#: The auth check: given the request, whether it may see (and act on) the dashboard.
Auth = Callable[[Request], bool]


def _json(status: int, data: Any) -> Response:
    body = json.dumps(data, default=str).encode()
    return Response(status, [("Content-Type", "application/json"), *SECURITY_HEADERS], body)


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


class Dashboard:
    """The dashboard of one :class:`~offload.dashboard.data.Source`, behind ``auth``."""

    def __init__(self, source: Source, auth: Auth, *, read_only: bool = False, refresh: float = 2.0) -> None:
        if not callable(auth):
            raise TypeError("auth must be a callable taking the request and returning whether it may pass")
        self.source = source
        self.auth = auth
        self.read_only = read_only
        self.refresh = refresh

    def handle(self, request: Request) -> Response:
        try:
            allowed = bool(self.auth(request))
        except Exception:  # a failing check lets nobody in
            allowed = False
        if not allowed:
            challenge = getattr(self.auth, "challenge", None)
            if challenge:
                return Response(401, [("WWW-Authenticate", str(challenge)), *SECURITY_HEADERS], b"unauthorized\n")
            return Response(403, [("Content-Type", "text/plain"), *SECURITY_HEADERS], b"forbidden\n")
        path = request.path or "/"
        if request.method in ("GET", "HEAD"):
            if path == "/":
                return self.page(request)
            if path.startswith("/static/") and path[8:] in STATIC:
                name = path[8:]
                body = resources.files("offload.dashboard").joinpath("static", name).read_bytes()
                return Response(200, [("Content-Type", STATIC[name]), ("Cache-Control", "no-cache")], body)
            if path == "/api/overview":
                try:
                    data = overview(self.source)
                except (OffloadError, OSError) as error:
                    return _error(503, f"the backend cannot be read: {error}")
                data["read_only"] = self.read_only
                return _json(200, data)
            return _error(404, "no such page")
        if request.method != "POST":
            return Response(405, [("Allow", "GET, HEAD, POST"), *SECURITY_HEADERS], b"")
        refusal = self.refuse_action(request)
        if refusal is not None:
            return refusal
        try:
            form = json.loads(request.body or b"{}")
            if not isinstance(form, dict):
                raise ValueError("not an object")
        except ValueError:
            return _error(400, "the body is not a JSON object")
        try:
            if path == "/api/revive":
                return self.revive(form)
            if path == "/api/expire":
                return self.expire(form)
        except KeyError:
            return _error(404, "no such namespace")
        except (OffloadError, OSError) as error:
            return _error(503, f"the backend failed: {error}")
        return _error(404, "no such action")

    def refuse_action(self, request: Request) -> Response | None:
        """Why an action must not run: read-only mode, a missing or wrong CSRF token, a foreign origin."""
        if self.read_only:
            return _error(403, "the dashboard is read-only")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        sent = request.headers.get(CSRF_HEADER, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
            return _error(403, "missing or wrong CSRF token: reload the page")
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
            return _error(403, "a request from another site")
        return None

    def page(self, request: Request) -> Response:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        template = resources.files("offload.dashboard").joinpath("static", "index.html").read_text("utf-8")
        body = (
            template.replace("{{csrf}}", html.escape(token))
            .replace("{{read_only}}", "true" if self.read_only else "false")
            .replace("{{refresh}}", str(int(self.refresh * 1000)))
        ).encode()
        cookie = f"{CSRF_COOKIE}={token}; Path={request.mount or '/'}; HttpOnly; SameSite=Strict"
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Set-Cookie", cookie), *SECURITY_HEADERS]
        return Response(200, headers, body)

    def revive(self, form: Mapping[str, Any]) -> Response:
        offloader = self.source.offloader_for(str(form.get("namespace", "")))
        job_id = str(form.get("job_id", ""))
        if not retry_dead_letter(offloader, job_id):
            return _error(404, f"no dead letter {job_id}")
        return _json(200, {"revived": job_id})

    def expire(self, form: Mapping[str, Any]) -> Response:
        offloader = self.source.offloader_for(str(form.get("namespace", "")))
        path = str(form.get("path") or "").strip() or None
        tag = str(form.get("tag") or "").strip() or None
        if path is None and tag is None:
            return _error(400, "name a path pattern, a tag, or both")
        params = parse_qsl(str(form.get("params") or "").lstrip("?"), keep_blank_values=True)
        count = offloader.expire(
            path, params or None, tag=tag, soft=bool(form.get("soft")), refresh=bool(form.get("refresh"))
        )
        return _json(200, {"expired": count})
