"""Where the rules of a deployment plug in: what a request accepts, what a worker replays, stores, and for how long.

offload in front of one app (the middlewares) and offload in front of any
HTTP server (:mod:`offload.proxy`) follow one lifecycle but not the same
rules: the middleware replays only keyed headers and keeps answers for
``ttl``, while a shared HTTP cache forwards every end-to-end header and
obeys the origin's ``Cache-Control`` and the client's. :class:`CachePolicy`
is the middleware's rules, one method per decision; the core
(:class:`offload.core.Offloader`) and the worker call these methods, and
:class:`offload.proxy.policy.SharedCache` overrides them. A deployment
chooses its policy with the ``policy`` setting.

Each method is named after the step of the lifecycle it decides:
:meth:`~CachePolicy.look` (may this request be served what is stored?),
:meth:`~CachePolicy.at_miss` (queue a job, forward the request, or answer
at once), :meth:`~CachePolicy.replayed` (what a job keeps of the request),
:meth:`~CachePolicy.judge` (for whom an answer may be kept) and
:meth:`~CachePolicy.lifetimes` (for how long).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from offload import freshness, storable
from offload.freshness import Found, Lifetimes
from offload.keys import canonical_path
from offload.records import CachedResponse, StoredRequest, VaryRecord
from offload.storable import Verdict

if TYPE_CHECKING:
    from offload.core import Incoming
    from offload.settings import Settings

#: What :meth:`CachePolicy.at_miss` may decide besides an answer of its own: queue a job, or let the app answer.
QUEUE: Literal["queue"] = "queue"
FORWARD: Literal["forward"] = "forward"
MissAction = Literal["queue", "forward"]


class CachePolicy:
    """The middleware's rules: answers keyed on ``vary``, replayed with keyed headers, kept for ``ttl``.

    Stateless, so one instance serves every request and thread; subclasses
    override the decisions they change.
    """

    #: Whether an answer kept for one client goes only to the request whose job computed it
    #: (each request then carries an owner token), rather than to the first request of its key that asks.
    owned_answers = False

    def look(
        self, answer: CachedResponse, incoming: Incoming, now: float, settings: Settings, draw: Callable[[], float]
    ) -> Found:
        """Whether a stored answer may serve this request at ``now``, and whether to queue a refresh."""
        return freshness.look(answer, now, settings.early_refresh, draw)

    def at_miss(self, incoming: Incoming, found: CachedResponse | VaryRecord | None) -> MissAction | CachedResponse:
        """What a request that nothing stored may serve does (``found``: what is stored, if anything).

        Queue one job (and answer 202), let the app answer it, or answer at once.
        """
        return QUEUE

    def keyed(self, name: str, value: bytes | None) -> bytes | None:
        """The value a request header has in a key (None: absent); the middleware keys the bytes as sent."""
        return value

    def key_headers(
        self, names: Iterable[str], header: Callable[[str], bytes | None]
    ) -> list[tuple[str, bytes | None]]:
        """The headers ``names`` as a key is made of them, read with ``header``."""
        return [(name, self.keyed(name, header(name))) for name in names]

    def replayed(self, incoming: Incoming, keyed: tuple[str, ...]) -> tuple[list[tuple[str, bytes]], tuple[str, ...]]:
        """The headers a job replays (lowercase names, values as sent) and the names of the others the client sent.

        The middleware replays exactly the keyed headers (``keyed``): what the
        app sees at replay is what the key is made of.
        """
        headers = []
        for name in keyed:
            value = incoming.header(name)
            if value is not None:
                headers.append((name, value))
        kept = set(keyed)
        present = tuple(sorted({name for name in incoming.names() if name not in kept and name != "host"}))
        return headers, present

    def judge(self, response: CachedResponse, request: StoredRequest, settings: Settings) -> Verdict:
        """For whom the answer to ``request`` may be kept: see :func:`offload.storable.judge`."""
        return storable.judge(response, request, settings)

    def keeps_request(self, request: StoredRequest) -> bool:
        """Whether a stored answer keeps its request, to be computed again on a purge: not with a credential."""
        return not storable.has_credentials(request)

    def lifetimes(self, response: CachedResponse, request: StoredRequest, settings: Settings, now: float) -> Lifetimes:
        """How long an answer is fresh and may be served stale: the answer's own lifetimes, ``ttl`` by default.

        A failure is kept for ``error_ttl`` only, and never served stale.
        """
        if response.failed:
            return Lifetimes(settings.error_ttl, 0.0, 0.0)
        ttl = settings.ttl_for(canonical_path(request.target.full_path))
        return freshness.lifetimes(response, ttl, settings.stale, settings.stale_if_error, now)


#: The middleware's rules, used when the ``policy`` setting is None.
MIDDLEWARE = CachePolicy()


def policy_of(settings: Settings) -> CachePolicy:
    """The policy a deployment's settings choose: its ``policy``, else the middleware's rules."""
    return settings.policy if settings.policy is not None else MIDDLEWARE
