"""The ``offload`` command: run workers, serve an app, inspect and expire the cache.

Every command takes ``--url`` (default: ``OFFLOAD_URL``, else the embedded
SQLite file ``offload.sqlite3`` in the working directory).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from offload import logs
from offload.backends import DEFAULT_NAMESPACE, Cache, Queue, open_backend, resolve_url
from offload.errors import OffloadError
from offload.keys import target_from_url
from offload.proxy.command import proxy

F = TypeVar("F", bound=Callable[..., Any])


def url_option(func: F) -> F:
    """The shared ``--url`` option, read from ``OFFLOAD_URL`` when not given."""
    return click.option(
        "--url",
        envvar="OFFLOAD_URL",
        default=None,
        help="Backend URL: sqlite:///file, memory://, redis://..., postgresql://... [env: OFFLOAD_URL]",
    )(func)


def parts_options(func: F) -> F:
    """``--cache`` and ``--queue``: take one part from another backend (memcached cache, Redis queue)."""
    func = click.option(
        "--queue",
        "queue_url",
        envvar="OFFLOAD_QUEUE_URL",
        default=None,
        help="Queue URL, when it is not the --url backend's [env: OFFLOAD_QUEUE_URL]",
    )(func)
    return click.option(
        "--cache",
        "cache_url",
        envvar="OFFLOAD_CACHE_URL",
        default=None,
        help="Cache URL, e.g. memcached://host:11211, when it is not the --url backend's [env: OFFLOAD_CACHE_URL]",
    )(func)


def open_cache(url: str | None, cache_url: str | None, namespace: str = DEFAULT_NAMESPACE) -> Cache | None:
    """The cache the options name: ``--cache`` when given, else the ``--url`` backend's."""
    from offload.adapters import adapt_cache

    return adapt_cache(cache_url, namespace) if cache_url else open_backend(url, namespace).cache


def open_queue(url: str | None, queue_url: str | None, namespace: str = DEFAULT_NAMESPACE) -> Queue | None:
    """The queue the options name: ``--queue`` when given, else the ``--url`` backend's."""
    from offload.adapters import adapt_queue

    return adapt_queue(queue_url, namespace) if queue_url else open_backend(url, namespace).queue


def namespace_option(func: F) -> F:
    """``--namespace``: act on one namespace of the store instead of all of them."""
    return click.option(
        "--namespace",
        "-n",
        default=None,
        help="Only this namespace (default: every namespace the store holds).",
    )(func)


def store_namespaces(url: str | None, cache_url: str | None, queue_url: str | None) -> list[str]:
    """Every namespace the store holds: what its cache and its queue list."""
    found: set[str] = set()
    cache, queue = open_cache(url, cache_url), open_queue(url, queue_url)
    for part in (cache, queue):
        if part is not None:
            found.update(part.namespaces())
            part.close()
    return sorted(found)


def protocol_option(func: F) -> F:
    return click.option(
        "--protocol",
        type=click.Choice(["auto", "wsgi", "asgi"]),
        default="auto",
        show_default=True,
        help="Treat the app as WSGI or ASGI instead of detecting it.",
    )(func)


def log_format_option(func: F) -> F:
    """``--log-format``: timestamped text lines, or one JSON object per line."""
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        envvar="OFFLOAD_LOG_FORMAT",
        default="text",
        show_default=True,
        help="Log lines as text or as one JSON object per line [env: OFFLOAD_LOG_FORMAT]",
    )(func)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s", stream=sys.stderr
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="offload")
def main() -> None:
    """offload: slow GET endpoints computed by background workers, served from a cache."""


@main.command()
@click.argument("app")
@url_option
@parts_options
@click.option(
    "--concurrency", "-c", default=1, show_default=True, type=click.IntRange(1, 256), help="Jobs run at once (threads)."
)
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option(
    "--nice",
    default=10,
    show_default=True,
    type=click.IntRange(0, 19),
    help="Lower the worker's CPU priority by this much, so web processes on the same machine stay fast.",
)
@protocol_option
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@log_format_option
@click.option(
    "--metrics-port",
    default=None,
    metavar="[HOST:]PORT",
    help="Serve Prometheus metrics on this port (all interfaces unless HOST is given); needs offload[metrics].",
)
def worker(
    app: str,
    url: str | None,
    cache_url: str | None,
    queue_url: str | None,
    concurrency: int,
    burst: bool,
    nice: int,
    protocol: str,
    log_level: str,
    log_format: str,
    metrics_port: str | None,
) -> None:
    """Process queued jobs for APP (MODULE:ATTR, the app wrapped in offload's middleware or the bare app)."""
    from offload.core import Offloader
    from offload.importer import find_offloader, import_app
    from offload.namespaces import namespace_for
    from offload.replay import replayer_for
    from offload.settings import Settings
    from offload.worker import Worker

    logs.configure(json=log_format == "json", level=log_level)
    target = _load(app, import_app)
    found = find_offloader(target)
    if found is not None and not (url or cache_url or queue_url):
        offloader = found
    else:  # a bare app (wrapped with default options, as `offload serve` does), or the command line names the backend
        settings = found.settings if found is not None else Settings(namespace=namespace_for(target))
        namespace = settings.namespace or DEFAULT_NAMESPACE
        offloader = Offloader(
            url=url,
            cache=open_cache(url, cache_url, namespace) if cache_url else None,
            queue=open_queue(url, queue_url, namespace) if queue_url else None,
            settings=settings,
        )
        if found is not None:  # listeners the app's module installed (metrics, logs, traces) follow
            offloader.events = found.events
    logs.install(offloader)
    if metrics_port is not None:
        _serve_metrics(offloader, metrics_port)
    replay = replayer_for(target, None if protocol == "auto" else protocol)
    logging.getLogger("offload.worker").info(
        "worker for %s (namespace %s) on %s, %d thread(s)%s",
        app,
        offloader.namespace,
        _display_url(offloader.url),
        concurrency,
        ", burst" if burst else "",
    )
    if nice:
        with contextlib.suppress(OSError):  # a platform without it keeps the priority
            os.nice(nice)
    runner = Worker(offloader, replay, concurrency=concurrency, burst=burst)
    sys.exit(runner.run())


@main.command()
@click.argument("app")
@url_option
@parts_options
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", "-w", default=1, show_default=True, type=click.IntRange(0, 256), help="Worker processes.")
@click.option(
    "--web-processes", default=2, show_default=True, type=click.IntRange(1, 256), help="HTTP server processes."
)
@click.option(
    "--concurrency", "-c", default=1, show_default=True, type=click.IntRange(1, 256), help="Threads per worker."
)
@protocol_option
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@log_format_option
def serve(
    app: str,
    url: str | None,
    cache_url: str | None,
    queue_url: str | None,
    bind: str,
    workers: int,
    web_processes: int,
    concurrency: int,
    protocol: str,
    log_level: str,
    log_format: str,
) -> None:
    """Serve APP over HTTP (gunicorn for WSGI, uvicorn for ASGI) and run its worker processes."""
    from offload.importer import import_app
    from offload.serving import Supervisor, parse_bind

    logs.configure(json=log_format == "json", level=log_level)
    if log_format == "json":  # the web and worker processes read it
        os.environ["OFFLOAD_LOG_FORMAT"] = "json"
    try:
        host, port = parse_bind(bind)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--bind") from None
    _load(app, import_app)  # a bad MODULE:ATTR is reported here, once, not as tracebacks from the children
    supervisor = Supervisor(
        app,
        url=url,
        cache_url=cache_url,
        queue_url=queue_url,
        host=host,
        port=port,
        workers=workers,
        web_processes=web_processes,
        concurrency=concurrency,
        protocol=protocol,
        log_level=log_level,
    )
    sys.exit(supervisor.run())


@main.command()
@click.argument("path", required=False)
@click.option(
    "--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="Only answers whose query has KEY=VALUE."
)
@click.option("--tag", "-t", default=None, help="Only answers the app tagged with TAG (exactly).")
@click.option("--soft", is_flag=True, help="Mark the answers stale instead of dropping them (served while refreshed).")
@click.option("--refresh", is_flag=True, help="Queue a refresh of each answer at once (re-render on purge).")
@url_option
@click.option("--cache", "cache_url", envvar="OFFLOAD_CACHE_URL", default=None, help="Cache URL, if not --url's.")
@namespace_option
def expire(
    path: str | None,
    params: tuple[str, ...],
    tag: str | None,
    soft: bool,
    refresh: bool,
    url: str | None,
    cache_url: str | None,
    namespace: str | None,
) -> None:
    """Drop cached answers for PATH ('*' matches anything, e.g. '/reports/*'), or with --tag.

    Without --namespace, answers of every namespace of the store are dropped.
    """
    pairs = []
    for param in params:
        name, sep, value = param.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{param!r} is not KEY=VALUE", param_hint="--param")
        pairs.append((name, value))
    if path is None and tag is None:
        raise click.UsageError("name a PATH, a --tag, or both")
    from offload.core import Offloader
    from offload.settings import Settings

    def run() -> int:
        namespaces = [namespace] if namespace else store_namespaces(url, cache_url, None)
        count = 0
        for name in namespaces:
            cache = open_cache(url, cache_url, name)
            if cache is None:
                raise click.ClickException(f"{_display_url(url)} has no cache: name one with --cache")
            queue = open_queue(url, None, name) if refresh else None
            offloader = Offloader(url=url, cache=cache, queue=queue, settings=Settings(namespace=name))
            try:
                count += offloader.expire(path, pairs, tag=tag, soft=soft, refresh=refresh)
            finally:
                cache.close()
                if queue is not None:
                    queue.close()
        return count

    count = _backend_call(run)
    click.echo(f"expired {count} cached answer{'s' if count != 1 else ''}")


@main.command()
@url_option
@parts_options
@namespace_option
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status(url: str | None, cache_url: str | None, queue_url: str | None, namespace: str | None, as_json: bool) -> None:
    """Show queued, running, dead, cached and failed counts, for each namespace of the store."""

    def counts(name: str) -> dict[str, int]:
        cache, queue = open_cache(url, cache_url, name), open_queue(url, queue_url, name)
        result = {"queued": 0, "running": 0, "dead": 0, "cached": 0, "failed": 0}
        try:
            if queue is not None:
                result.update(queue.stats())
            if cache is not None:
                result.update(cache.stats())
        finally:
            for part in (cache, queue):
                if part is not None:
                    part.close()
        return result

    def everything() -> dict[str, dict[str, int]]:
        names = [namespace] if namespace else store_namespaces(url, cache_url, queue_url)
        return {name: counts(name) for name in names}

    result = _backend_call(everything)
    if as_json:
        click.echo(json.dumps(result if namespace is None else result[namespace]))
        return
    click.echo(f"backend  {_display_url(url)}")
    if not result:
        click.echo("(no namespace holds anything yet)")
    for name, figures in result.items():
        click.echo(f"namespace {name}")
        for field in ("queued", "running", "dead", "cached", "failed"):
            click.echo(f"  {field:8} {figures[field]}")


@main.command()
@click.argument("urls", nargs=-1)
@click.option("--from-file", "files", multiple=True, metavar="FILE", help="URLs to warm, one per line.")
@click.option("--sitemap", "sitemaps", multiple=True, metavar="FILE_OR_URL", help="A sitemap whose <loc> to warm.")
@click.option("--base", default=None, help="Base URL for paths given without one, e.g. http://127.0.0.1:8000.")
@click.option("--app", "app", envvar="OFFLOAD_APP", default=None, help="MODULE:ATTR whose settings to use.")
@namespace_option
@url_option
@protocol_option
def warm(
    urls: tuple[str, ...],
    files: tuple[str, ...],
    sitemaps: tuple[str, ...],
    base: str | None,
    app: str | None,
    namespace: str | None,
    url: str | None,
    protocol: str,
) -> None:
    """Queue the job of each URL (deduplicated like misses), so its first request is a hit.

    URLs are absolute (http://host:port/path?query: Host and scheme are part of
    every key) or paths with --base. The namespace is APP's, or --namespace,
    or the only one the store holds.
    """
    from offload import warming
    from offload.importer import import_app

    def run() -> int:
        listed = list(urls)
        for path in files:
            listed += warming.from_file(path)
        for sitemap in sitemaps:
            listed += warming.from_sitemap(sitemap)
        if app is not None:
            _load(app, import_app)  # a bad MODULE:ATTR is a usage error
        offloader, asgi = warming.offloader_for(app, url, namespace, protocol)
        target_for = functools.partial(target_from_url, raw_path=asgi)
        return warming.warm(offloader, target_for, warming.absolute(listed, base))

    try:
        count = _backend_call(run)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"queued {count} job{'s' if count != 1 else ''}")


@main.command()
@url_option
def migrate(url: str | None) -> None:
    """Create offload's tables (PostgreSQL, SQLite) now instead of on first use."""

    def run() -> None:
        backend = open_backend(url)
        module = sys.modules.get(type(backend.cache or backend.queue).__module__)
        migrate_function = getattr(module, "migrate", None)
        if migrate_function is not None:
            migrate_function(resolve_url(url))
        else:  # opening the tables creates them
            for part in (backend.cache, backend.queue):
                if part is not None:
                    part.stats()

    _backend_call(run)
    click.echo(f"offload tables ready in {_display_url(url)}")


@main.command()
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--delay", default=3.0, show_default=True, type=click.FloatRange(0, 60), help="Seconds the slow endpoint takes."
)
@click.option("--exit", "exit_after", is_flag=True, help="Stop after showing the flow instead of serving on.")
def demo(bind: str, delay: float, exit_after: bool) -> None:
    """Run a bundled app with a slow endpoint, a server and a worker, and show the flow."""
    from offload.demo import run_demo
    from offload.serving import parse_bind

    try:
        host, port = parse_bind(bind)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--bind") from None
    sys.exit(run_demo(host, port, delay, keep_serving=not exit_after))


@main.command()
@url_option
@namespace_option
@click.option("--bind", "-b", default="127.0.0.1:8001", show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--auth",
    "auth_spec",
    default=None,
    metavar="MODULE:ATTR",
    help="A callable given each request, returning whether it may pass. Required unless --bind is a loopback address.",
)
@click.option("--read-only", is_flag=True, help="Show everything, refuse every action (retry, expire).")
@click.option("--metrics-url", default=None, help="A Prometheus /metrics URL to read hit ratios and fill times from.")
def dashboard(
    url: str | None,
    namespace: str | None,
    bind: str,
    auth_spec: str | None,
    read_only: bool,
    metrics_url: str | None,
) -> None:
    """Serve the dashboard: queues, running and dead jobs, slow URLs, hit ratio, expiry, for the store --url names."""
    from offload.dashboard.serve import run_dashboard

    _setup_logging("info")
    sys.exit(run_dashboard(url, namespace, bind, auth_spec, read_only, metrics_url))


def _serve_metrics(offloader: Any, bind: str) -> None:
    from offload import metrics

    try:
        metrics.install(offloader)
        host, port = metrics.serve(bind)
    except (OffloadError, ValueError, OSError) as error:
        raise click.BadParameter(str(error), param_hint="--metrics-port") from None
    logging.getLogger("offload.worker").info("metrics on http://%s:%d/metrics", host, port)


def _load(spec: str, importer: Callable[[str], Any]) -> Any:
    try:
        return importer(spec)
    except OffloadError as error:
        raise click.BadParameter(str(error), param_hint="APP") from None


def _backend_call(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except OffloadError as error:
        raise click.ClickException(str(error)) from None


def _display_url(url: str | None) -> str:
    """The backend URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    resolved = resolve_url(url)
    parts = urlsplit(resolved)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return resolved


main.add_command(proxy)

if __name__ == "__main__":  # pragma: no cover
    main()
