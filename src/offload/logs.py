"""How offload's commands and the servers they start print log lines: each one starts with the time.

``offload worker``, ``offload serve`` and the other commands configure
logging with :data:`LOG_FORMAT`. The HTTP servers ``offload serve`` starts
get the same: gunicorn's lines carry their own time, uvicorn is given a
logging configuration (:func:`uvicorn_config`), and offload's own lines in
the server processes (a backend outage, a full queue) go through a handler
with :data:`LOG_FORMAT` (:func:`configure_server_process`), where nothing else
would print them but Python's bare last-resort handler.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

#: Every line: time, level, process, logger, message.
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

#: The level ``offload serve`` hands its server processes.
LEVEL_VARIABLE = "OFFLOAD_LOG_LEVEL"


def configure_command(level: str) -> None:
    """Logging for a command's own process: everything at ``level`` and above, to stderr."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def configure_server_process() -> None:
    """In a server process ``offload serve`` started: print offload's lines with the time, once.

    Only when the server left them to nobody: an app that configures logging
    itself (a root handler, or one on ``offload``) keeps its own.
    """
    library = logging.getLogger("offload")
    if library.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
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
