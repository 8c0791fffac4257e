"""The ``offload`` command: run workers, serve an app, inspect and expire the cache.

Every command takes ``--url`` (default: ``OFFLOAD_URL``, else the embedded
SQLite file ``offload.sqlite3`` in the working directory). What a person types
is checked before anything starts (:mod:`offload.checks`): a bad URL or app is
one line on stderr and exit code 2. The commands that read or change a store
(``status``, ``expire``) take ``--app MODULE:ATTR`` to use that app's own
backend and namespace (:mod:`offload.stores`), and never create a store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from offload import logs
from offload.backends import DEFAULT_NAMESPACE, open_backend, resolve_url
from offload.checks import check_app, check_part
from offload.cli_options import log_format_option, log_level_option
from offload.errors import BackendUnavailable, OffloadError
from offload.keys import target_from_url
from offload.proxy.command import proxy
from offload.stores import Store, display_url, find_store, open_cache, open_queue

__all__ = ["main", "open_cache", "open_queue"]

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """A bad option or argument: one line on stderr, exit code 2 as for click's own usage errors."""

    exit_code = 2


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


def app_option(func: F) -> F:
    """``--app``: use an app's own backend, parts and namespace, as its web processes do."""
    return click.option(
        "--app",
        "app_spec",
        envvar="OFFLOAD_APP",
        default=None,
        metavar="MODULE:ATTR",
        help="Use this app's backend and namespace (its middleware's); --url, --cache, --queue override the backend "
        "[env: OFFLOAD_APP]",
    )(func)


def namespace_option(func: F) -> F:
    """``--namespace``: act on one namespace of the store instead of all of them."""
    return click.option(
        "--namespace",
        "-n",
        default=None,
        help="Only this namespace (default: the --app's, else every namespace the store holds).",
    )(func)


def protocol_option(func: F) -> F:
    return click.option(
        "--protocol",
        type=click.Choice(["auto", "wsgi", "asgi"]),
        default="auto",
        show_default=True,
        help="Treat the app as WSGI or ASGI instead of detecting it.",
    )(func)


#: The most jobs one worker process runs at once: threads, and tasks on an event loop.
MAX_THREADS, MAX_TASKS = 256, 10_000


def _setup_logging(level: str, log_format: str = "text") -> None:
    logs.configure(json=log_format == "json", level=level)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="offload")
def main() -> None:
    """offload: slow GET endpoints computed by background workers, served from a cache."""


@main.command()
@click.argument("app")
@url_option
@parts_options
@click.option(
    "--concurrency",
    "-c",
    default=1,
    show_default=True,
    type=click.IntRange(1, MAX_TASKS),
    help=f"Jobs run at once: threads (at most {MAX_THREADS}), or tasks on one event loop with --engine async.",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "threads", "async"]),
    default="auto",
    show_default=True,
    help="How jobs run at once: async (tasks on one event loop) for an ASGI app, threads for a WSGI app.",
)
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option(
    "--nice",
    default=10,
    show_default=True,
    type=click.IntRange(0, 19),
    help="Lower the worker's CPU priority by this much, so web processes on the same machine stay fast.",
)
@click.option(
    "--sched",
    type=click.Choice(["normal", "batch", "idle"]),
    envvar="OFFLOAD_SCHED",
    default=None,
    help="Linux scheduling class: batch (a CPU hog, never preempts on wakeup), idle (runs when a core has nothing "
    "else to run); default: the class it was started in [env: OFFLOAD_SCHED]",
)
@click.option(
    "--cpus",
    envvar="OFFLOAD_CPUS",
    default=None,
    metavar="LIST",
    help="Run only on these CPUs (e.g. 2-7 or 0,2), leaving the others to web processes; default: every CPU it "
    "may use [env: OFFLOAD_CPUS]",
)
@protocol_option
@log_level_option
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
    engine: str,
    burst: bool,
    nice: int,
    sched: str | None,
    cpus: str | None,
    protocol: str,
    log_level: str,
    log_format: str,
    metrics_port: str | None,
) -> None:
    """Process queued jobs for APP (MODULE:ATTR, the app wrapped in offload's middleware or the bare app)."""
    from offload.core import Offloader
    from offload.importer import find_offloader
    from offload.namespaces import namespace_for
    from offload.priority import UnsupportedPolicy, apply_cpus, apply_sched, parse_cpus
    from offload.replay import replayer_for
    from offload.settings import Settings
    from offload.worker import Worker

    _setup_logging(log_level, log_format)
    try:
        cpu_set = parse_cpus(cpus) if cpus is not None else None
    except ValueError as error:
        raise BadInput(f"--cpus {cpus}: {error}") from None
    _check_urls(url, cache_url, queue_url)
    target = _load(app)
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
    _check_opens(offloader)
    logs.install(offloader)
    if metrics_port is not None:
        _serve_metrics(offloader, metrics_port)
    chosen = _engine(target, protocol, engine, concurrency)
    logging.getLogger("offload.worker").info(
        "worker for %s (namespace %s) on %s, %d %s%s",
        app,
        offloader.namespace,
        display_url(offloader.url),
        concurrency,
        "task(s) on one event loop" if chosen == "async" else "thread(s)",
        ", burst" if burst else "",
    )
    if nice:
        with contextlib.suppress(OSError):  # a platform without it keeps the priority
            os.nice(nice)
    if sched is not None:
        try:
            apply_sched(sched)
        except UnsupportedPolicy as error:
            raise BadInput(str(error)) from None
        except OSError as error:
            raise BadInput(f"--sched {sched}: the system refused it ({error.strerror})") from None
    if cpu_set is not None:
        try:
            apply_cpus(cpu_set)
        except (ValueError, UnsupportedPolicy) as error:
            raise BadInput(f"--cpus {cpus}: {error}") from None
    if chosen == "async":
        from offload.async_worker import AsyncWorker

        sys.exit(AsyncWorker(offloader, target, concurrency=concurrency, burst=burst).run())
    replay = replayer_for(target, None if protocol == "auto" else protocol)
    sys.exit(Worker(offloader, replay, concurrency=concurrency, burst=burst).run())


def _engine(target: Any, protocol: str, engine: str, concurrency: int) -> str:
    """The engine a worker runs: async for an ASGI app (unless it replays its requests itself), else threads."""
    from offload.replay import is_asgi

    asgi = (is_asgi(target) if protocol == "auto" else protocol == "asgi") and not hasattr(target, "offload_replayer")
    if engine == "async" and not asgi:
        raise BadInput("--engine async runs ASGI apps only: this app runs on threads (--engine threads)")
    chosen = engine if engine != "auto" else "async" if asgi else "threads"
    if chosen == "threads" and concurrency > MAX_THREADS:
        raise BadInput(
            f"--concurrency {concurrency}: at most {MAX_THREADS} threads; "
            "an ASGI app runs many more jobs at once with --engine async"
        )
    return chosen


def _refuse_w(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise BadInput(
            "-w is ambiguous here: --job-workers N runs N job worker processes, "
            "--web-processes N runs N HTTP server processes (gunicorn's -w)"
        )


@main.command()
@click.argument("app")
@url_option
@parts_options
@click.option(
    "--bind",
    "-b",
    envvar="OFFLOAD_BIND",
    default="127.0.0.1:8000",
    show_default=True,
    help="HOST:PORT to listen on [env: OFFLOAD_BIND].",
)
@click.option(
    "--job-workers",
    "-j",
    default=None,
    type=click.IntRange(0, 256),
    help="Job worker processes (offload worker), beside the server.  [default: 1]",
)
@click.option("--workers", default=None, type=click.IntRange(0, 256), help="The same as --job-workers.")
@click.option("-w", expose_value=False, hidden=True, callback=_refuse_w)
@click.option(
    "--web-processes",
    default=2,
    show_default=True,
    type=click.IntRange(1, 256),
    help="HTTP server processes (what gunicorn calls --workers).",
)
@click.option(
    "--concurrency",
    "-c",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Jobs at once per job worker: threads for a WSGI app, tasks on one event loop for an ASGI app.",
)
@protocol_option
@log_level_option
@log_format_option
def serve(
    app: str,
    url: str | None,
    cache_url: str | None,
    queue_url: str | None,
    bind: str,
    job_workers: int | None,
    workers: int | None,
    web_processes: int,
    concurrency: int,
    protocol: str,
    log_level: str,
    log_format: str,
) -> None:
    """Serve APP over HTTP (gunicorn for WSGI, uvicorn for ASGI) and run its job worker processes."""
    from offload.serving import Supervisor

    _setup_logging(log_level, log_format)
    if log_format == "json":  # the web and worker processes read it
        os.environ["OFFLOAD_LOG_FORMAT"] = "json"
    if job_workers is not None and workers is not None and job_workers != workers:
        raise BadInput("--workers is another name for --job-workers: give one of them")
    host, port = _bind(bind)
    _check_urls(url, cache_url, queue_url)
    _load(app)  # a bad MODULE:ATTR is reported here, once, not as tracebacks from the children
    _check_port_free(host, port, bind)
    supervisor = Supervisor(
        app,
        url=url,
        cache_url=cache_url,
        queue_url=queue_url,
        host=host,
        port=port,
        workers=job_workers if job_workers is not None else workers if workers is not None else 1,
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
@app_option
@url_option
@click.option("--cache", "cache_url", envvar="OFFLOAD_CACHE_URL", default=None, help="Cache URL, if not --url's.")
@namespace_option
def expire(
    path: str | None,
    params: tuple[str, ...],
    tag: str | None,
    soft: bool,
    refresh: bool,
    app_spec: str | None,
    url: str | None,
    cache_url: str | None,
    namespace: str | None,
) -> None:
    """Drop cached answers for PATH ('*' matches anything, e.g. '/reports/*'), or with --tag.

    With --app, the answers of that app's namespace, in its backend. Without
    it, answers of every namespace of the store (--namespace: of one).
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

    store = _store(app_spec, url, cache_url, None, namespace, needs_queue=refresh)

    def run() -> int:
        count = 0
        for name in store.namespaces():
            cache = store.cache_of(name)
            if cache is None:
                raise click.ClickException(f"{store.description} has no cache: name one with --cache")
            queue = store.queue_of(name) if refresh else None
            offloader = Offloader(url=url, cache=cache, queue=queue, settings=Settings(namespace=name))
            try:
                count += offloader.expire(path, pairs, tag=tag, soft=soft, refresh=refresh)
            finally:
                store.done(cache)
                store.done(queue)
        return count

    count = _backend_call(run)
    click.echo(f"expired {count} cached answer{'s' if count != 1 else ''}")


@main.command()
@app_option
@url_option
@parts_options
@namespace_option
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status(
    app_spec: str | None,
    url: str | None,
    cache_url: str | None,
    queue_url: str | None,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Show queued, running, dead, cached and failed counts, for each namespace of the store (or the --app's)."""
    store = _store(app_spec, url, cache_url, queue_url, namespace)

    def counts(name: str) -> dict[str, int]:
        cache, queue = store.cache_of(name), store.queue_of(name)
        result = {"queued": 0, "running": 0, "dead": 0, "cached": 0, "failed": 0}
        try:
            if queue is not None:
                result.update(queue.stats())
            if cache is not None:
                result.update(cache.stats())
        finally:
            store.done(cache)
            store.done(queue)
        return result

    def everything() -> dict[str, dict[str, int]]:
        return {name: counts(name) for name in store.namespaces()}

    result = _backend_call(everything)
    if as_json:
        click.echo(json.dumps(result if store.only is None else result[store.only]))
        return
    click.echo(f"backend  {store.description}")
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

    _check_urls(url, None, None)
    if app is not None:
        _load(app, "--app")  # a bad MODULE:ATTR is a usage error

    def run() -> int:
        listed = list(urls)
        for path in files:
            listed += warming.from_file(path)
        for sitemap in sitemaps:
            listed += warming.from_sitemap(sitemap)
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
    _check_urls(url, None, None)

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
    click.echo(f"offload tables ready in {display_url(url)}")


@main.command()
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--delay", default=3.0, show_default=True, type=click.FloatRange(0, 60), help="Seconds the slow endpoint takes."
)
@click.option("--exit", "exit_after", is_flag=True, help="Stop after showing the flow instead of serving on.")
def demo(bind: str, delay: float, exit_after: bool) -> None:
    """Run a bundled app with a slow endpoint, a server and a worker, and show the flow."""
    from offload.demo import run_demo

    host, port = _bind(bind)
    _check_port_free(host, port, bind)
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
    _check_urls(url, None, None)
    host, port = _bind(bind)
    _check_port_free(host, port, bind)
    sys.exit(run_dashboard(url, namespace, bind, auth_spec, read_only, metrics_url))


def _serve_metrics(offloader: Any, bind: str) -> None:
    from offload import metrics

    try:
        metrics.install(offloader)
        host, port = metrics.serve(bind)
    except (OffloadError, ValueError, OSError) as error:
        raise click.BadParameter(str(error), param_hint="--metrics-port") from None
    logging.getLogger("offload.worker").info("metrics on http://%s:%d/metrics", host, port)


def _check_urls(url: str | None, cache_url: str | None, queue_url: str | None) -> None:
    """Check the backend URLs the options (or their environment variables) name, before anything starts."""
    named = [("url", "--url", "OFFLOAD_URL", url), ("cache_url", "--cache", "OFFLOAD_CACHE_URL", cache_url)]
    named.append(("queue_url", "--queue", "OFFLOAD_QUEUE_URL", queue_url))
    context = click.get_current_context(silent=True)
    for name, option, variable, value in named:
        try:
            check_part(value)
        except OffloadError as error:
            source = context.get_parameter_source(name) if context is not None else None
            where = variable if source is click.core.ParameterSource.ENVIRONMENT else option
            raise BadInput(f"{where}: {error}") from None


def _check_opens(offloader: Any) -> None:
    """Open the worker's backend now: a configuration error stops it at once; an outage is waited out."""
    try:
        queue = offloader.queue
    except BackendUnavailable as error:
        logging.getLogger("offload.worker").error("the backend is unavailable (%s); waiting for it", error)
        return
    except OffloadError as error:
        raise BadInput(str(error)) from None
    if not getattr(queue, "claimable", True):
        raise BadInput(
            f"the app's queue ({type(queue).__name__}) is run by its own workers, not by offload worker: "
            "start those (rq worker, celery worker) with OFFLOAD_APP set"
        )


def _store(
    app_spec: str | None,
    url: str | None,
    cache_url: str | None,
    queue_url: str | None,
    namespace: str | None,
    needs_queue: bool = True,
) -> Store:
    _check_urls(url, cache_url, queue_url)
    app = _load(app_spec, "--app") if app_spec else None
    try:
        return find_store(app, url, cache_url, queue_url, namespace, needs_queue=needs_queue)
    except OffloadError as error:
        raise click.ClickException(str(error)) from None


def _load(spec: str, what: str = "APP") -> Any:
    """Import ``MODULE:ATTR``; any failure, in offload or in the app's own code, is one line."""
    from offload.importer import import_app

    try:
        return check_app(import_app(spec), spec)
    except OffloadError as error:
        raise BadInput(f"{what} {spec}: {error}") from None
    except Exception as error:  # the app's module itself failed: say where, in one line
        raise BadInput(f"{what} {spec}: importing it failed: {_where(error)}") from None


def _where(error: BaseException) -> str:
    """``NameError: name 'x' is not defined (myapp.py, line 9)``: the error and the line of the app that raised it."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, SyntaxError) and error.filename:
        return f"{type(error).__name__}: {error.msg} ({error.filename}, line {error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        frame = frames[-1]
        return f"{text} ({frame.filename}, line {frame.lineno})"
    return text


def _bind(bind: str) -> tuple[str, int]:
    from offload.serving import parse_bind

    try:
        return parse_bind(bind)
    except ValueError as error:
        raise BadInput(f"--bind: {error}") from None


def _check_port_free(host: str, port: int, bind: str) -> None:
    """Refuse a port another process listens on, rather than serve nothing and talk to that process."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise BadInput(f"--bind {bind}: cannot listen there ({error.strerror}); choose another port") from None


def _backend_call(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except OffloadError as error:
        raise click.ClickException(str(error)) from None


main.add_command(proxy)

if __name__ == "__main__":  # pragma: no cover
    main()
