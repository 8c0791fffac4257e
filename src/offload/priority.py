"""The CPU scheduling class of a worker process, so that jobs yield the CPU to web processes on the same machine.

``nice`` alone leaves a busy worker a fair share of a core next to a web
process (CFS weights nice 10 at about a tenth, not zero), and every wakeup
of the web process still waits for the worker's time slice to end. Linux's
``SCHED_BATCH`` marks the worker as a CPU hog that never preempts on
wakeup; ``SCHED_IDLE`` runs it only on a core that nothing else wants.

A scheduling class is per thread on Linux and a new thread inherits its
creator's, so :func:`apply_sched` sets it on every thread the process has
already started (a backend's subscriber thread, the metrics server), and
the job threads started after it inherit it.
"""

from __future__ import annotations

import os
import sys

from offload.errors import OffloadError

__all__ = ["POLICIES", "UnsupportedPolicy", "apply_sched"]

#: ``--sched`` choices and the ``os`` constant each one names: ``normal`` is the default class (SCHED_OTHER).
POLICIES = {"normal": "SCHED_OTHER", "batch": "SCHED_BATCH", "idle": "SCHED_IDLE"}


class UnsupportedPolicy(OffloadError):
    """This platform cannot run a process in that scheduling class."""


def _constant(policy: str) -> int:
    if policy not in POLICIES:
        raise ValueError(f"{policy!r} is not one of {', '.join(POLICIES)}")
    value = getattr(os, POLICIES[policy], None)
    if value is None or not hasattr(os, "sched_setscheduler"):
        raise UnsupportedPolicy(
            f"--sched {policy} needs Linux's {POLICIES[policy]} (os.sched_setscheduler), "
            f"which {sys.platform} does not have; leave --sched out (--nice still applies)"
        )
    return int(value)


def _threads() -> list[int]:
    """The ids of this process's threads (``/proc/self/task``), or the calling thread alone where there is none."""
    try:
        return [int(entry) for entry in os.listdir("/proc/self/task") if entry.isdigit()]
    except OSError:
        return [0]


def apply_sched(policy: str) -> None:
    """Put every thread of this process in the scheduling class ``policy`` names (``normal``, ``batch``, ``idle``).

    ``normal`` on a platform without scheduling classes does nothing: it is
    what every process already runs with. Raises :class:`UnsupportedPolicy`
    for ``batch`` and ``idle`` there, and ``OSError`` when the system refuses
    (leaving ``idle`` for another class needs a privilege on old kernels).
    """
    if policy == "normal" and not hasattr(os, "sched_setscheduler"):
        return
    constant = _constant(policy)
    parameters = os.sched_param(0)  # the non-realtime classes take no priority
    for thread in _threads():
        try:
            if os.sched_getscheduler(thread) != constant:  # leaving a class can need a privilege: only change
                os.sched_setscheduler(thread, constant, parameters)
        except ProcessLookupError:  # the thread ended since the listing
            continue
