"""Documentation examples run as printed: code blocks written out as files, shell lines run as commands.

A Markdown document's code blocks are read in order (:func:`blocks`). A
Python or HTML block whose first line names a file (``# myapp.py``,
``<!-- static/report.html -->``) is that file, whole; ``# FILE (add at the
end)`` appends to it, and ``# FILE (instead of its last line)`` replaces the
line that ends it. A ``sh`` block is run line by line in an
:class:`Example`'s directory (a ``console`` block too: its ``$ `` lines are
the commands, the others what they print, see :meth:`Block.printed`), with the documentation's addresses replaced by
the test's own servers (:attr:`Example.addresses`): a line that starts a
server or a worker runs in the background until the example ends, any other
line runs to its end and must succeed. Servers listen where the environment
tells them (``OFFLOAD_BIND``, ``GUNICORN_CMD_ARGS``, ``UVICORN_PORT``), on a
free port per example, so the commands stay as printed.

Every process is started in a process group of its own and killed with it
when the example closes. Nothing sleeps for a fixed time.
"""

from __future__ import annotations

import ast
import contextlib
import http.client
import importlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.deployments import Answer
from tests.servers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: Shell lines that run until stopped: servers and workers (a worker with --burst ends by itself).
LONG_RUNNING = re.compile(
    r"^(\w+=\S+\s+)*("
    r"offload serve\b|offload proxy\b|offload worker\b(?!.*--burst)|offload dashboard\b|gunicorn\b|uvicorn\b"
    r"|rq worker\b|celery\b.*\bworker\b"
    r"|flask\b.*\boffload worker\b|python manage\.py offload_worker\b)"
)

#: Long-running lines that serve HTTP, on :attr:`Example.port`.
SERVER = re.compile(r"^(\w+=\S+\s+)*(offload serve\b|offload proxy\b|gunicorn\b|uvicorn\b)")

#: The first line of a block that names its file.
FILE_HEADER = re.compile(r"^(?:#|<!--)\s*(?P<path>[\w./-]+\.\w+)(?P<rest>.*?)(?:-->)?\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    language: str
    text: str
    line: int  # where it starts in the document, for messages

    @property
    def file(self) -> tuple[str, bool] | None:
        """The file the block is, and whether it goes into that file (at its end, or instead of its last line).

        None for other blocks.
        """
        found = FILE_HEADER.match(self.text.splitlines()[0]) if self.text else None
        if found is None or self.language not in ("python", "html"):
            return None
        return found["path"], any(words in found["rest"] for words in ("add at the end", "instead of its last line"))

    def commands(self) -> list[str]:
        """The command lines of a shell block: blank lines and whole-line comments left out.

        In a ``console`` block, the lines after a ``$ `` prompt, without it.
        """
        if self.language == "console":
            return [command for command, _ in self.printed()]
        return [line for line in self.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    def printed(self) -> list[tuple[str, list[str]]]:
        """A ``console`` block's commands, each with the lines the page shows it printing."""
        assert self.language == "console", f"the block at line {self.line} is not a console block"
        found: list[tuple[str, list[str]]] = []
        for line in self.text.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found:
                found[-1][1].append(line)
        return found


def blocks(document: Path) -> list[Block]:
    """Every fenced code block of ``document``, in order."""
    found = []
    lines = document.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[index])
        if opening is None:
            index += 1
            continue
        start = index
        index += 1
        body = []
        while index < len(lines) and lines[index] != "```":
            body.append(lines[index])
            index += 1
        found.append(Block(opening[1], "\n".join(body) + "\n", start + 1))
        index += 1
    return found


class Document:
    """A document's blocks, found by a text each one holds: ``block("from flask import")``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blocks = blocks(path)

    def block(self, marker: str) -> Block:
        """The one block holding ``marker``."""
        matches = [block for block in self.blocks if marker in block.text]
        assert len(matches) == 1, f"{self.path.name}: expected one block holding {marker!r}, found {len(matches)}"
        return matches[0]


def claimed_markers(name: str, document: str = "README") -> set[str]:
    """The texts a test module passes to ``<document>.block(...)``: the blocks it runs.

    ``name`` is the module's path from the repository's root, ``document`` the
    name the module gives the :class:`Document`.
    """
    tree = ast.parse((ROOT / name).read_text("utf-8"))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "block"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == document
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }


def claims(names: list[str]) -> dict[Path, set[str]]:
    """For each document the test modules ``names`` read (a module-level :class:`Document`), the blocks they run."""
    found: dict[Path, set[str]] = {}
    for name in names:
        module = importlib.import_module(name.removesuffix(".py").replace("/", "."))
        for attribute, value in vars(module).items():
            if isinstance(value, Document):
                found.setdefault(value.path, set()).update(claimed_markers(name, attribute))
    return found


def assert_prints(printed: list[str], output: str) -> None:
    """Assert ``output`` holds the lines a page shows a command printing, in order.

    A number on the page stands for any number (an ``Age``, a ``ttl``); blank lines are left out.
    """
    lines = [line.rstrip("\r") for line in output.splitlines()]
    position = 0
    for expected in printed:
        if not expected.strip():
            continue
        pattern = re.compile(r"\d+".join(re.escape(part) for part in re.split(r"\d+", expected.rstrip())))
        while position < len(lines) and not pattern.fullmatch(lines[position].rstrip()):
            position += 1
        assert position < len(lines), f"the page shows {expected!r}, not printed (in that order):\n{output}"
        position += 1


@dataclass
class Example:
    """A directory where a document's files are written and its commands run, with their processes."""

    directory: Path
    addresses: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)  # pids stopped on purpose
    _outputs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("OFFLOAD_", "PYTEST_", "DJANGO_SETTINGS_MODULE"))
        }
        base.update(
            PATH=os.pathsep.join([str(BIN), base.get("PATH", "")]),
            PYTHONPATH=os.pathsep.join(filter(None, [str(self.directory), *_source_paths()])),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            XDG_RUNTIME_DIR=str(self.directory),  # gunicorn's control socket: one per example
        )
        self.env = {**base, **self.env}
        self.listen_on(self.port)

    def listen_on(self, port: int) -> None:
        """Make the servers the commands start listen on ``port``, and ``127.0.0.1:8000`` mean it."""
        self.port = port
        self.env.update(
            OFFLOAD_BIND=f"127.0.0.1:{port}",
            GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}",
            UVICORN_PORT=str(port),
        )
        self.addresses["127.0.0.1:8000"] = f"127.0.0.1:{port}"
        self.addresses["localhost:8000"] = f"127.0.0.1:{port}"

    def substituted(self, text: str) -> str:
        for old, new in self.addresses.items():
            text = text.replace(old, new)
        return text

    # -- files --------------------------------------------------------------------

    def write(self, block: Block) -> Path:
        """Write a block out as the file its first line names (or add it at the end of that file)."""
        named = block.file
        assert named is not None, f"the block at line {block.line} names no file on its first line"
        relative, append = named
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.substituted(block.text)
        if append:
            assert path.exists(), f"{relative} must exist before the block at line {block.line} adds to it"
            if "instead of its last line" in text.splitlines()[0]:
                kept = path.read_text(encoding="utf-8").rstrip().splitlines()[:-1]
                path.write_text("\n".join([*kept, *text.splitlines()[1:]]) + "\n", encoding="utf-8")
                return path
            with path.open("a", encoding="utf-8") as file:
                file.write("\n" + text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    # -- commands -----------------------------------------------------------------

    def shell(self, block: Block, timeout: float = 120) -> None:
        """Run a shell block: ``export`` lines set the environment, servers start, other lines must succeed."""
        assert block.language in ("sh", "console"), f"the block at line {block.line} is not a shell block"
        serving = False
        for line in block.commands():
            command = self.substituted(line)
            if command.startswith("export "):
                for assignment in shlex.split(command)[1:]:
                    name, _, value = assignment.partition("=")
                    self.env[name] = value
            elif LONG_RUNNING.match(command):
                self.start(command)
                serving = serving or SERVER.match(command) is not None
            else:
                if serving:  # a command after a server's line talks to it: once it listens
                    wait_for(self.listening, 60, f"a server on port {self.port}")
                done = self.run(command, timeout=timeout)
                assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stdout}{done.stderr}"

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run one command line with bash, to its end."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, command: str) -> subprocess.Popen[bytes]:
        """Start one command line in the background, in a process group of its own."""
        log = self.directory / f"process-{len(self.processes)}.log"
        output = log.open("ab")
        self._outputs.append(output)
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.directory,
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append((command, process, log))
        return process

    def logs(self) -> str:
        """What every background process printed, for failure messages."""
        parts = []
        for command, process, log in self.processes:
            text = log.read_text("utf-8", "replace")[-4000:]
            parts.append(f"--- {command} (exit {process.poll()})\n{text}")
        return "\n".join(parts)

    def stop(self, command_start: str | None = None) -> None:
        """Stop the background processes (those whose command starts with ``command_start``), all at once."""
        chosen = [process for command, process, _ in self.processes if command.startswith(command_start or "")]
        self.stopped.update(process.pid for process in chosen)
        _kill(chosen)

    def close(self) -> None:
        self.stop()
        for output in self._outputs:
            output.close()

    # -- HTTP -------------------------------------------------------------------------

    def get(self, target: str, headers: dict[str, str] | None = None, port: int | None = None) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=30)
        try:
            connection.request("GET", target, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def listening(self, port: int | None = None) -> bool:
        for command, process, _ in self.processes:
            if process.poll() is not None and SERVER.match(command) and process.pid not in self.stopped:
                raise AssertionError(f"`{command}` exited:\n{self.logs()}")
        try:
            socket.create_connection(("127.0.0.1", port or self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def poll(self, target: str, timeout: float = 60, port: int | None = None) -> Answer:
        """Wait for the server, then GET ``target`` until the answer is no longer 202."""
        wait_for(lambda: self.listening(port), timeout, f"a server on port {port or self.port}\n{self.logs()}")

        def answered() -> Answer | None:
            answer = self.get(target, port=port)
            return None if answer.status == 202 else answer

        try:
            return wait_for(answered, timeout, f"GET {target} to stop answering 202")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.logs()}") from None


def _source_paths() -> list[str]:
    """Where offload is imported from in this test run (a checkout's ``src``), then the repository."""
    import offload

    return [str(Path(offload.__file__).resolve().parent.parent), str(ROOT)]


def stop_all(examples: Iterable[Example]) -> None:
    """Stop the processes of several examples at once: they shut down side by side, not one after another."""
    chosen = list(examples)
    for made in chosen:
        made.stopped.update(process.pid for _, process, _ in made.processes)
    _kill([process for made in chosen for _, process, _ in made.processes])


def _kill(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process's group, wait for them, then SIGKILL what is left of each group."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # what is left of the group: a server's own workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


@contextlib.contextmanager
def example(directory: Path, addresses: dict[str, str] | None = None) -> Iterator[Example]:
    """An :class:`Example` in ``directory`` whose processes are stopped on the way out."""
    made = Example(directory, dict(addresses or {}))
    try:
        yield made
    finally:
        made.close()


# -- proxy examples -----------------------------------------------------------------


def file_server_upstream(ex: Example) -> None:
    """The proxy examples' upstream: a file server serving hello.txt where a page says ``127.0.0.1:8080``."""
    (ex.directory / "hello.txt").write_text("hello from upstream\n", encoding="utf-8")
    port = free_port()
    ex.start(f"python -m http.server {port} --bind 127.0.0.1")
    wait_for(lambda: ex.listening(port), 30, "the upstream")
    ex.addresses["127.0.0.1:8080"] = f"127.0.0.1:{port}"


def fetched_then_stored(ex: Example) -> None:
    """A miss waits for the one fetch of its key; the next request is served from the store."""
    wait_for(ex.listening, 60, f"the proxy\n{ex.logs()}")
    first = ex.get("/hello.txt")
    assert (first.status, first.body) == (200, b"hello from upstream\n"), (first, ex.logs())
    (ex.directory / "hello.txt").write_text("changed\n", encoding="utf-8")
    again = ex.get("/hello.txt")  # Last-Modified gives a heuristic lifetime
    assert (again.status, again.body) == (200, b"hello from upstream\n"), again
    assert "hit" in (again.header("Cache-Status") or ""), again.headers
    assert again.header("Age") is not None
