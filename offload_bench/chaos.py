"""The chaos harness: real web processes, workers and backend servers, harmed on purpose.

Usage::

    python -m offload_bench.chaos [--mode short|long] [--backend sqlite,redis,postgres,redis-cluster]

For each backend it runs the scenarios (worker kills, web process kills,
backend restart or, on a Redis Cluster, a failover, storm, SIGTERM during long
jobs, backpressure, and in long mode a soak), prints one
table row per scenario and exits 1 if any invariant was violated: a URL that
never got its answer, a duplicate execution no killed worker or outage
explains, a 5xx other than 503, a 503 without ``Retry-After``, a hang, a
traceback, a queue past its cap. Everything runs on 127.0.0.1; backend
servers are throwaway ones started here. See ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from offload_bench.scenarios import LONG, SCENARIOS, SHORT, Row, run_scenario
from offload_bench.servers import ALL_BACKENDS, BACKENDS, BackendServer, missing, server_for

HEADER = (
    "scenario",
    "backend",
    "requests",
    "jobs",
    "lost",
    "duplicates",
    "503s",
    "worst latency",
    "web RSS MiB before/after",
    "worker RSS MiB before/after",
    "result",
    "notes",
)


def cells(row: Row) -> tuple[str, ...]:
    def mib(pair: tuple[int, int]) -> str:
        return f"{pair[0] / 1024:.0f} / {pair[1] / 1024:.0f}"

    return (
        row.scenario,
        row.backend,
        str(row.requests),
        str(row.jobs),
        str(row.lost),
        str(row.duplicates),
        str(row.unavailable),
        f"{row.worst_latency:.2f}s",
        mib(row.web_rss),
        mib(row.worker_rss),
        "ok" if not row.violations else "FAIL",
        row.note,
    )


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, readable in a terminal too."""
    lines = [HEADER, *(cells(row) for row in rows)]
    widths = [max(len(line[n]) for line in lines) for n in range(len(HEADER))]
    out = []
    for index, line in enumerate(lines):
        out.append("| " + " | ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("short", "long"), default="short", help="short for CI, long for releases")
    parser.add_argument(
        "--backend",
        default=",".join(BACKENDS),
        help=f"comma-separated, from {', '.join(ALL_BACKENDS)} (default: {', '.join(BACKENDS)})",
    )
    parser.add_argument("--scenario", default="", help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--soak-minutes", type=float, default=None, help="run the soak for this long (default: 10 in long mode)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory afterwards")
    args = parser.parse_args(argv)
    args.backends = [name.strip() for name in args.backend.split(",") if name.strip()]
    unknown = set(args.backends) - set(ALL_BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    args.scenarios = [name.strip() for name in args.scenario.split(",") if name.strip()] or list(SCENARIOS)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that every process and server is stopped on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    sizes = SHORT if args.mode == "short" else LONG
    if args.soak_minutes is not None:
        sizes = dataclasses.replace(sizes, soak=args.soak_minutes * 60)
    scenarios = [name for name in args.scenarios if name != "soak" or sizes.soak]
    require = os.environ.get("OFFLOAD_REQUIRE_SERVERS") == "1"
    directory = Path(tempfile.mkdtemp(prefix="offload-chaos-"))
    started = time.monotonic()
    print(f"offload chaos, {args.mode} mode, on {platform.node()}; logs in {directory}", flush=True)
    rows: list[Row] = []
    skipped: list[str] = []
    try:
        for name in args.backends:
            reason = missing(name)
            if reason:
                skipped.append(f"{name}: {reason}")
                print(f"skipping {name}: {reason}", flush=True)
                continue
            server: BackendServer = server_for(name, directory)
            try:
                server.launch()
                for scenario in scenarios:
                    if scenario in server.unsupported:
                        continue
                    began = time.monotonic()
                    row = run_scenario(scenario, server, sizes, directory)
                    rows.append(row)
                    verdict = "ok" if not row.violations else "FAIL: " + "; ".join(row.violations)
                    print(f"  {name:8} {scenario:16} {time.monotonic() - began:5.1f}s  {verdict}", flush=True)
            finally:
                server.close()
    finally:
        if not args.keep and not any(row.violations for row in rows):
            shutil.rmtree(directory, ignore_errors=True)
    print()
    print(table(rows))
    print()
    failed = [row for row in rows if row.violations]
    for row in failed:
        for violation in row.violations:
            print(f"FAIL {row.scenario} on {row.backend}: {violation}")
    elapsed = time.monotonic() - started
    print(f"{len(rows)} scenario runs in {elapsed:.0f}s, {len(failed)} failed", end="")
    print(f"; skipped {'; '.join(skipped)}" if skipped else "")
    if failed:
        print(f"logs kept in {directory}")
    if failed or (skipped and require):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
