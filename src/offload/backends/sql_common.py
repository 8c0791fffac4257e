"""What the SQLite and PostgreSQL backends share: reading rows back, and the expiry log's rules.

Both keep the same structures (see their module docstrings): cache rows with
a namespace, a path, a query, a failed flag and tags; an expiry log numbered
by a per-namespace epoch; jobs and dead letters. The SQL differs between the
engines; what is done with the rows it returns is the same, and lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from offload.backends.base import Claim, DeadJob, ExpiryRule, IndexEntry, QueuedJob, Restamp, as_bytes

#: How long an expiry stays in the log that finishing jobs consult (the contract asks for an hour at least).
LOG_SECONDS = 3600.0

#: What a pruned or unreadable stretch of the log counts as: an expiry of everything.
EVERYTHING = ExpiryRule("*")


def as_text(value: object) -> str:
    """A key read back from a row, as text whatever a foreign writer put there."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def expiry_after(since: int, rows: Iterable[tuple[int, str | bytes | None]], entry: IndexEntry) -> ExpiryRule | None:
    """The first expiry logged after epoch ``since`` that selects ``entry``, from the log's ``(epoch, rule)`` rows.

    The query returns the namespace's current epoch as a row whose rule is
    NULL, beside the rules logged after ``since``: both come from one
    statement, so from one snapshot. Epochs are consecutive, so fewer rules
    than epochs means some were pruned: that answers as if everything had
    been expired, as does an entry that cannot be read back.

    >>> logged = [(3, None), (2, ExpiryRule("/a").encode()), (3, ExpiryRule("/b").encode())]
    >>> expiry_after(1, logged, IndexEntry("/b", "")).pattern, expiry_after(1, logged, IndexEntry("/c", ""))
    ('/b', None)
    >>> expiry_after(1, logged[::2], IndexEntry("/c", "")) == EVERYTHING  # epoch 2 was pruned
    True
    """
    current, logged = 0, []
    for epoch, encoded in rows:
        if encoded is None:
            current = int(epoch)
        else:
            logged.append((int(epoch), encoded))
    if current - since > len(logged):
        return EVERYTHING
    for _, encoded in sorted(logged, key=lambda item: item[0]):
        rule = ExpiryRule.decode(encoded)
        if rule is None:
            return EVERYTHING
        if rule.matches(entry):
            return rule
    return None


def restamped(rule: ExpiryRule, restamp: Restamp | None, value: bytes) -> bytes | None:
    """What a finishing job's answer becomes after ``rule`` overtook it: rewritten when soft, else None (removed)."""
    return restamp(value) if (rule.soft and restamp is not None) else None


@dataclass
class ExpiryPlan:
    """What one ``expire()`` does to the candidate rows the engine found."""

    removed: list[str] = field(default_factory=list)
    rewritten: list[tuple[str, bytes]] = field(default_factory=list)
    touched: int = 0  # live answers removed or rewritten: expire()'s return value


def plan_expiry(
    rule: ExpiryRule, restamp: Restamp | None, rows: Iterable[tuple[str, bool, IndexEntry, object]]
) -> ExpiryPlan:
    """Decide, for rows ``(key, live, entry, value)`` the SQL narrowed down, which to remove and which to rewrite.

    ``rule.matches`` is the exact test. With ``restamp``, a live answer is
    rewritten (keeping its expiry) unless ``restamp`` returns None or the
    stored value is not bytes; expired answers are removed, and not counted.
    """
    plan = ExpiryPlan()
    for key, live, entry, value in rows:
        if not rule.matches(entry):
            continue
        stored = as_bytes(value) if (restamp is not None and live) else None
        rewritten = restamp(stored) if (restamp is not None and stored is not None) else None
        if rewritten is None:
            plan.removed.append(key)
        else:
            plan.rewritten.append((key, rewritten))
        plan.touched += bool(live)
    return plan


def claimed(row: Sequence[object], token: str) -> Claim:
    """A claim from an ``(id, key, payload)`` row; a payload that is not bytes is handed over as ``b""``."""
    job_id, key, payload = row
    return Claim(str(job_id), as_text(key), as_bytes(payload) or b"", token)


def queued_job(row: Sequence[Any]) -> QueuedJob:
    """A job from an ``(id, key, payload)`` row, or ``(id, key, payload, leased_until)`` (Unix seconds)."""
    job_id, key, payload = row[:3]
    leased_until = float(row[3]) if len(row) > 3 and row[3] is not None else None
    return QueuedJob(str(job_id), as_text(key), as_bytes(payload) or b"", leased_until)


def dead_letter(row: Sequence[Any]) -> DeadJob:
    """A dead letter from an ``(id, key, payload, error, buried)`` row (``buried`` in Unix seconds)."""
    job_id, key, payload, error, buried = row
    return DeadJob(str(job_id), as_text(key), as_bytes(payload) or b"", as_text(error), float(buried))
