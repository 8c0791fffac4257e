"""The exceptions offload raises.

Every exception derives from :class:`OffloadError`, so one ``except`` clause
catches anything offload raises on purpose. The docstring of each class is its
default message.
"""

from __future__ import annotations

from pathlib import Path


class OffloadError(Exception):
    """offload failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(OffloadError, ValueError):
    """offload is configured wrongly: check the URL and the options."""


class BackendUnavailable(OffloadError):
    """The cache or queue backend cannot be reached; it is retried on the next request."""


class QueueFull(OffloadError):
    """The queue holds as many jobs as its cap allows; try again later."""


class CorruptRecord(OffloadError):
    """A record read back from the store is not in offload's format; it is ignored."""


class MissingDependency(OffloadError, ImportError):
    """A driver this backend needs is not installed."""


def install_hint(extra: str) -> str:
    """The command that installs one of offload's extras today: from a checkout, since offload is not on PyPI yet.

    Run from a checkout (``src/offload`` beside a ``pyproject.toml``), the
    command names that checkout; installed otherwise, a placeholder for it.

    >>> install_hint("metrics").startswith('pip install -e "') and install_hint("metrics").endswith('[metrics]"')
    True
    """
    package = Path(__file__).resolve().parent
    checkout = package.parent.parent
    from_checkout = package.parent.name == "src" and (checkout / "pyproject.toml").is_file()
    return f'pip install -e "{checkout if from_checkout else "/path/to/offload"}[{extra}]"'
