"""The CPU scheduling class of a worker process, so that jobs yield the CPU to web processes on the same machine.

``nice`` alone leaves a busy worker a fair share of a core next to a web
process (CFS weights nice 10 at about a tenth, not zero), and every wakeup
of the web process still waits for the worker's time slice to end. Linux's
``SCHED_BATCH`` marks the worker as a CPU hog that never preempts on
wakeup; ``SCHED_IDLE`` runs it only on a core that nothing else wants.

No class keeps a busy worker from delaying a web process on the core
they share (see "Frontend isolation" in docs/PERFORMANCE.md); cores of
their own do: :func:`apply_cpus` keeps a worker on the CPUs it is given
(``--cpus 2-7``), leaving the others to the web processes, as ``taskset``
or a cgroup cpuset would.

A scheduling class and a CPU affinity are per thread on Linux and a new
thread inherits its creator's, so both are set on every thread the process
has already started (a backend's subscriber thread, the metrics server),
and the job threads started after it inherit them.
"""

from __future__ import annotations

import os
import sys

from offload.errors import OffloadError

__all__ = ["POLICIES", "UnsupportedPolicy", "apply_cpus", "apply_sched", "parse_cpus"]

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


def parse_cpus(text: str) -> set[int]:
    """The CPU numbers of a list such as ``taskset -c`` takes: ``"2-7"``, ``"0,2,4-5"``.

    >>> sorted(parse_cpus("0,2,4-5"))
    [0, 2, 4, 5]
    """
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{text!r} is not a list of CPU numbers such as 0,2,4-7")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{part!r}: a range goes from low to high")
        cpus.update(range(low, high + 1))
    return cpus


def apply_cpus(cpus: set[int]) -> None:
    """Keep every thread of this process on ``cpus``; raises ValueError for CPUs it may not run on.

    Raises :class:`UnsupportedPolicy` on a platform without CPU affinity (``os.sched_setaffinity``).
    """
    if not hasattr(os, "sched_setaffinity"):
        raise UnsupportedPolicy(f"--cpus needs CPU affinity (os.sched_setaffinity), which {sys.platform} does not have")
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise ValueError(
            f"CPU(s) {', '.join(map(str, sorted(cpus - allowed))) or 'none'} are not among those this process "
            f"may run on ({', '.join(map(str, sorted(allowed)))})"
        )
    for thread in _threads():
        try:
            os.sched_setaffinity(thread, cpus)
        except ProcessLookupError:  # the thread ended since the listing
            continue
