"""Checks of what a person types: backend URLs and ``MODULE:ATTR`` app names, each failing with one clear line.

The command line runs them before it starts anything, so a typo is one line
on stderr and a non-zero exit, not a worker that dies every second or a
server that answers 500. Nothing here connects to a server: a backend that is
down now may be up in a minute, and offload waits for it.

>>> check_url("redis://localhost:6379/0")
'redis://localhost:6379/0'
>>> check_url("redis:/localhost")
Traceback (most recent call last):
...
offload.errors.ConfigurationError: 'redis:/localhost' is not a backend URL: write redis://HOST:6379/0
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from offload.backends import REGISTRY, resolve_url
from offload.errors import ConfigurationError, install_hint

#: What a URL of each scheme looks like, for the error messages.
EXAMPLES = {
    "memory": "memory:// or memory://NAME",
    "sqlite": "sqlite:///relative/file.sqlite3 or sqlite:////absolute/file.sqlite3",
    "redis": "redis://HOST:6379/0",
    "rediss": "rediss://HOST:6380/0",
    "unix": "unix:///path/to/redis.sock",
    "redis+cluster": "redis+cluster://HOST:6379/?seeds=HOST:6380,HOST:6381",
    "rediss+cluster": "rediss+cluster://HOST:6379/?seeds=HOST:6380,HOST:6381",
    "postgres": "postgres://USER@HOST/DATABASE",
    "postgresql": "postgresql://USER@HOST/DATABASE",
    "memcached": "memcached://HOST:11211",
}

#: The driver each scheme needs (the module, and the extra that installs it).
DRIVERS = {
    "redis": ("redis", "redis"),
    "rediss": ("redis", "redis"),
    "unix": ("redis", "redis"),
    "redis+cluster": ("redis", "redis"),
    "rediss+cluster": ("redis", "redis"),
    "postgres": ("psycopg", "postgres"),
    "postgresql": ("psycopg", "postgres"),
    "memcached": ("pymemcache", "memcached"),
}

#: Schemes whose URL must name a host.
NETWORKED = frozenset({"redis", "rediss", "redis+cluster", "rediss+cluster", "memcached"})


def check_url(url: str) -> str:
    """Return ``url`` if it names a backend offload can open, else raise :class:`ConfigurationError`.

    The scheme must be known (or the URL a ``package.module:function`` that
    exists), the URL must parse (``redis:/host`` does not name a host), and
    the scheme's driver must be installed.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as error:
        raise ConfigurationError(f"{url!r} is not a backend URL ({error})") from None
    scheme = parts.scheme.lower()
    target = REGISTRY.get(scheme)
    if target is None:
        if ":" in url and "://" not in url:  # "package.module:function", as open_backend takes it
            _check_opener(url)
            return url
        known = ", ".join(sorted(f"{name}://" for name in REGISTRY))
        raise ConfigurationError(f"unknown backend URL {url!r}: use one of {known}")
    example = EXAMPLES.get(scheme, f"{scheme}://...")
    if not url[len(scheme) :].startswith("://"):
        raise ConfigurationError(f"{url!r} is not a backend URL: write {example}")
    if scheme in NETWORKED and not parts.hostname:
        raise ConfigurationError(f"{url!r} names no host: write {example}")
    if scheme == "sqlite" and (parts.netloc or not unquote(parts.path)[1:]):
        raise ConfigurationError(f"{url!r} names no file: write {example}")
    driver = DRIVERS.get(scheme)
    if driver is not None and importlib.util.find_spec(driver[0]) is None:
        raise ConfigurationError(f"{scheme}:// needs {driver[0]}: {install_hint(driver[1])}")
    return url


def _check_opener(url: str) -> None:
    module_name, _, attribute = url.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"backend {url!r}: cannot import {module_name!r} ({error})") from None
    if not callable(getattr(module, attribute, None)):
        raise ConfigurationError(f"backend {url!r}: {module_name!r} has no function {attribute!r}")


def check_part(value: str | None) -> None:
    """Check a ``--cache`` or ``--queue`` URL, if given."""
    if value:
        check_url(value)


def sqlite_file(url: str | None) -> str | None:
    """The file a ``sqlite://`` URL (or the default) names, or None for other backends.

    >>> sqlite_file("sqlite:////srv/app/offload.sqlite3")
    '/srv/app/offload.sqlite3'
    >>> sqlite_file("redis://localhost") is None
    True
    """
    resolved = resolve_url(url)
    if urlsplit(resolved).scheme.lower() != "sqlite":
        return None
    from offload.backends.sqlite import database_path

    return database_path(resolved)


def check_store_exists(url: str | None) -> None:
    """Refuse a store that is not there, for the commands that only read or expire what it holds.

    A missing SQLite file would otherwise be created, empty, and reported as
    holding nothing; ``memory://`` lives inside one process, where no other
    command can see it.
    """
    resolved = resolve_url(url)
    if urlsplit(resolved).scheme.lower() == "memory":
        raise ConfigurationError(f"{resolved} lives inside the process that uses it: no other command can see it")
    path = sqlite_file(resolved)
    if path is not None and not os.path.exists(path):
        named = "" if url or os.environ.get("OFFLOAD_URL") else " (the default; name the store with --url or --app)"
        raise ConfigurationError(f"no offload store at {path}{named}")


def check_app(target: Any, spec: str) -> Any:
    """An imported app must at least be callable: a WSGI or ASGI application."""
    if not callable(target):
        raise ConfigurationError(f"{spec} is a {type(target).__name__}, not a WSGI or ASGI app")
    return target
