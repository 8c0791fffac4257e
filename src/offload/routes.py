"""Which requests a middleware offloads: path patterns, views marked by a decorator, and its own client script.

By default offload's middlewares offload every GET and HEAD. Three options
narrow that, checked before anything else, so requests left to the app cost
no backend call:

* ``paths``: patterns (``*`` matches anything) of the paths to offload;
  ``None`` means every path, ``()`` none except marked views;
* ``exclude``: patterns of paths never offloaded;
* ``predicate``: a function of the request (the WSGI environ or the ASGI scope)
  that returns True or False for a view marked with :func:`offload` or
  :func:`no_offload`, and None to let the patterns decide. The framework
  integrations (:mod:`offload.contrib`) pass one that finds the request's view.

A marked view wins over the patterns, ``exclude`` over ``paths``. Patterns
are matched against the whole path (mount point included), decoded, as for
``path_ttls`` and ``expire()``.

With ``client_path`` the middleware also answers GETs for that exact path
with offload's JavaScript helper, ``offloadFetch`` (:data:`CLIENT_SCRIPT`).

>>> routes = Routes(paths=["/reports/*"], exclude=["/reports/live"])
>>> routes.choose(b"/reports/q3", {}), routes.choose(b"/reports/live", {}), routes.choose(b"/", {})
(True, False, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from functools import cached_property
from importlib.resources import files
from typing import Any, TypeVar

from offload.errors import ConfigurationError
from offload.keys import canonical_path, path_matcher
from offload.records import CachedResponse

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute a view decorator sets: True (offload this view) or False (never offload it).
MARK = "offload_view"

#: Says whether to offload a request (a WSGI environ or an ASGI scope): True, False, or None for no opinion.
Predicate = Callable[[Any], "bool | None"]

#: The options of :class:`Routes`, taken out of a middleware's keyword options.
OPTIONS = ("paths", "exclude", "predicate", "client_path")

#: Decisions remembered per path before the memo starts afresh: a bound on memory, not a tuning knob.
MEMO_SIZE = 4096


def offload(view: F) -> F:
    """Mark a view to be offloaded, whatever ``paths`` says (see :mod:`offload.contrib`).

    The view itself is returned, marked, so it can go above or below a
    framework's route decorator.

    >>> @offload
    ... def report(request): ...
    >>> marked(report)
    True
    """
    setattr(view, MARK, True)
    return view


def no_offload(view: F) -> F:
    """Mark a view never to be offloaded: the app answers it directly, whatever ``paths`` says.

    >>> @no_offload
    ... def live(request): ...
    >>> marked(live)
    False
    """
    setattr(view, MARK, False)
    return view


def marked(view: object) -> bool | None:
    """How a view was marked: True, False, or None when it was not.

    Wrappers made with :func:`functools.wraps` keep the mark; so do bound
    methods (the mark is read through to the function).
    """
    mark = getattr(view, MARK, None)
    return mark if isinstance(mark, bool) else None


class Routes:
    """Decides, before any backend call, whether a request is offloaded, left to the app, or answered here."""

    def __init__(
        self,
        paths: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        predicate: Predicate | None = None,
        client_path: str | None = None,
    ) -> None:
        self.paths = None if paths is None else _patterns("paths", paths)
        self.exclude = _patterns("exclude", exclude)
        if predicate is not None and not callable(predicate):
            raise ConfigurationError(f"predicate must be a function of the request, not {predicate!r}")
        self.predicate = predicate
        if client_path is not None and (not isinstance(client_path, str) or not client_path.startswith("/")):
            raise ConfigurationError(f"client_path must be a path such as '/_offload/offload.js', not {client_path!r}")
        self.client_path = client_path
        self._client_path = None if client_path is None else client_path.encode("utf-8")
        self._include = [path_matcher(pattern) for pattern in self.paths or ()]
        self._exclude = [path_matcher(pattern) for pattern in self.exclude]
        self._memo: dict[bytes, bool] = {}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Routes | None:
        """Take the routing options out of a middleware's ``options``; None when none was given."""
        given = {name: options.pop(name) for name in OPTIONS if name in options}
        return cls(**given) if given else None

    def choose(self, path: bytes, request: Any, if_none_match: str | None = None) -> bool | CachedResponse:
        """True to offload the request for ``path`` (decoded, mount point included), False to pass it on.

        For ``client_path`` the answer itself: the client script, or a 304
        when ``if_none_match`` names its current version.
        """
        if path == self._client_path:
            return self.script_answer(if_none_match)
        if self.predicate is not None:
            mark = self.predicate(request)
            if mark is not None:
                return mark
        chosen = self._memo.get(path)
        if chosen is None:
            canonical = canonical_path(path)
            chosen = not any(match(canonical) for match in self._exclude) and (
                self.paths is None or any(match(canonical) for match in self._include)
            )
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[path] = chosen
        return chosen

    @cached_property
    def _script(self) -> tuple[bytes, str]:
        body = CLIENT_SCRIPT.read_bytes()
        return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    def script_answer(self, if_none_match: str | None = None) -> CachedResponse:
        """The client script as an answer: revalidated on each use (``no-cache``), so an upgrade reaches browsers."""
        body, etag = self._script
        validators = (("Cache-Control", "no-cache"), ("ETag", etag))
        if if_none_match is not None and etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(",")):
            return CachedResponse(304, validators, b"", from_app=False)
        headers = (("Content-Type", "text/javascript; charset=utf-8"), *validators, ("Content-Length", str(len(body))))
        return CachedResponse(200, headers, body, from_app=False)


#: offload's JavaScript helper, ``offloadFetch(url, options)``: a file inside the package.
CLIENT_SCRIPT = files("offload").joinpath("static", "offload.js")


def _patterns(name: str, patterns: Iterable[str]) -> tuple[str, ...]:
    if isinstance(patterns, str):
        raise ConfigurationError(f"{name} is a list of path patterns, such as [{patterns!r}]")
    found = tuple(patterns)
    for pattern in found:
        if not isinstance(pattern, str) or not pattern.startswith(("/", "*")):
            raise ConfigurationError(f"{name}: {pattern!r} is not a path pattern such as '/reports/*'")
    return found
