"""Command-line options that several of offload's commands share (``offload serve``, ``worker``, ``proxy``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def log_level_option(func: F) -> F:
    """``--log-level``: the lowest level of the lines logged."""
    return click.option(
        "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
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
