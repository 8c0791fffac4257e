"""The benchmark's load generator and HTTP servers: wrk, gunicorn, uvicorn and granian on loopback.

The machine the figures come from has two cores, so the load generator and
the server under test are pinned apart: wrk (one thread) and the backend
servers run on core :data:`LOAD_CORE`, the HTTP server (one process) on
:data:`SERVER_CORE`. Every wrk run is bounded by its duration, every wait by a
timeout, and every process is started in a :class:`~offload_bench.procs.ProcessSet`
that stops whatever is left.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from offload_bench.procs import Child, HarnessError, ProcessSet, accepting, free_port, wait_for

LOAD_CORE = 0
SERVER_CORE = 1
APPS = "offload_bench.bench_apps"

SERVERS = {"wsgi": ("gunicorn", "granian"), "asgi": ("uvicorn", "granian")}


def cores() -> int:
    return len(os.sched_getaffinity(0))


def pinned(core: int, command: list[str]) -> list[str]:
    """``command`` run on one core (when the machine has more than one and ``taskset`` exists)."""
    if cores() < 2 or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(core % cores()), *command]


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: requests per second and latency percentiles in milliseconds."""

    rps: float
    p50: float
    p99: float
    requests: int
    non_2xx: int
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    percentiles = {int(p): _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if rps is None or total is None or 50 not in percentiles or 99 not in percentiles:
        raise HarnessError(f"wrk said:\n{output}")
    return WrkResult(
        rps=float(rps.group(1)),
        p50=percentiles[50],
        p99=percentiles[99],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


#: A wrk script that waits between requests on each connection: a steady rate, not saturation.
PACED_SCRIPT = "function delay()\n  return {ms}\nend\n"


def wrk(url: str, *, connections: int, seconds: float, delay_ms: int | None = None, core: int = LOAD_CORE) -> WrkResult:
    """Run wrk (one thread, on ``core``, by default the load core) against ``url``, bounded by ``seconds``."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    script = None
    if delay_ms is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115 - removed below
        script.write(PACED_SCRIPT.format(ms=delay_ms))
        script.close()
        command += ["-s", script.name]
    try:
        done = subprocess.run(
            pinned(core, [*command, url]), capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    finally:
        if script is not None:
            os.unlink(script.name)
    return parse_wrk(done.stdout + done.stderr)


def get(port: int, target: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a fresh connection: status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def server_command(server: str, interface: str, attr: str, port: int) -> list[str]:
    """The command that serves ``bench_apps.ATTR`` with one process, as ``offload serve`` would configure it."""
    target = f"{APPS}:{attr}"
    python = sys.executable
    if server == "gunicorn":  # offload serve's WSGI server and its settings
        command = [python, "-m", "gunicorn", target, "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        return [*command, "--worker-class", "gthread", "--threads", "8", "--log-level", "warning"]
    if server == "uvicorn":  # offload serve's ASGI server
        command = [python, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        return [*command, "--log-level", "warning", "--no-access-log"]
    if server == "granian":
        command = [python, "-m", "granian", "--interface", interface, "--host", "127.0.0.1", "--port", str(port)]
        return [*command, "--workers", "1", "--log-level", "warning", target]
    raise ValueError(server)


class Server:
    """One HTTP server process serving one app, pinned to the server core."""

    def __init__(
        self, processes: ProcessSet, server: str, interface: str, attr: str, env: dict[str, str] | None = None
    ) -> None:
        self.server, self.interface, self.attr = server, interface, attr
        self.port = free_port()
        name = f"{server}-{interface}-{attr}-{self.port}"
        command = pinned(SERVER_CORE, server_command(server, interface, attr, self.port))
        self.child: Child = processes.start(name, command, env=env)
        try:
            wait_for(lambda: accepting(self.port) or self._died(), 60, f"{name} to listen")
        except HarnessError:
            raise HarnessError(f"{name} did not start:\n{self.child.text()[-3000:]}") from None
        if not self.child.alive():
            raise HarnessError(f"{name} exited:\n{self.child.text()[-3000:]}")

    def _died(self) -> bool:
        return not self.child.alive()

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.port}{target}"

    def stop(self) -> None:
        self.child.stop(10)


def log_lines(path: Path) -> list[tuple[str, float]]:
    """The executions ``bench_apps.record`` wrote: (target, start time) in order."""
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return []
    lines = []
    for line in text.splitlines():
        target, _, started = line.rpartition(" ")
        if target:
            lines.append((target, float(started)))
    return lines
