"""The expiry log of the server backends that keep it as numbered entries (Redis, memcached).

:meth:`Cache.expire <offload.backends.base.Cache.expire>` takes the next
epoch of its namespace and logs its rule under it, with the time, before it
touches any answer; a finishing job reads the entries logged after the epoch it
started at (:meth:`Cache.expired_since <offload.backends.base.Cache.expired_since>`).
Entries older than :data:`EXPIRY_LOG_SECONDS` are pruned, always from the
oldest, so the entries kept are the epochs ``oldest..current`` without a gap.

The epochs of a namespace do not start at 1 but above the server's clock in
milliseconds at its first expiry (the log's *base*). A log lost with its store
(Redis restarted without persistence, an evicted memcached item) thus starts
again above every epoch handed out before, and a job that read an epoch of the
lost log finds a gap before the first entry it is shown: a gap answers as if
an expiry in it had selected everything, since nobody can tell what it held.
"""

from __future__ import annotations

from collections.abc import Sequence

from offload.backends.base import ExpiryRule, IndexEntry

#: How long an expiry stays in the log: longer than any job runs.
EXPIRY_LOG_SECONDS = 3600.0

#: What an expiry the log no longer holds may have selected.
EVERYTHING = ExpiryRule("*")


def entry_text(epoch: int, unix_ms: int, rule: ExpiryRule) -> str:
    """One entry of the log: ``<epoch> <unix ms> <rule as JSON>`` (unique, since the epoch is)."""
    return f"{epoch} {unix_ms} {rule.encode()}"


def parse_entry(text: str | bytes) -> tuple[int, int, ExpiryRule | None] | None:
    """An entry's epoch, time and rule (None for a damaged rule), or None for an entry not in this form."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    epoch, _, rest = text.partition(" ")
    unix_ms, _, rule = rest.partition(" ")
    if not (epoch.isdigit() and unix_ms.isdigit()):
        return None
    return int(epoch), int(unix_ms), ExpiryRule.decode(rule)


def first_expiry(
    since: int, current: int, base: int, newer: Sequence[str | bytes], entry: IndexEntry
) -> ExpiryRule | None:
    """The first expiry logged after epoch ``since`` that selects ``entry``, from a view of the log.

    ``newer`` holds the kept entries with epochs above ``since``, oldest first;
    ``current`` is the last epoch handed out and ``base`` the one the log
    started from (both 0 when nothing was ever logged). An epoch of 0 was read
    before the first expiry, so the log is whole for it while nothing was pruned.

    >>> log = [entry_text(6, 0, ExpiryRule("/b")), entry_text(7, 0, ExpiryRule("/a"))]
    >>> first_expiry(5, 7, 1, log, IndexEntry("/a", "")).pattern, first_expiry(5, 7, 1, log, IndexEntry("/c", ""))
    ('/a', None)
    >>> first_expiry(3, 7, 1, log, IndexEntry("/c", "")).pattern  # epochs 4 and 5 were pruned
    '*'
    """
    if since >= current:
        return None
    parsed = [parse_entry(text) for text in newer]
    expected = base + 1 if since == 0 else since + 1
    if not parsed or parsed[0] is None or parsed[0][0] != expected:
        return EVERYTHING  # pruned, or lost with the store: anything may have been expired
    for item in parsed:
        rule = item[2] if item is not None else None
        if rule is None:
            return EVERYTHING  # a damaged entry: it may have selected anything
        if rule.matches(entry):
            return rule
    return None


def kept(entries: Sequence[str], now_ms: int) -> list[str]:
    """A log kept as a list of entries, without those older than :data:`EXPIRY_LOG_SECONDS`: the oldest go first."""
    horizon = now_ms - int(EXPIRY_LOG_SECONDS * 1000)
    start = 0
    while start < len(entries) and ((parsed := parse_entry(entries[start])) is None or parsed[1] < horizon):
        start += 1
    return list(entries[start:])
