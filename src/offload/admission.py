"""Per-client admission: one client cannot fill the queue with keys of its own making.

With ``max_new_keys_per_minute`` set, every miss that would queue a new job
counts against its client in the backend (an atomic counter per client and
minute, :meth:`offload.backends.Cache.incr`), so the limit holds across web
processes and machines. A client over its limit gets ``429 Too Many
Requests`` with ``Retry-After`` (the seconds left in the minute) for further
new keys; its known keys, hits and pending jobs, and every other client, are
served as usual. A client is its address (the one the server reports: behind
a proxy, give ``client_id``), or what ``client_id(header, address)`` returns:
an API key, a session, a trusted proxy header. ``client_id`` returning None
leaves that request unlimited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from offload.settings import Settings

#: A window of the counter, in seconds.
WINDOW = 60


def client_of(settings: Settings, header: Callable[[str], bytes | None], address: str) -> str | None:
    """The client a request counts against, or None when it is not limited."""
    if settings.client_id is not None:
        return settings.client_id(header, address)
    return address or None


def counter_key(namespace: str, client: str, now: float) -> tuple[str, int]:
    """The backend key of a client's counter in the window ``now`` falls in, and the seconds left in it.

    >>> counter_key("shop", "10.0.0.1", 120.5)
    ('shop:c:f5047344122f0dee9974ba6761e61c6b8649e1f3968d13a635ebbf7be53a3a0d:2', 60)
    """
    window = int(now // WINDOW)
    digest = hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()
    left = max(1, int((window + 1) * WINDOW - now + 0.999))
    return f"{namespace}:c:{digest}:{window}", left
