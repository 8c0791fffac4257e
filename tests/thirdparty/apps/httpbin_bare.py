"""httpbin as a worker calls it: the same app, given no client address (offload never replays it).

Nothing else is changed: the comparison with the app behind offload is then
between the same inputs, and any other difference is offload's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from httpbin import app as httpbin  # type: ignore[import-untyped]


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    environ.pop("REMOTE_ADDR", None)
    result: Iterable[bytes] = httpbin(environ, start_response)
    return result
