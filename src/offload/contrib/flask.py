"""offload for Flask: ``Offload(app)``, the ``OFFLOAD_*`` config keys, ``@offload`` views, ``flask offload``.

::

    from flask import Flask
    from offload.contrib.flask import Offload, offload

    app = Flask(__name__)
    app.config["OFFLOAD_TTL"] = 600
    Offload(app)

    @app.get("/report")
    @offload
    def report():
        return {"total": 42}

Then ``flask --app myapp offload worker`` runs the jobs (or ``offload worker
myapp:app``). ``Offload(app)`` wraps ``app.wsgi_app`` in
:class:`offload.WSGIMiddleware`, so ``app`` stays a Flask app; the middleware
is ``app.extensions["offload"]``. Its options are the config keys
``OFFLOAD_<OPTION>`` (``OFFLOAD_URL``, ``OFFLOAD_TTL``, ``OFFLOAD_PATHS``...),
over those given to ``Offload(app, **options)``; an unknown ``OFFLOAD_*`` key
is an error, so a typo does not go unnoticed. The app factory pattern works
as with other extensions: ``offload = Offload()``, then
``offload.init_app(app)``.

Only views marked ``@offload`` are offloaded, and the paths of
``OFFLOAD_PATHS`` (``["/reports/*"]``, or ``["*"]`` for every GET);
``@no_offload`` keeps a view out of them. A request's view is found with the
app's URL map, as Flask itself finds it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from werkzeug.exceptions import HTTPException

from offload.contrib.options import checked
from offload.errors import ConfigurationError, OffloadError
from offload.routes import MEMO_SIZE, marked, no_offload, offload
from offload.wsgi import WSGIMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["Offload", "cli", "no_offload", "offload"]

#: Config keys are the options in capitals after this prefix: OFFLOAD_TTL is ``ttl``.
PREFIX = "OFFLOAD_"


class Offload:
    """The Flask extension: wraps ``app.wsgi_app`` in offload's middleware, configured from ``app.config``."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> WSGIMiddleware:
        """Wrap ``app.wsgi_app`` and add the ``flask offload`` commands; return the middleware."""
        if isinstance(app.extensions.get("offload"), WSGIMiddleware):
            raise ConfigurationError(f"offload is set up for {app.import_name} already")
        options = {**self.options, **config_options(app.config)}
        options.setdefault("predicate", ViewMarks(app))
        middleware = WSGIMiddleware(app.wsgi_app, **checked(options, "Offload(app) and OFFLOAD_* config"))
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions["offload"] = middleware
        app.cli.add_command(cli)
        return middleware


def config_options(config: Any) -> dict[str, Any]:
    """The ``OFFLOAD_*`` keys of a Flask config as options: ``OFFLOAD_TTL`` is ``ttl``.

    >>> config_options({"OFFLOAD_TTL": 600, "SECRET_KEY": "x"})
    {'ttl': 600}
    """
    return {key[len(PREFIX) :].lower(): value for key, value in config.items() if key.startswith(PREFIX)}


class ViewMarks:
    """Finds a request's view with the app's URL map, and says how it is marked (:func:`offload.routes.marked`)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._memo: dict[tuple[Any, ...], bool | None] = {}  # Flask's URL map is fixed once it serves

    def __call__(self, environ: WSGIEnvironment) -> bool | None:
        where = (environ.get("HTTP_HOST"), environ.get("SCRIPT_NAME"), environ.get("PATH_INFO"))
        if where in self._memo:
            return self._memo[where]
        found = self._find(environ)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[where] = found
        return found

    def _find(self, environ: WSGIEnvironment) -> bool | None:
        app = self.app
        try:
            adapter = app.create_url_adapter(app.request_class(environ))
            if adapter is None:  # pragma: no cover - Flask builds one whenever it has a request
                return None
            endpoint, _ = adapter.match(method="GET")
        except (HTTPException, OffloadError, ValueError):  # no view (404, a redirect), or an untrusted host
            return None
        return marked(app.view_functions.get(str(endpoint)))


def middleware() -> WSGIMiddleware:
    """The middleware of the current app, for the commands."""
    found = current_app.extensions.get("offload")
    if not isinstance(found, WSGIMiddleware):
        raise click.ClickException(f"offload is not set up for {current_app.import_name}: call Offload(app)")
    return found


#: ``flask offload ...``: the commands, run with the app's own configuration.
cli = AppGroup("offload", help="Run offload's workers, show its queue and cache, expire answers.")


@cli.command("worker")
@click.option("--concurrency", "-c", default=1, show_default=True, type=click.IntRange(1, 256), help="Jobs at once.")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
def worker_command(concurrency: int, burst: bool, log_level: str) -> None:
    """Run the app's queued jobs: replay each request through the app and store the answer."""
    import logging

    from offload import logs
    from offload.replay import replayer_for
    from offload.worker import Worker

    logs.configure(level=log_level)
    offloader = middleware().offloader
    logs.install(offloader)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    logging.getLogger("offload.worker").info(
        "worker for %s (namespace %s), %d thread(s)", app.import_name, offloader.namespace, concurrency
    )
    raise SystemExit(Worker(offloader, replayer_for(app), concurrency=concurrency, burst=burst).run())


@cli.command("expire")
@click.argument("path", required=False)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="Only answers with KEY=VALUE.")
@click.option("--tag", "-t", default=None, help="Only answers the app tagged with TAG.")
def expire_command(path: str | None, params: tuple[str, ...], tag: str | None) -> None:
    """Drop the app's cached answers for PATH ('*' matches anything), or with --tag."""
    if path is None and tag is None:
        raise click.UsageError("name a PATH, a --tag, or both")
    pairs = []
    for param in params:
        name, sep, value = param.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{param!r} is not KEY=VALUE", param_hint="--param")
        pairs.append((name, value))
    try:
        count = middleware().expire(path, pairs, tag=tag)
    except OffloadError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"expired {count} cached answer{'s' if count != 1 else ''}")


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status_command(as_json: bool) -> None:
    """Show the app's queued, running, dead, cached and failed counts."""
    offloader = middleware().offloader
    try:
        counts = {"queued": 0, "running": 0, "dead": 0, "cached": 0, "failed": 0}
        counts.update(offloader.queue.stats())
        counts.update(offloader.cache.stats())
    except OffloadError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(counts))
        return
    click.echo(f"namespace {offloader.namespace}")
    for field, value in counts.items():
        click.echo(f"  {field:8} {value}")
