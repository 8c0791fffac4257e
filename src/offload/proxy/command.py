"""``offload proxy``: offload in front of an HTTP server, with its worker processes.

It runs uvicorn serving :mod:`offload.proxy.served` (the app of
:func:`offload.proxy.proxy_app`) and N ``offload worker`` processes that fetch
from the upstream, supervised together as ``offload serve`` does.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from offload import logs
from offload.cli_options import log_format_option, log_level_option
from offload.proxy.served import ENVIRONMENT
from offload.serving import Supervisor, parse_bind

#: The app every process of the proxy imports.
APP = "offload.proxy.served:app"


class ProxySupervisor(Supervisor):
    """``offload serve``'s supervisor, for the proxy's app: uvicorn as a proxy, workers that fetch."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(APP, protocol="asgi", **kwargs)
        self.config = config

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env[ENVIRONMENT] = json.dumps(self.config)
        return env

    def server_command(self) -> list[str]:
        # The upstream's Date and Server are sent on; clients' idle connections are kept as long as nginx does.
        return [*super().server_command(), "--no-server-header", "--no-date-header", "--timeout-keep-alive", "75"]


@click.command()
@click.option(
    "--upstream", "-u", required=True, metavar="URL", help="The HTTP server behind the proxy: http://host:port"
)
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", "-w", default=1, show_default=True, type=click.IntRange(0, 256), help="Worker processes.")
@click.option(
    "--url",
    envvar="OFFLOAD_URL",
    default=None,
    help="Backend URL: sqlite:///file, memory://, redis://..., postgresql://... [env: OFFLOAD_URL]",
)
@click.option(
    "--web-processes", default=2, show_default=True, type=click.IntRange(1, 256), help="HTTP server processes."
)
@click.option(
    "--concurrency", "-c", default=16, show_default=True, type=click.IntRange(1, 256), help="Fetches per worker."
)
@click.option(
    "--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1), help="Seconds to wait for the upstream."
)
@click.option(
    "--miss-wait",
    default=None,
    type=click.FloatRange(0),
    help="Seconds a miss waits for its fetch (default: --timeout + 5); 0 answers 202 at once.",
)
@click.option(
    "--stale-if-error",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds the last good answer is served while the upstream fails.",
)
@click.option(
    "--no-shared-cache",
    is_flag=True,
    help="Offload's middleware rules instead of RFC 9111's (keyed on vary, kept for ttl).",
)
@log_level_option
@log_format_option
def proxy(
    upstream: str,
    bind: str,
    workers: int,
    url: str | None,
    web_processes: int,
    concurrency: int,
    timeout: float,
    miss_wait: float | None,
    stale_if_error: float,
    no_shared_cache: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Serve --upstream through offload: GETs cached and fetched once per URL by workers; the rest streams through."""
    logs.configure(json=log_format == "json", level=log_level)
    if log_format == "json":  # the web and worker processes read it
        os.environ["OFFLOAD_LOG_FORMAT"] = "json"
    try:
        host, port = parse_bind(bind)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--bind") from None
    options: dict[str, Any] = {"timeout": timeout, "stale_if_error": stale_if_error}
    if miss_wait is not None:
        options["miss_wait"] = miss_wait
    if no_shared_cache:
        options["shared_cache"] = False
    config = {"upstream": upstream, "options": options}
    try:  # a bad URL or option is reported here, once, not by every child
        from offload.proxy.app import proxy_app

        proxy_app(upstream, url="memory://offload-proxy-check", **options)
    except Exception as error:
        raise click.BadParameter(str(error), param_hint="--upstream") from None
    supervisor = ProxySupervisor(
        config,
        url=url,
        host=host,
        port=port,
        workers=workers,
        web_processes=web_processes,
        concurrency=concurrency,
        log_level=log_level,
    )
    sys.exit(supervisor.run())
