"""Child processes of the harness: started in their own process group, always reaped.

Every process is started with ``start_new_session=True`` so that stopping it
(SIGTERM, then SIGKILL after a grace period) reaches everything it started,
such as the gunicorn processes under ``offload serve``. :class:`ProcessSet`
tracks them and stops whatever is left when the scenario ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

#: The repository root: made importable for every child, so it finds ``offload_bench``.
ROOT = Path(__file__).resolve().parent.parent


class HarnessError(Exception):
    """Something the harness needs did not happen in time (a server never listened, ...)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``condition`` until it returns a true value; raise :class:`HarnessError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"waited {timeout:g}s for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def rss_kib(pid: int) -> int:
    """The resident set size of a process in KiB, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process on the machine."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def leaf_descendants(pid: int) -> list[int]:
    """The descendants of ``pid`` that have no children themselves (gunicorn's request processes)."""
    tree = children_map()
    leaves, todo = [], list(tree.get(pid, []))
    while todo:
        current = todo.pop()
        below = tree.get(current, [])
        if below:
            todo.extend(below)
        else:
            leaves.append(current)
    return leaves


class Child:
    """One started process, its output in a log file."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: Path, output: IO[bytes]) -> None:
        self.name = name
        self.process = process
        self.log = log
        self._output = output

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; return the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        self.signal(signal.SIGKILL)  # whatever is left of the group, even if the leader is gone
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._output.close()
        return self.process.returncode

    def text(self) -> str:
        try:
            return self.log.read_text("utf-8", "replace")
        except OSError:
            return ""


class ProcessSet:
    """The processes of one scenario; :meth:`stop_all` leaves none behind."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log = self.directory / f"{name}.log"
        output = log.open("ab")
        process = subprocess.Popen(
            list(command),
            cwd=cwd or self.directory,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
        child = Child(name, process, log, output)
        self.children.append(child)
        return child

    def python(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        """Start ``python ARGS`` with this interpreter."""
        return self.start(name, [sys.executable, *args], env=env)

    def stop_all(self, grace: float = 10.0) -> None:
        for child in self.children:
            if child.alive():
                child.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            child.stop(max(0.1, deadline - time.monotonic()))


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of every child: this one, the repository importable, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
