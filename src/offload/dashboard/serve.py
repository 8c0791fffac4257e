"""``offload dashboard``: the dashboard served by itself, on a threaded standard-library server.

Without ``--auth`` it listens on loopback addresses only and lets in requests
from this machine only (:func:`offload.dashboard.loopback_only`), and it says
so when it starts: anyone with a shell on the machine can use it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from offload.dashboard import Auth, loopback_only, wsgi_app
from offload.serving import parse_bind

log = logging.getLogger("offload.dashboard")


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_dashboard(
    url: str | None,
    namespace: str | None,
    bind: str,
    auth_spec: str | None,
    read_only: bool,
    metrics_url: str | None,
) -> int:
    """Serve until interrupted; returns the exit code."""
    try:
        host, port = parse_bind(bind)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--bind") from None
    auth: Auth
    if auth_spec is None:
        if not is_loopback(host):
            raise click.UsageError(
                f"--bind {bind} is reachable from other machines: name an --auth MODULE:ATTR check, "
                "or bind 127.0.0.1 and reach it through an SSH tunnel"
            )
        auth = loopback_only
    else:
        from offload.importer import import_app

        auth = import_app(auth_spec)
        if not callable(auth):
            raise click.BadParameter(f"{auth_spec} is not callable", param_hint="--auth")
    app = wsgi_app(auth=auth, url=url, namespace=namespace, read_only=read_only, metrics_url=metrics_url)
    server_class = _IPv6Server if ":" in host else _Server
    with make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler) as server:
        shown = f"[{host}]" if ":" in host else host
        where = f"http://{shown}:{server.server_address[1]}/"
        if auth_spec is None:
            log.warning(
                "dashboard on %s WITHOUT --auth: anyone who can open a connection on this machine can use it%s",
                where,
                "" if read_only else " (retry and expire included; --read-only refuses them)",
            )
        else:
            log.info("dashboard on %s, checked by %s%s", where, auth_spec, " (read-only)" if read_only else "")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0
