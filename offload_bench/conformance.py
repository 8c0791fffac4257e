"""The HTTP caching conformance harness: the public cache test suite against a proxy on loopback.

Usage::

    CACHE_TESTS_DIR=/path/to/cache-tests python -m offload_bench.conformance [--no-cache]
        [--proxy-command 'offload proxy --upstream {upstream} --bind 127.0.0.1:{port}']
        [--out DIR] [--id TEST_ID] [--expect-passed N]

The suite is github.com/http-tests/cache-tests, the one behind cache-tests.fyi;
it is not part of this repository. Check it out and install its dependencies
once (``git clone https://github.com/http-tests/cache-tests && cd cache-tests
&& npm install``), then point ``CACHE_TESTS_DIR`` at it.

The harness starts the suite's origin server (``npm run server``, Node) on a
free loopback port, then the system under test in front of it: the
``--proxy-command`` template, whose ``{upstream}`` is the origin's URL
(``{upstream_host}`` and ``{upstream_port}`` its parts) and ``{port}`` the
port to listen on (``{python}`` is this interpreter), or with
``--no-cache`` a pass-through proxy that stores nothing
(:mod:`offload_bench.passthrough`), which should score what the suite scores
against its origin directly. Once both listen and a request through the proxy
reaches the origin, it runs the suite's CLI (``npm run cli --base=...``)
against the proxy and writes to ``--out``: ``results.json`` (the CLI's raw
output, the format of the suite's own ``results/`` folder), ``catalogue.json``
(each test's group, name, kind and dependencies, read from the suite),
``summary.md`` (passes per group and per kind, every failing test with the
suite's name for it; see :mod:`offload_bench.conformance_report`), and the
logs of the three processes. Every process runs in its own process group and
is killed at the end; every wait is bounded. A whole run takes about a
minute: tests run 25 at a time and most pause 3 s between two requests.

What a proxy must respect to be measured fairly by this suite
-------------------------------------------------------------

Read from the suite's code (test-engine/) and checked with the pass-through
proxy; offload's proxy mode has to get each of these right.

* **Three kinds of request go through the proxy.** For each test the client
  ``PUT``s the test's configuration, a JSON list of the responses the origin
  is to send, to ``/config/<uuid>``; the origin answers ``201``. Then come
  the test's requests to ``/test/<uuid>[/<filename>][?<query>]``, then one
  ``GET /state/<uuid>``: the origin's record, as JSON, of every request it
  saw for the test (method, header fields, and the response fields it
  sent), which the client checks (``404`` if it saw none). A proxy that
  refuses ``PUT`` or answers it itself leaves the origin without the
  configuration: it answers every request of the test ``409`` and the test
  is a setup failure (the client only logs a failed PUT). ``/state`` answers
  carry no freshness information and must not be served from a store.
* **The first request of a test is forwarded and answered 200 by the origin.**
  In 356 of the 365 tests the first request is marked ``setup``: if its
  answer is not the origin's (status 200 unless the test sets another, body
  the test's uuid unless the test sets one), the test is a setup failure
  (🔹), not a failure. Most first requests are followed by a 3 s pause
  (``pause_after``) so that the stored response ages before the next one.
* **Cached or not is told by headers the origin adds to every test response.**
  ``Server-Request-Count`` is the origin's count of requests for this test
  (1, 2, ...); ``Client-Request-Count`` echoes the client's ``Req-Num``;
  ``Request-Numbers`` lists the ``Req-Num`` of every request seen so far;
  ``Server-Now`` is the origin's clock in ms and ``Server-Base-Url`` the path
  it was asked for. A response counts as *cached* when its
  ``Server-Request-Count`` is lower than the client's request number (a 304
  without the field counts too) and as *not cached* when they are equal;
  afterwards ``/state`` must show that the origin saw exactly the requests
  expected. A repeated number in ``Request-Numbers`` makes the test a
  "retry" (↻): a proxy must never send one client request to the origin
  twice (no automatic retry; no background refresh racing a foreground one).
  A stored response must be returned with the header fields the origin
  sent, unchanged (multiple values joined with ``", "``); expected dates are
  computed from the ``Server-Now`` of the response received, expected
  ``Location`` values from its ``Server-Base-Url``.
* **The origin chooses its answer by the client's ``Req-Num`` header**, not by
  its own count. The client sends ``Test-ID``, ``Test-Name``, ``Req-Num``,
  ``Pragma: foo`` and ``Cache-Control: nothing-to-see-here`` on every test
  request (the last two are a trick for browsers; a cache must ignore the
  unknown directive and must not read ``Pragma: foo`` as ``no-cache``).
  Whatever the proxy sends upstream to fill or revalidate an entry must
  carry the ``Req-Num`` of the client request that caused it: a refresh that
  replays the headers of an older request gets the older request's answer.
* **Status codes and interim responses pass through as sent.** When a test
  expects a conditional request and the origin gets an unconditional one, it
  answers ``999 304 Not Generated``: a proxy must forward a status outside
  100-599 (and the odd reason phrase) rather than turn it into a 502. The
  origin sends ``102`` and ``103`` (with fields) before some final
  responses; four tests expect them forwarded. Methods include ``HEAD``,
  ``POST``, ``PUT``, ``DELETE`` and the unknown ``M-SEARCH``; some tests set a
  query string or an extra path segment, which is part of the cache key.
* **The connection may go away.** In eight requests (``stale-close*``,
  ``stale-sie-close``, ``stale-warning-*``) the origin records the request
  and then destroys the socket without answering. The proxy must not retry
  it, and should serve the stale response where allowed, else answer an
  error of its own (502 or 504): four required tests
  (``stale-close-must-revalidate``, ``-no-cache``, ``-proxy-revalidate``,
  ``-s-maxage=2``) pass on any response without ``Server-Request-Count``,
  and fail when the client's connection is dropped. One response comes
  after a 5 s pause (``response_pause``); the client gives up on any request
  after 10 s (an ``AbortError``, shown as ⁉️).
* **HTTP/1.1 and keep-alive.** The client is Node's ``fetch`` (undici): plain
  HTTP/1.1 on pooled keep-alive connections, 25 tests at a time (the 3xx
  tests ask it not to follow redirects). Persistent connections are not
  required: a proxy that closes every client connection after one response
  scores the same. The origin is Node's ``http`` server: it adds ``Date`` to
  every response (the client's comparison of stored header fields skips
  ``Date``, but ages and freshness are computed from it) and frames bodies
  with ``Content-Length``, with one exception: in
  ``headers-store-Transfer-Encoding`` it sends ``Transfer-Encoding:`` with a
  token that is not ``chunked`` and no length, so the body ends when the
  connection does, 5 s later on a kept-alive upstream connection (Node's
  keep-alive timeout). The pass-through proxy sends ``Connection: close``
  upstream, which makes the origin close at once.
* **What the no-cache figure is.** The published "no cache" total, 121, is
  the suite against its origin directly; the pass-through proxy passes the
  very same 121 tests. It stays 121 when the proxy closes every connection,
  adds ``Date``, ``Server`` and ``Via``, turns ``999`` into ``502`` or drops
  interim responses: those only matter once responses are stored. It rises
  to 125 when the proxy answers 502 on a dropped origin connection (above).
* **Which tests count.** The CLI runs every test but the five browser-only
  ones: 365 in the version checked (0.4.5, commit b55b8bd), including the
  ``CDN-Cache-Control`` tests. ``kind`` is the suite's notion of what is
  required: no kind or ``required`` (160 tests), ``optimal`` (a good cache
  does it; failure shows as ⚠️), ``check`` (a behaviour recorded, neither
  right nor wrong). A test with ``depends_on`` is shown as ⚪️ on
  cache-tests.fyi when a dependency did not pass, but the published totals
  count every ``true`` result, and so does the summary here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from offload_bench.conformance_report import load_results, parse_catalogue, render_summary, summarise
from offload_bench.procs import Child, HarnessError, ProcessSet, accepting, child_env, free_port, wait_for

#: What a --proxy-command may contain; the upstream's host and port serve caches configured without a URL.
PLACEHOLDERS = "{upstream} (http://HOST:PORT), {upstream_host}, {upstream_port}, {port} and {python}"
DEFAULT_PROXY_COMMAND = "offload proxy --upstream {upstream} --bind 127.0.0.1:{port}"
NO_CACHE_COMMAND = "{python} -m offload_bench.passthrough --upstream {upstream} --bind 127.0.0.1:{port}"
FETCH_HINT = (
    "set CACHE_TESTS_DIR to a checkout of the HTTP caching tests: "
    "git clone https://github.com/http-tests/cache-tests /tmp/cache-tests && "
    "(cd /tmp/cache-tests && npm install) && export CACHE_TESTS_DIR=/tmp/cache-tests"
)

#: Seconds to wait for the origin to listen, for the proxy to forward, and for the whole CLI run.
ORIGIN_TIMEOUT = 30.0
PROXY_TIMEOUT = 60.0
CLI_TIMEOUT = 900.0

#: Prints the suite's test catalogue as JSON; the suite's modules are the only description of its tests.
CATALOGUE_SCRIPT = """
import { pathToFileURL } from 'node:url'
import path from 'node:path'
const dir = process.argv[process.argv.length - 1]
const { default: suites } = await import(pathToFileURL(path.join(dir, 'tests', 'index.mjs')).href)
const groups = suites.map(suite => ({
  id: suite.id,
  name: suite.name,
  tests: suite.tests.map(test => ({
    id: test.id,
    name: test.name,
    kind: test.kind ?? null,
    depends_on: test.depends_on ?? [],
    browser_only: test.browser_only === true,
    cdn_only: test.cdn_only === true
  }))
}))
process.stdout.write(JSON.stringify({ groups }))
"""

#: Preloaded into the origin server, which listens on every interface when given a bare port.
LOOPBACK_PRELOAD = """
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const port = args[0]
  const bare = typeof port === 'number' || (typeof port === 'string' && /^[0-9]+$/.test(port))
  if (bare && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1')
  return listen.apply(this, args)
}
"""


def tool(name: str) -> str:
    """The path of a program the harness needs; a clear error if it is missing."""
    found = shutil.which(name)
    if not found:
        raise HarnessError(f"{name} is not installed (Node.js 20 or later, with npm, runs the test suite)")
    return found


def suite_directory(value: str | None) -> Path:
    """The suite's checkout, checked to be one with its dependencies installed."""
    if not value:
        raise HarnessError(FETCH_HINT)
    directory = Path(value).expanduser().resolve()
    try:
        package = json.loads((directory / "package.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise HarnessError(f"{directory} is not a checkout of the cache tests ({error}); {FETCH_HINT}") from error
    if package.get("name") != "http-cache-tests":
        raise HarnessError(f"{directory}/package.json is {package.get('name')!r}, not http-cache-tests")
    if not (directory / "node_modules").is_dir():
        raise HarnessError(f"the suite's dependencies are not installed: run npm install in {directory}")
    return directory


def suite_version(directory: Path) -> dict[str, str]:
    """The suite's package version and git commit, so that a score says which tests it counts."""
    version = json.loads((directory / "package.json").read_text("utf-8")).get("version", "")
    commit = ""
    if shutil.which("git"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            )
            commit = done.stdout.strip() if done.returncode == 0 else ""
    return {"version": version, "commit": commit}


def read_catalogue(directory: Path) -> dict[str, Any]:
    """Every test's group, name, kind and dependencies, from the suite's own modules (run with Node)."""
    done = subprocess.run(
        [tool("node"), "--input-type=module", "-e", CATALOGUE_SCRIPT, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        check=False,
    )
    if done.returncode != 0:
        raise HarnessError(f"could not read the suite's tests: {done.stderr.strip()[-2000:]}")
    catalogue: dict[str, Any] = json.loads(done.stdout)
    catalogue["suite"] = suite_version(directory)
    return catalogue


def executable(command: list[str]) -> list[str]:
    """Find the program of a command on PATH, else beside this interpreter (``make`` runs without the venv's PATH)."""
    if command and not shutil.which(command[0]):
        beside = Path(sys.executable).parent / command[0]
        if beside.is_file():
            return [str(beside), *command[1:]]
    return command


def proxy_command(template: str, upstream: str, port: int) -> list[str]:
    """The system under test's command line, from its template (see ``PLACEHOLDERS``)."""
    parts = urlsplit(upstream)
    values = {
        "upstream": upstream,
        "upstream_host": parts.hostname,
        "upstream_port": parts.port,
        "port": port,
        "python": shlex.quote(sys.executable),
    }
    try:
        text = template.format(**values)
    except (KeyError, IndexError, ValueError) as error:
        raise HarnessError(f"--proxy-command may use {PLACEHOLDERS} only: {error!r}") from error
    return executable(shlex.split(text))


def must_be_alive(child: Child) -> None:
    """Fail at once, with its last words, if a process the harness waits for has exited."""
    if not child.alive():
        tail = child.text().strip()[-3000:]
        raise HarnessError(f"{child.name} exited with code {child.process.returncode}; {child.log}:\n{tail}")


def start_origin(processes: ProcessSet, directory: Path, log_directory: Path) -> str:
    """Start the suite's origin server on a free loopback port; return its URL once it listens."""
    port = free_port()
    preload = log_directory / "loopback.cjs"
    preload.write_text(LOOPBACK_PRELOAD, "utf-8")
    options = " ".join(filter(None, [os.environ.get("NODE_OPTIONS"), f'--require "{preload}"']))
    command = [tool("npm"), "run", "--silent", "server", f"--port={port}", f"--pidfile={log_directory / 'origin.pid'}"]
    origin = processes.start("origin", command, env={"NODE_OPTIONS": options}, cwd=directory)

    def ready() -> bool:
        must_be_alive(origin)
        return accepting(port)

    wait_for(ready, ORIGIN_TIMEOUT, f"the suite's origin server to listen on 127.0.0.1:{port}")
    return f"http://127.0.0.1:{port}"


def reaches_origin(port: int) -> str | None:
    """Ask the proxy for a state the origin does not have: the origin's 404 proves the request reached it."""
    url = f"http://127.0.0.1:{port}/state/conformance-probe-{uuid.uuid4()}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read(1000)
    except urllib.error.HTTPError as error:
        body = error.read(1000)
    except (OSError, ValueError):
        return None
    return body.decode("utf-8", "replace") if b"State not found" in body else None


def start_proxy(processes: ProcessSet, template: str, upstream: str) -> str:
    """Start the system under test in front of the origin; return its URL once it forwards to the origin."""
    port = free_port()
    command = proxy_command(template, upstream, port)
    print(f"proxy: {shlex.join(command)}", flush=True)
    proxy = processes.start("proxy", command)

    def ready() -> bool:
        must_be_alive(proxy)
        return accepting(port) and reaches_origin(port) is not None

    wait_for(ready, PROXY_TIMEOUT, f"the proxy on 127.0.0.1:{port} to forward requests to the origin {upstream}")
    return f"http://127.0.0.1:{port}"


def run_cli(processes: ProcessSet, directory: Path, base: str, output: Path, test_id: str, timeout: float) -> None:
    """Run the suite's CLI against ``base``, its standard output into ``output``; bounded by ``timeout``."""
    command = [tool("npm"), "run", "--silent", "cli", f"--base={base}"]
    if test_id:
        command.append(f"--id={test_id}")
    log = processes.directory / "cli.log"
    errors = log.open("ab")
    with output.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=processes.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=errors,
            start_new_session=True,
        )
    cli = Child("cli", process, log, errors)
    processes.children.append(cli)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired as error:
        cli.stop(5)
        raise HarnessError(f"the suite's CLI did not finish in {timeout:g}s; see {log}") from error
    cli.stop(1)
    if process.returncode != 0:
        raise HarnessError(f"the suite's CLI exited with code {process.returncode}; see {log}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--suite-dir",
        default=os.environ.get("CACHE_TESTS_DIR", ""),
        help="checkout of github.com/http-tests/cache-tests, npm installed (default: $CACHE_TESTS_DIR)",
    )
    parser.add_argument(
        "--proxy-command",
        default=DEFAULT_PROXY_COMMAND,
        help=f"the system under test, with {PLACEHOLDERS} (default: %(default)s)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="test a pass-through proxy that stores nothing (the baseline)"
    )
    parser.add_argument("--label", help="the name of the system under test (default: offload, or no-cache)")
    parser.add_argument("--out", type=Path, help="where to write the results (default: conformance-results/LABEL)")
    parser.add_argument("--id", default="", help="run this one test and print what the client and origin saw")
    parser.add_argument("--timeout", type=float, default=CLI_TIMEOUT, help="limit of the CLI run, in seconds")
    parser.add_argument("--expect-passed", type=int, help="exit 1 if fewer tests pass")
    args = parser.parse_args(argv)
    if args.no_cache:
        if args.proxy_command != DEFAULT_PROXY_COMMAND:
            parser.error("--no-cache and --proxy-command exclude each other")
        args.proxy_command = NO_CACHE_COMMAND
    args.label = args.label or ("no-cache" if args.no_cache else "offload")
    args.out = args.out or Path("conformance-results") / args.label
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that every process is stopped on the way out


def measure(args: argparse.Namespace, directory: Path) -> Path:
    """Start the origin and the proxy, run the CLI; the path of what it printed."""
    args.out.mkdir(parents=True, exist_ok=True)
    output: Path = args.out / (f"{args.id}.txt" if args.id else "results.json")
    processes = ProcessSet(args.out, child_env({}))
    try:
        upstream = start_origin(processes, directory, args.out)
        print(f"origin: {upstream} ({directory})", flush=True)
        base = start_proxy(processes, args.proxy_command, upstream)
        print(f"running the suite against {base} ...", flush=True)
        run_cli(processes, directory, base, output, args.id, args.timeout)
    finally:
        processes.stop_all(grace=5)
    return output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        directory = suite_directory(args.suite_dir)
        tool("node")
        catalogue_data = read_catalogue(directory)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "catalogue.json").write_text(json.dumps(catalogue_data, indent=1), "utf-8")
        output = measure(args, directory)
    except HarnessError as error:
        print(f"conformance: {error}", file=sys.stderr)
        return 2
    if args.id:
        print(output.read_text("utf-8", "replace"), end="")
        print(f"what the origin saw is in {args.out / 'origin.log'}")
        return 0
    catalogue = parse_catalogue(catalogue_data)
    try:
        results = load_results(output)
    except ValueError as error:
        print(f"conformance: {error}; see {args.out / 'cli.log'}", file=sys.stderr)
        return 2
    summary = summarise(catalogue, results)
    command = NO_CACHE_COMMAND if args.no_cache else args.proxy_command
    command = command.replace("{python}", "python")
    (args.out / "summary.md").write_text(render_summary(catalogue, summary, args.label, command), "utf-8")
    print()
    print(render_summary(catalogue, summary, args.label, command, failures=False), end="")
    print(f"\n{len(summary.failures)} tests not passed are listed in {args.out / 'summary.md'}")
    print(f"passed {summary.total} in {time.monotonic() - started:.0f}s; results in {output}")
    if args.expect_passed is not None and summary.total.passed < args.expect_passed:
        print(f"FAIL: {summary.total.passed} passed, fewer than the {args.expect_passed} expected")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
