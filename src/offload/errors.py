"""The exceptions offload raises.

Every exception derives from :class:`OffloadError`, so one ``except`` clause
catches anything offload raises on purpose. The docstring of each class is its
default message.
"""

from __future__ import annotations


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
