"""``offload serve``: one HTTP server and N worker processes, supervised together.

WSGI apps run on gunicorn and ASGI apps on uvicorn: both are mature,
maintained, pre-forking production servers. The supervisor restarts a worker
that dies, and on SIGTERM or SIGINT stops everything gracefully: workers
finish or hand back their current job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from offload.logs import LEVEL_VARIABLE, uvicorn_config

log = logging.getLogger("offload.serve")

#: How long children get to stop after SIGTERM before they are killed.
GRACE_SECONDS = 30.0


def parse_bind(bind: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:8000`` for IPv6) into host and port."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{bind!r} is not HOST:PORT, for example 127.0.0.1:8000")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class Supervisor:
    """Starts the server and the workers as child processes and keeps them running."""

    def __init__(
        self,
        app: str,
        *,
        url: str | None,
        host: str,
        cache_url: str | None = None,
        queue_url: str | None = None,
        port: int,
        workers: int = 1,
        web_processes: int = 2,
        concurrency: int = 1,
        protocol: str = "auto",
        log_level: str = "info",
    ) -> None:
        self.app = app
        self.url = url
        self.cache_url = cache_url
        self.queue_url = queue_url
        self.host, self.port = host, port
        self.workers = workers
        self.web_processes = web_processes
        self.concurrency = concurrency
        self.protocol = protocol
        self.log_level = log_level
        self._stopping = False
        self._server: subprocess.Popen[bytes] | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._log_config: str | None = None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["OFFLOAD_APP"] = self.app
        env[LEVEL_VARIABLE] = self.log_level
        for name, value in (
            ("OFFLOAD_URL", self.url),
            ("OFFLOAD_CACHE_URL", self.cache_url),
            ("OFFLOAD_QUEUE_URL", self.queue_url),
        ):
            if value:
                env[name] = value
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
        return env

    def _is_asgi(self) -> bool:
        if self.protocol != "auto":
            return self.protocol == "asgi"
        from offload.importer import import_app
        from offload.replay import is_asgi

        return is_asgi(import_app(self.app))

    def server_command(self) -> list[str]:
        target = "offload.served:app"
        if self._is_asgi():
            return [
                sys.executable,
                "-m",
                "uvicorn",
                target,
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--workers",
                str(self.web_processes),
                "--log-level",
                self.log_level,
                "--log-config",
                self._uvicorn_log_config(),
                "--no-access-log",
            ]
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return [
            sys.executable,
            "-m",
            "gunicorn",
            target,
            "--bind",
            bind,
            "--workers",
            str(self.web_processes),
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--log-level",
            self.log_level,
            "--graceful-timeout",
            "30",
            *_gunicorn_extra_options(),
        ]

    def _uvicorn_log_config(self) -> str:
        """A file holding uvicorn's logging configuration, whose lines start with the time; removed at exit."""
        if self._log_config is None:
            handle, path = tempfile.mkstemp(prefix="offload-uvicorn-", suffix=".json")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(uvicorn_config(), file)
            self._log_config = path
        return self._log_config

    def worker_command(self) -> list[str]:
        command = [sys.executable, "-m", "offload", "worker", self.app, "--concurrency", str(self.concurrency)]
        command += ["--log-level", self.log_level, "--protocol", self.protocol]
        return command

    def run(self) -> int:
        """Run until the server exits or a signal arrives; return the exit code."""

        def stop(signum: int, frame: Any) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        env = self._environment()
        self._server = subprocess.Popen(self.server_command(), env=env)
        self._workers = [subprocess.Popen(self.worker_command(), env=env) for _ in range(self.workers)]
        log.info("serving %s on http://%s:%d with %d worker process(es)", self.app, self.host, self.port, self.workers)
        restarts: dict[int, float] = {}
        code = 0
        while not self._stopping:
            server_code = self._server.poll()
            if server_code is not None:
                log.error("the HTTP server exited with code %s; stopping", server_code)
                code = server_code or 1
                break
            for index, process in enumerate(self._workers):
                if process.poll() is not None and time.monotonic() - restarts.get(index, 0) > 1.0:
                    log.warning("worker %d exited with code %s; restarting it", process.pid, process.returncode)
                    restarts[index] = time.monotonic()
                    self._workers[index] = subprocess.Popen(self.worker_command(), env=env)
            time.sleep(0.2)
        self._shutdown()
        return code

    def _shutdown(self) -> None:
        children = [p for p in [self._server, *self._workers] if p is not None and p.poll() is None]
        for process in children:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for process in children:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_config is not None:
            with contextlib.suppress(OSError):
                os.remove(self._log_config)


def _gunicorn_extra_options() -> list[str]:
    """Options only some gunicorn versions have.

    gunicorn 27 opens a control socket at one path per user: two servers on a
    machine would share it, and offload does not use it.
    """
    from importlib.metadata import version as installed_version

    version = tuple(int(part) for part in installed_version("gunicorn").split(".")[:2] if part.isdigit())
    return ["--no-control-socket"] if version >= (27, 0) else []
