"""Labels an app gives its answers, so that one ``expire(tag=...)`` drops every answer about one thing.

The app labels an answer with a response header, ``Offload-Tags: report,
customer-42`` (taken off before the answer is stored, so clients never see
it), or from Python while the view runs::

    import offload

    def report(request, customer_id):
        offload.tag("report", f"customer-{customer_id}")
        ...

Then ``offload.expire(tag="customer-42")`` (or ``offload expire --tag
customer-42``) drops, or with ``soft=True`` marks stale, exactly the answers
with that tag: tags are compared whole, never as substrings or patterns.
A tag is 1 to 128 printable ASCII characters without spaces or commas.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger("offload")

#: The response header an app tags its answer with.
HEADER = "offload-tags"

_collected: ContextVar[list[str] | None] = ContextVar("offload_tags", default=None)


def is_tag(text: str) -> bool:
    """Whether ``text`` can be a tag.

    >>> is_tag("customer-42"), is_tag("two words"), is_tag("a,b"), is_tag("")
    (True, False, False, False)
    """
    return 0 < len(text) <= 128 and text.isascii() and text.isprintable() and " " not in text and "," not in text


def tag(*names: str) -> None:
    """Label the answer being computed with ``names``; outside a worker's replay it does nothing.

    >>> tag("report")  # not in a replay: nothing to label
    """
    collected = _collected.get()
    if collected is None:
        return
    for name in names:
        if is_tag(name):
            collected.append(name)
        else:
            log.warning("ignoring the tag %r: a tag is 1-128 printable ASCII characters, no space or comma", name)


@contextmanager
def collecting() -> Iterator[list[str]]:
    """Collect the tags :func:`tag` is given while the block runs (a worker wraps each replay in it)."""
    collected: list[str] = []
    token = _collected.set(collected)
    try:
        yield collected
    finally:
        _collected.reset(token)


def from_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The headers without ``Offload-Tags``, and the valid tags it held.

    >>> from_headers((("Content-Type", "text/plain"), ("Offload-Tags", "report, customer-42")))
    ((('Content-Type', 'text/plain'),), ('report', 'customer-42'))
    """
    kept, found = [], []
    for name, value in headers:
        if name.lower() != HEADER:
            kept.append((name, value))
            continue
        for part in value.split(","):
            part = part.strip()
            if is_tag(part):
                found.append(part)
            elif part:
                log.warning("ignoring the tag %r of an Offload-Tags header", part)
    return tuple(kept), tuple(dict.fromkeys(found))
