"""Structured logs: one line per job, per refusal and per outage, with stable event names.

:func:`configure` sets up the ``offload`` loggers for a process: a timestamp
on every line, and with ``json=True`` one JSON object per line (``ts``,
``level``, ``logger``, ``event``, ``message`` and the event's fields), for
log pipelines (Loki, CloudWatch, Elasticsearch). :func:`install` subscribes a
listener to an offloader's events that writes, on the logger ``offload.events``:

``job.done``
    one line when a job ends: ``key``, ``path``, ``attempt`` (its last),
    ``duration`` (seconds from its start to its answer stored), ``outcome``
    (``succeeded``, ``failed``, ``timed-out``, ``dead-lettered``,
    ``store-failed``), ``status`` and ``worker`` (host, process, thread).
``request.refused``
    a 503 because the queue is full (``path``); past :data:`REFUSALS_PER_SECOND`
    lines in a second the others are counted into the next line's ``suppressed``,
    so a flood of misses cannot become a flood of log lines.
``outage.started`` / ``outage.ended``
    the first request the backend could not serve after it was fine, and the
    first one it served again after, with ``duration`` and ``requests`` (how
    many were answered 503, or by the app itself, meanwhile).

``offload worker --log-format json`` and ``offload serve --log-format json``
call :func:`configure` (``OFFLOAD_LOG_FORMAT=json`` reaches the processes
``offload serve`` starts).

The commands configure logging with :func:`configure`; the HTTP servers
``offload serve`` starts get the same: gunicorn's lines carry their own time,
uvicorn is given a logging configuration (:func:`uvicorn_config`), and
offload's own lines in the server processes go through a handler set up by
:func:`configure_server_process`, where nothing else would print them but
Python's bare last-resort handler.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from offload.events import Listener
from offload.importer import offloader_of

#: The logger the event lines are written to.
EVENTS_LOGGER = "offload.events"

#: Refusal lines written per second at most; the others are counted in the next line.
REFUSALS_PER_SECOND = 10

#: Every text line: time, level, process, logger, message.
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
LOG_FORMAT = TEXT_FORMAT

#: The level ``offload serve`` hands its server processes.
LEVEL_VARIABLE = "OFFLOAD_LOG_LEVEL"

#: Attributes every LogRecord has: anything else on a record is a field of the event.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "event"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: the time (UTC, ISO 8601), level, logger, event, message and fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        line: dict[str, Any] = {
            "ts": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual text line, timestamped, followed by the event's fields as ``name=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [
            f"{name}={value}"
            for name, value in record.__dict__.items()
            if (name == "event" or name not in _STANDARD) and not name.startswith("_") and value is not None
        ]
        return f"{text} {' '.join(fields)}" if fields else text


def configure(json: bool = False, level: str | int = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send offload's log lines to ``stream`` (stderr), timestamped, as text or one JSON object per line.

    Replaces the handlers of the root logger, as :func:`logging.basicConfig`
    with ``force=True`` does; returns the handler installed.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def wants_json(value: str | None = None) -> bool:
    """Whether ``--log-format`` (or ``OFFLOAD_LOG_FORMAT``) asks for JSON."""
    return (value or os.environ.get("OFFLOAD_LOG_FORMAT") or "text").lower() == "json"


def configure_server_process() -> None:
    """In a server process ``offload serve`` started: print offload's lines with the time, once.

    Only when the server left them to nobody: an app that configures logging
    itself (a root handler, or one on ``offload``) keeps its own.
    """
    library = logging.getLogger("offload")
    if library.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if wants_json() else TextFormatter())
    library.addHandler(handler)
    library.setLevel(os.environ.get(LEVEL_VARIABLE, "info").upper())
    library.propagate = False


def uvicorn_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with :data:`LOG_FORMAT` instead of its time-less lines."""
    access = LOG_FORMAT.replace("%(message)s", '%(client_addr)s - "%(request_line)s" %(status_code)s')
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {"()": "logging.Formatter", "fmt": LOG_FORMAT},
            "access": {"()": "uvicorn.logging.AccessFormatter", "fmt": access, "use_colors": False},
        },
        "handlers": {
            "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


class EventLog:
    """The listener :func:`install` subscribes: it turns events into the lines the module docstring lists."""

    def __init__(self, logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = logger or logging.getLogger(EVENTS_LOGGER)
        self.clock = clock
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._jobs: dict[str, tuple[float, int, str, int | None]] = {}  # key -> start, attempt, outcome, status
        self._lock = threading.Lock()
        self._outage: tuple[float, int] | None = None  # since, requests answered meanwhile
        self._second = 0
        self._written = 0
        self._suppressed = 0

    def __call__(self, name: str, fields: Mapping[str, Any]) -> None:
        if name == "request" or name == "pass":
            self._request(name, fields)
        elif name.startswith("job."):
            self._job(name, fields)

    def _line(self, level: int, event: str, message: str, **fields: Any) -> None:
        self.log.log(level, message, extra={"event": event, **fields})

    def _request(self, name: str, fields: Mapping[str, Any]) -> None:
        outcome = fields.get("outcome") if name == "request" else fields.get("reason")
        down = outcome == "outage"
        if down:
            if self._outage is None:
                self._outage = (self.clock(), 1)
                self._line(logging.ERROR, "outage.started", "offload backend unavailable", path=fields.get("path"))
            else:
                self._outage = (self._outage[0], self._outage[1] + 1)
            return
        if self._outage is not None and name == "request":
            since, count = self._outage
            self._outage = None
            duration = round(self.clock() - since, 3)
            self._line(
                logging.WARNING,
                "outage.ended",
                f"offload backend back after {duration}s",
                duration=duration,
                requests=count,
            )
        if outcome == "refused":
            self._refused(fields)

    def _refused(self, fields: Mapping[str, Any]) -> None:
        second = int(self.clock())
        if second != self._second:
            self._second, self._written = second, 0
        if self._written >= REFUSALS_PER_SECOND:
            self._suppressed += 1
            return
        self._written += 1
        suppressed, self._suppressed = self._suppressed, 0
        self._line(
            logging.WARNING,
            "request.refused",
            "queue full: answered 503",
            path=fields.get("path"),
            suppressed=suppressed,
        )

    def _job(self, name: str, fields: Mapping[str, Any]) -> None:
        key = str(fields.get("key", ""))
        with self._lock:
            if name == "job.started":
                self._jobs[key] = (self.clock(), int(fields.get("attempt", 1)), "succeeded", None)
                return
            start, attempt, outcome, status = self._jobs.get(key, (self.clock(), 1, "succeeded", None))
            if name in ("job.succeeded", "job.failed"):
                outcome = "succeeded" if name == "job.succeeded" else "failed"
                attempt, status = int(fields.get("attempt", attempt)), fields.get("status", status)
                self._jobs[key] = (start, attempt, outcome, status)
                return
            if name == "job.timed_out":
                self._jobs[key] = (start, attempt, "timed-out", 504)
                return
            if name not in ("job.stored", "job.dead_lettered", "job.store_failed"):
                return
            if name == "job.stored" and key not in self._jobs:
                return  # the end of a dead letter, already told
            self._jobs.pop(key, None)
        if name == "job.dead_lettered":
            outcome, attempt = "dead-lettered", int(fields.get("attempt", attempt))
        elif name == "job.store_failed":
            outcome = "store-failed"
        status = fields.get("status", status)
        level = logging.INFO if outcome == "succeeded" else logging.WARNING
        duration = round(self.clock() - start, 6)
        path = fields.get("path", "")
        self._line(
            level,
            "job.done",
            f"job {path} {outcome} after {duration:.3f}s (attempt {attempt})",
            key=key,
            path=path,
            attempt=attempt,
            duration=duration,
            outcome=outcome,
            status=status,
            worker=f"{self.worker}:{threading.current_thread().name}",
            error=fields.get("error"),
        )


def install(target: Any, logger: logging.Logger | None = None) -> Callable[[], None]:
    """Write the event lines for ``target`` (a middleware, an app holding one, an offloader); returns the undo."""
    offloader = offloader_of(target)
    if any(isinstance(known, EventLog) for known in offloader.events.listeners):
        return lambda: None
    listener: Listener = EventLog(logger)
    return offloader.events.subscribe(listener)
