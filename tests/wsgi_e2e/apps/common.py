"""What the end-to-end apps share: the execution log and middleware options read from the environment.

The log is one line per handler event, ``"<event> <pid> <method> <path>?<query>"``,
appended with a single ``write`` on a file opened with ``O_APPEND``, so lines
from several processes never interleave.
"""

from __future__ import annotations

import os
from typing import Any

#: The environment variable naming the execution log; unset means "do not log".
LOG_VARIABLE = "OFFLOAD_E2E_LOG"

#: The same bytes in every app: every byte value, several times over.
BINARY = bytes(range(256)) * 64

#: Environment variable -> (middleware option, type), so one app module serves many test setups.
OPTION_VARIABLES: dict[str, tuple[str, type]] = {
    "OFFLOAD_E2E_LEASE": ("lease", float),
    "OFFLOAD_E2E_MAX_QUEUED": ("max_queued", int),
    "OFFLOAD_E2E_MAX_URL": ("max_url", int),
}


def middleware_options() -> dict[str, Any]:
    """Options for :class:`offload.WSGIMiddleware` from ``OFFLOAD_E2E_*`` variables; none means defaults."""
    options: dict[str, Any] = {}
    for variable, (name, kind) in OPTION_VARIABLES.items():
        value = os.environ.get(variable)
        if value:
            options[name] = kind(value)
    return options


def record(event: str, method: str, path: str, query: str = "") -> None:
    """Append one event line to the execution log, if there is one."""
    target = os.environ.get(LOG_VARIABLE)
    if not target:
        return
    line = f"{event} {os.getpid()} {method} {path}?{query}\n".encode("utf-8", "backslashreplace")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
