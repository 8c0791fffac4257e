"""Scale-out curve: ``python -m offload_bench.scaling [--workers 1,2,4,8] [--web 1,2] [--backends redis,postgres]``.

For each backend, each number of web processes (``offload serve --workers 0
--web-processes W``, gunicorn) and each number of ``offload worker``
processes (one thread each), on loopback with a throwaway Redis or
PostgreSQL server (:mod:`offload_bench.servers`):

- **jobs/s**: wrk sends misses for ``jobs`` new URLs through the web
  processes, each URL twice (two connections, nearly at once), as fast as
  they are answered; the jobs wait ``--job-ms`` (an upstream call, not CPU).
  The rate is counted from the first job's start to the last's, from the
  app's execution log.
- **pickup latency**: then, with the workers idle, one new URL 10-30 ms after the last job ended
  from a plain HTTP client; the time from sending the request to the job's
  start (the web request, the enqueue, the notification, the claim, the
  replay up to the handler).
- **duplicates**: executions past the first of each URL, over both phases:
  the promise is 0.

Workers are added as the points go up (1, then 2, 4, 8) under the same web
processes, so a point costs the new workers' start, not a whole stack's.
The figures are written as JSON and drawn as a PNG (matplotlib);
``--merge A.json B.json ...`` takes the median of several runs, point by point.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from offload_bench.procs import ROOT, wait_for
from offload_bench.servers import PostgresServer, RedisServer
from offload_bench.stack import Execution, Stack

#: wrk walks through the URLs of one point, each twice, and leaves a file once every one is answered
#: (wrk runs for its whole duration whatever a script does; SIGINT makes it stop and report).
SCRIPT = """
local sent = 0
local answered = 0
local total = {total}
request = function()
  sent = sent + 1
  local n = math.floor((math.min(sent, total) - 1) / 2)
  return wrk.format("GET", "{prefix}" .. n .. "?ms={ms}")
end
response = function(status, headers, body)
  answered = answered + 1
  if answered == total then
    local marker = io.open("{marker}", "w")
    marker:close()
  end
end
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def flood(port: int, prefix: str, jobs: int, job_ms: int, directory: Path) -> dict[str, float]:
    """wrk sends ``2 * jobs`` misses (each URL twice) to the web processes; its requests/s and non-2xx count."""
    name = f"flood-{time.monotonic_ns()}"
    script, marker = directory / f"{name}.lua", directory / f"{name}.done"
    script.write_text(SCRIPT.format(total=2 * jobs, prefix=prefix, ms=job_ms, marker=marker))
    command = ["wrk", "-t1", "-c16", "-d120s", "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/"]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: marker.exists() or wrk.poll() is not None, 130, "wrk to send every miss")
    finally:
        wrk.send_signal(signal.SIGINT)
        output, _ = wrk.communicate(timeout=30)
    rps = _number(output, "Requests/sec:")
    bad = _number(output, "Non-2xx or 3xx responses:")
    if rps is None:
        raise RuntimeError(f"wrk said:\n{output}")
    return {"requests_per_s": rps, "non_2xx": bad or 0.0}


def _number(output: str, label: str) -> float | None:
    for line in output.splitlines():
        if line.strip().startswith(label):
            return float(line.split(":")[1].split()[0])
    return None


def runs_of(stack: Stack, prefix: str) -> list[Execution]:
    return [run for run in stack.executions() if run.target.startswith(prefix)]


def drained(stack: Stack, prefix: str, count: int, timeout: float) -> list[Execution]:
    """Wait until ``count`` URLs under ``prefix`` have run, and a moment more (a late duplicate would show)."""
    wait_for(lambda: len({run.target for run in runs_of(stack, prefix)}) >= count, timeout, f"{count} jobs of {prefix}")
    time.sleep(0.5)
    return runs_of(stack, prefix)


def pickups(stack: Stack, port: int, prefix: str, count: int, job_ms: int) -> list[float]:
    """Enqueue ``count`` new URLs one at a time while the workers wait; ms from each request to its job's start."""
    sent: dict[str, float] = {}
    for n in range(count):
        time.sleep((job_ms + random.uniform(10, 30)) / 1000)  # the previous job is over: every worker waits
        target = f"{prefix}{n}?ms={job_ms}"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.connect()
            sent[target] = time.time()
            connection.request("GET", target)
            status = connection.getresponse().status
        finally:
            connection.close()
        if status != 202:
            raise RuntimeError(f"{target} answered {status}, not 202")
    runs = drained(stack, prefix, count, 60)
    first: dict[str, float] = {}
    for run in runs:
        first[run.target] = min(first.get(run.target, run.started), run.started)
    return [(first[target] - at) * 1000 for target, at in sent.items()]


def duplicates(runs: list[Execution]) -> int:
    return sum(count - 1 for count in Counter(run.target for run in runs).values() if count > 1)


def curve(
    stack: Stack, backend: str, web: int, workers: list[int], job_ms: int, jobs_per_worker: int, picks: int
) -> list[dict[str, Any]]:
    """The points of one backend and one number of web processes, workers added as they go up."""
    base = stack.serve(servers=1, web_processes=web)[0]
    port = int(base.rpartition(":")[2])
    points = []
    for count in workers:
        while len(stack.workers) < count:
            stack.worker(concurrency=1)
        warm = f"/warm/{backend}-w{web}-n{count}/"
        for n in range(count * 4):  # every worker has imported the app and reached its queue
            _get(port, f"{warm}{n}?ms=0")
        drained(stack, warm, count * 4, 120)
        time.sleep(0.5)
        jobs = jobs_per_worker * count
        prefix = f"/flood/{backend}-w{web}-n{count}/"
        offered = flood(port, prefix, jobs, job_ms, stack.directory)
        runs = drained(stack, prefix, jobs, 180)
        starts = sorted(run.started for run in runs)
        rate = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
        prefix_pick = f"/pickup/{backend}-w{web}-n{count}/"
        delays = pickups(stack, port, prefix_pick, picks, job_ms)
        dupes = duplicates(runs) + duplicates(runs_of(stack, prefix_pick))
        point = {
            "backend": backend,
            "web_processes": web,
            "workers": count,
            "jobs": jobs,
            "jobs_per_s": rate,
            "ideal_jobs_per_s": count * 1000 / job_ms,
            "misses_per_s": offered["requests_per_s"],
            "non_2xx": offered["non_2xx"],
            "pickup_p50_ms": statistics.median(delays),
            "pickup_p99_ms": percentile(delays, 99),
            "pickups": len(delays),
            "duplicates": dupes,
        }
        say(
            f"{backend} web={web} workers={count}: {rate:.0f} jobs/s (ideal {point['ideal_jobs_per_s']:.0f}), "
            f"misses {offered['requests_per_s']:.0f}/s, pickup p50 {point['pickup_p50_ms']:.1f} ms "
            f"p99 {point['pickup_p99_ms']:.1f} ms, duplicates {dupes}"
        )
        points.append(point)
    return points


def _get(port: int, target: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", target)
        return connection.getresponse().status
    finally:
        connection.close()


def table(points: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | web | workers | jobs/s | ideal | misses/s | pickup p50 ms | pickup p99 ms | duplicates |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        lines.append(
            f"| {p['backend']} | {p['web_processes']} | {p['workers']} | {p['jobs_per_s']:.0f} "
            f"| {p['ideal_jobs_per_s']:.0f} | {p['misses_per_s']:.0f} | {p['pickup_p50_ms']:.1f} "
            f"| {p['pickup_p99_ms']:.1f} | {p['duplicates']} |"
        )
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path, job_ms: int) -> None:
    """Jobs/s and pickup latency against worker processes, one line per backend and number of web processes."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axes, pickup_axes) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    colours = {"redis": "#d62728", "postgres": "#1f77b4"}
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for point in points:
        series.setdefault((point["backend"], point["web_processes"]), []).append(point)
    workers = sorted({point["workers"] for point in points})
    rate_axes.plot(workers, [n * 1000 / job_ms for n in workers], "k:", label=f"ideal ({job_ms} ms jobs)")
    for (backend, web), line in sorted(series.items()):
        style = "-o" if web == 1 else "--s"
        label = f"{backend}, {web} web process{'es' if web > 1 else ''}"
        xs = [point["workers"] for point in line]
        rate_axes.plot(xs, [point["jobs_per_s"] for point in line], style, color=colours.get(backend), label=label)
        pickup_axes.plot(xs, [point["pickup_p50_ms"] for point in line], style, color=colours.get(backend), label=label)
        pickup_axes.plot(xs, [point["pickup_p99_ms"] for point in line], style, color=colours.get(backend), alpha=0.35)
    for axes in (rate_axes, pickup_axes):
        axes.set_xscale("log", base=2)
        axes.set_xticks(workers, [str(n) for n in workers])
        axes.set_xlabel("offload worker processes (one thread each)")
        axes.grid(alpha=0.3)
    rate_axes.set_ylabel("jobs/s")
    rate_axes.set_title("throughput, misses through the web processes")
    pickup_axes.set_yscale("log")
    pickup_axes.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    pickup_axes.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    pickup_axes.set_yticks([2, 5, 10, 20, 50, 100])
    pickup_axes.set_ylabel("ms, request sent to job start (log scale)")
    pickup_axes.set_title("pickup latency: p50 (solid), p99 (faint)")
    rate_axes.legend(fontsize=8)
    figure.suptitle("offload scale-out on a 2-core VM (loopback, everything on the same two cores)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def merge(files: list[Path]) -> tuple[int, list[dict[str, Any]]]:
    """The points of several runs: the median of each figure, the duplicates added up (the promise holds in each).

    On a shared machine one run can meet another process's burst; the
    median of a few runs of the same point is the figure to read.
    """
    runs = [json.loads(path.read_text()) for path in files]
    job_ms = {run["job_ms"] for run in runs}
    if len(job_ms) != 1:
        raise SystemExit(f"the runs used different --job-ms: {sorted(job_ms)}")
    grouped: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for run in runs:
        for point in run["points"]:
            grouped.setdefault((point["backend"], point["web_processes"], point["workers"]), []).append(point)
    merged = []
    for (backend, web, workers), points in grouped.items():
        figure: dict[str, Any] = {"backend": backend, "web_processes": web, "workers": workers, "runs": len(points)}
        for name in ("jobs_per_s", "ideal_jobs_per_s", "misses_per_s", "pickup_p50_ms", "pickup_p99_ms"):
            figure[name] = statistics.median(point[name] for point in points)
            figure[f"{name}_all"] = [point[name] for point in points]
        figure["duplicates"] = sum(point["duplicates"] for point in points)
        figure["jobs"] = sum(point["jobs"] for point in points) + sum(point["pickups"] for point in points)
        merged.append(figure)
    return job_ms.pop(), merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8", help="worker process counts, in increasing order")
    parser.add_argument("--web", default="1,2", help="web process counts")
    parser.add_argument("--backends", default="redis,postgres")
    parser.add_argument("--job-ms", type=int, default=20, help="how long each job waits")
    parser.add_argument("--jobs-per-worker", type=int, default=150, help="flood size per worker process")
    parser.add_argument("--pickups", type=int, default=100, help="paced jobs per point")
    parser.add_argument("--json", type=Path, default=Path("scaling-results.json"))
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "images" / "scaling.png")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON", help="run nothing: merge these runs' figures")
    args = parser.parse_args(argv)
    if args.merge:
        job_ms, merged = merge(args.merge)
        args.json.write_text(json.dumps({"job_ms": job_ms, "runs": len(args.merge), "points": merged}, indent=1))
        print(table(merged))
        plot(merged, args.plot, job_ms)
        return 0
    workers = [int(n) for n in args.workers.split(",")]
    started = time.monotonic()
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="offload-scaling-") as tmp:
        directory = Path(tmp)
        for backend in args.backends.split(","):
            server = RedisServer(directory / "redis") if backend == "redis" else PostgresServer(directory / "postgres")
            server.launch()
            try:
                for web in (int(n) for n in args.web.split(",")):
                    folder = directory / f"{backend}-{web}"
                    folder.mkdir()
                    with Stack(folder, server.url_for(f"scaling-{web}"), lease=30, max_queued=100_000) as stack:
                        points += curve(stack, backend, web, workers, args.job_ms, args.jobs_per_worker, args.pickups)
                        problems = stack.log_problems()
                        if problems:
                            say(f"  {backend} web={web}: " + "; ".join(problems))
            finally:
                server.close()
            args.json.write_text(json.dumps({"job_ms": args.job_ms, "points": points}, indent=1))
    print(table(points))
    plot(points, args.plot, args.job_ms)
    say(f"figures saved to {args.json}, plot to {args.plot}; {time.monotonic() - started:.0f}s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
