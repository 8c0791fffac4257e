"""Warming: queue the jobs of URLs before anyone asks, so that their first request is a hit.

After a deploy, or before a report is announced, ``offload warm`` (or
:meth:`offload.WSGIMiddleware.warm`) queues one job per URL, deduplicated
like misses: a URL already queued, running or fresh is left alone. Since the
scheme and ``Host`` are part of every key, warming takes absolute URLs
(``http://127.0.0.1:8000/report?x=1``), or paths with a base URL. Requests
carrying credentials cannot be warmed: warming asks as an anonymous client.
URLs come from the command line, a file (one per line; ``#`` comments), or a
sitemap (its ``<loc>`` entries; a file or an ``http(s)`` URL).
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from offload.core import Offloader, Operation
from offload.errors import ConfigurationError, CorruptRecord
from offload.keys import Target, request_key
from offload.records import CachedResponse, StoredRequest, decode_stored

_LOC = re.compile(rb"<loc>\s*(.*?)\s*</loc>", re.DOTALL)

#: The largest sitemap read, so a wrong URL cannot fill the memory.
MAX_SITEMAP = 50 * 1024 * 1024


def absolute(urls: Iterable[str], base: str | None = None) -> Iterator[str]:
    """Absolute ``http(s)`` URLs: each as given, or joined to ``base`` when it is a path.

    >>> list(absolute(["/a?x=1", "https://example.com/b"], base="http://127.0.0.1:8000"))
    ['http://127.0.0.1:8000/a?x=1', 'https://example.com/b']
    """
    for url in urls:
        url = url.strip()
        if not url or url.startswith("#"):
            continue
        if urlsplit(url).scheme not in ("http", "https"):
            if base is None:
                raise ValueError(f"{url!r} is not an absolute URL: give http://host:port/..., or a base URL")
            url = urljoin(base if base.endswith("/") else base + "/", url.lstrip("/"))
        yield url


def from_file(path: str) -> list[str]:
    """The URLs of a file, one per line."""
    return Path(path).read_text(encoding="utf-8").splitlines()


def from_sitemap(source: str) -> list[str]:
    """The ``<loc>`` URLs of a sitemap, read from a file or an ``http(s)`` URL."""
    if urlsplit(source).scheme in ("http", "https"):
        with urllib.request.urlopen(source, timeout=30) as response:
            data = response.read(MAX_SITEMAP + 1)
    else:
        data = Path(source).read_bytes()
    if len(data) > MAX_SITEMAP:
        raise ValueError(f"{source} is larger than {MAX_SITEMAP} bytes")
    return [loc.decode("utf-8", "replace").replace("&amp;", "&") for loc in _LOC.findall(data)]


def warm(offloader: Offloader, target_for: Callable[[str], Target], urls: Iterable[str]) -> int:
    """Queue a job for each URL not queued, running or fresh yet; return how many were queued.

    ``target_for`` turns an absolute URL into the target its protocol gives
    the app (a middleware's ``target_for``), so the keys are those of real requests.
    """
    vary = offloader.settings.vary
    queued = 0
    for url in urls:
        target = target_for(url)
        key = request_key(target, [(name, None) for name in vary])
        request = StoredRequest(key, key, target, (), vary)
        if offloader.run_sync(_is_fresh(offloader, key)):
            continue
        queued += offloader.enqueue(request.encode())
    return queued


def offloader_for(
    app: str | None, url: str | None = None, namespace: str | None = None, protocol: str = "auto"
) -> tuple[Offloader, bool]:
    """The offloader to warm through, and whether its app speaks ASGI (its keys then hold the raw path).

    ``app`` (``MODULE:ATTR``) gives the app's own offloader (``url`` overrides
    its backend, as for ``offload worker``); without it, ``namespace`` on the
    store ``url`` names, or the only namespace that store holds.
    """
    from offload.importer import find_offloader, import_app
    from offload.namespaces import namespace_for
    from offload.replay import is_asgi
    from offload.settings import Settings

    if app is not None:
        target = import_app(app)
        asgi = is_asgi(target) if protocol == "auto" else protocol == "asgi"
        found = find_offloader(target)
        if found is not None and url is None:
            return found, asgi
        settings = found.settings if found is not None else Settings(namespace=namespace_for(target))
        return Offloader(url=url, settings=settings), asgi
    if namespace is None:
        probe = Offloader(url=url)
        names = sorted(set(probe.cache.namespaces()) | set(probe.queue.namespaces()))
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise ConfigurationError(f"name the app (MODULE:ATTR) or a namespace; the store holds: {listed}")
        namespace = names[0]
    return Offloader(url=url, settings=Settings(namespace=namespace)), protocol == "asgi"


def _is_fresh(offloader: Offloader, key: str) -> Generator[Operation, Any, bool]:
    """Whether ``key`` has a fresh shared answer already (a generator of backend operations)."""
    data = yield ("get", offloader.response_key(key))
    if data is None:
        return False
    try:
        found = decode_stored(data)
    except CorruptRecord:
        return False
    return isinstance(found, CachedResponse) and not found.private and time.time() < found.expires
