"""offload's benchmark suite: ``python -m offload_bench.bench [--quick]`` (``make bench``).

Real servers and processes on loopback: wrk against gunicorn, uvicorn and
granian; throwaway Redis and PostgreSQL servers; ``offload worker``, ``rq
worker`` and a Celery worker as separate processes. Each figure is the
median of several rounds, and each ratio compares figures of the same round.
The results are printed as tables, saved as JSON and plotted (see
docs/PERFORMANCE.md for what each scenario measures and how the machine is
shared between the load generator and the server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload_bench.load import SERVERS, Server, WrkResult, cores, get, log_lines, wrk
from offload_bench.procs import ROOT, ProcessSet, child_env, rss_kib, wait_for
from offload_bench.servers import PostgresServer, RedisServer, SQLiteFiles

APP = "offload_bench.bench_apps"


@dataclass
class Mode:
    rounds: int
    seconds: float
    connections: int = 32
    pickups: int = 50
    backlog: int = 2000
    fork_backlog: int = 300
    storm_seconds: float = 3.0
    isolation_seconds: float = 5.0
    web_keys: int = 20_000
    worker_jobs: tuple[int, int] = (1_000, 10_000)


QUICK = Mode(rounds=3, seconds=2)
FULL = Mode(
    rounds=5,
    seconds=5,
    pickups=200,
    backlog=10_000,
    fork_backlog=1_000,
    storm_seconds=5,
    isolation_seconds=10,
    web_keys=100_000,
    worker_jobs=(1_000, 100_000),
)


@dataclass
class Bench:
    """The servers and processes of one benchmark run, and its results."""

    mode: Mode
    directory: Path
    processes: ProcessSet
    redis: RedisServer
    postgres: PostgresServer | None
    sqlite: SQLiteFiles
    results: dict[str, Any] = field(default_factory=dict)
    _names: int = 0

    def url(self, backend: str, name: str) -> str:
        self._names += 1
        name = f"{name}-{self._names}"
        if backend == "memory":
            return f"memory://{name}"
        if backend == "sqlite":
            return self.sqlite.url_for(name)
        if backend == "redis":
            return self.redis.url_for(name)
        if self.postgres is None:
            raise RuntimeError("PostgreSQL is not available")
        return self.postgres.url_for(name)

    def env(self, url: str | None = None, log: Path | None = None, redis: str | None = None) -> dict[str, str]:
        env: dict[str, str] = {}
        if url:
            env["OFFLOAD_URL"] = url
        if log:
            env["BENCH_LOG"] = str(log)
        if redis:
            env["BENCH_REDIS"] = redis
        return env

    def log_file(self, name: str) -> Path:
        self._names += 1
        return self.directory / f"{name}-{self._names}.log"

    def worker(self, attr: str, url: str, *, log: Path | None = None, burst: bool = False, concurrency: int = 1) -> Any:
        command = [sys.executable, "-m", "offload", "worker", f"{APP}:{attr}", "--url", url]
        command += ["--log-level", "warning", "--concurrency", str(concurrency)]
        if burst:
            command.append("--burst")
        self._names += 1
        return self.processes.start(f"worker-{self._names}", command, env=self.env(url, log))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- 1 and 2: the hit path, against the bare app and the peers ------------------


def warm(bench: Bench, server: Server, url: str, backend: str, target: str = "/hit") -> None:
    """Make ``target`` a hit: one miss, the job run (inline for memory://, else a burst worker), then a 200."""
    status, _ = get(server.port, target)
    if status == 200:
        return
    if backend != "memory":
        worker = bench.worker(f"{server.interface}_offload", url, burst=True)
        finished(worker, "the warm-up worker")
    wait_for(lambda: get(server.port, target)[0] == 200, 30, f"{target} to be cached on {server.child.name}")


def finished(child: Any, what: str, timeout: float = 60) -> None:
    wait_for(lambda: child.process.poll() is not None, timeout, f"{what} to finish")


def hit_path(bench: Bench) -> None:
    mode = bench.mode
    rows: dict[str, dict[str, list[WrkResult]]] = {}
    for interface, servers in SERVERS.items():
        peer = "flask_cached" if interface == "wsgi" else "fastapi_cached"
        for server_name in servers:
            say(f"hit path: {server_name} {interface}")
            started: dict[str, Server] = {}
            try:
                started["bare"] = Server(bench.processes, server_name, interface, f"{interface}_bare")
                for backend in ("memory", "sqlite", "redis"):
                    url = bench.url(backend, f"hit-{server_name}-{interface}")
                    server = Server(bench.processes, server_name, interface, f"{interface}_offload", bench.env(url))
                    warm(bench, server, url, backend)
                    started[backend] = server
                peer_redis = bench.redis.url_for(f"peer-{server_name}")
                started[peer] = Server(bench.processes, server_name, interface, peer, bench.env(redis=peer_redis))
                get(started[peer].port, "/hit")  # the peer caches on the first request
                for round_ in range(mode.rounds):
                    order = list(started)
                    random.Random(round_).shuffle(order)  # no app always runs first or last in a round
                    for name in order:
                        result = wrk(started[name].url("/hit"), connections=mode.connections, seconds=mode.seconds)
                        if result.non_2xx or result.errors:
                            say(f"  {name}: {result.non_2xx} non-2xx answers, {result.errors} socket errors")
                        rows.setdefault(f"{server_name}/{interface}", {}).setdefault(name, []).append(result)
                    say(
                        f"  round {round_ + 1}: "
                        + ", ".join(f"{n} {rows[f'{server_name}/{interface}'][n][-1].rps:.0f}" for n in started)
                    )
            finally:
                for server in started.values():
                    server.stop()
    bench.results["hit_path"] = {
        setup: {name: [vars(r) for r in runs] for name, runs in apps.items()} for setup, apps in rows.items()
    }


# -- 3: miss storm -----------------------------------------------------------------


def miss_storm(bench: Bench) -> None:
    mode = bench.mode
    storms = {}
    for interface, server_name in (("wsgi", "gunicorn"), ("asgi", "uvicorn")):
        say(f"miss storm: {server_name}")
        url = bench.url("redis", f"storm-{interface}")
        log = bench.log_file("storm")
        server = Server(bench.processes, server_name, interface, f"{interface}_offload", bench.env(url, log))
        try:
            cold = wrk(server.url("/storm"), connections=1000, seconds=mode.storm_seconds)
            executions_before = len(log_lines(log))
            worker = bench.worker(f"{interface}_offload", url, log=log, burst=True)
            finished(worker, "the storm's worker")
            port = server.port
            wait_for(lambda p=port: get(p, "/storm")[0] == 200, 30, "the storm's answer")
            hot = wrk(server.url("/storm"), connections=1000, seconds=mode.storm_seconds)
            storms[f"{server_name}/{interface}"] = {
                "miss": vars(cold),
                "hit": vars(hot),
                "executions": len(log_lines(log)),
                "executions_during_storm": executions_before,
                "execution_log": log_lines(log),
            }
        finally:
            server.stop()
    bench.results["miss_storm"] = storms


# -- 4: pickup latency ----------------------------------------------------------------


def direct_get(middleware: Any, path: str) -> int:
    """Call a WSGI middleware in this process, as a server would: the status code."""
    statuses: list[int] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(int(status[:3]))

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
    }
    body = middleware(environ, start_response)
    for _ in body:
        pass
    return statuses[0]


def follow(log: Path) -> Callable[[], list[tuple[str, float]]]:
    """A reader of the lines appended to ``log`` since the last call."""
    offset = 0
    pending = b""

    def read() -> list[tuple[str, float]]:
        nonlocal offset, pending
        try:
            with open(log, "rb") as file:
                file.seek(offset)
                data = file.read()
        except FileNotFoundError:
            return []
        offset += len(data)
        data = pending + data
        complete, _, pending = data.rpartition(b"\n")
        lines = []
        for line in complete.decode().splitlines():
            target, _, started = line.rpartition(" ")
            lines.append((target, float(started)))
        return lines

    return read


def pickup(bench: Bench) -> None:
    from offload import WSGIMiddleware
    from offload_bench.bench_apps import wsgi_handler

    figures = {}
    for backend in ("sqlite", "redis", "postgres"):
        if backend == "postgres" and bench.postgres is None:
            continue
        say(f"pickup: {backend}")
        url = bench.url(backend, "pickup")
        log = bench.log_file("pickup")
        middleware = WSGIMiddleware(wsgi_handler, url=url, worker_threads=0)
        worker = bench.worker("wsgi_offload", url, log=log)
        read = follow(log)
        try:
            direct_get(middleware, "/pickup/warm")
            wait_for(lambda reader=read: any(t == "/pickup/warm" for t, _ in reader()), 60, "the worker to start")
            delays = []
            for n in range(bench.mode.pickups):
                time.sleep(random.uniform(0.02, 0.06))  # the worker is waiting, as it would be between jobs
                target = f"/pickup/{n}"
                enqueued = time.time()
                if direct_get(middleware, target) != 202:
                    raise RuntimeError(f"{target} was not a miss")
                deadline = time.monotonic() + 10
                started = None
                while started is None and time.monotonic() < deadline:
                    started = next((s for t, s in read() if t == target), None)
                    if started is None:
                        time.sleep(0.0005)
                if started is None:
                    raise RuntimeError(f"{backend}: {target} was not picked up in 10 s")
                delays.append((started - enqueued) * 1000)
        finally:
            worker.stop(10)
            close(middleware)
        figures[backend] = {"median_ms": statistics.median(delays), "p99_ms": percentile(delays, 99), "n": len(delays)}
    bench.results["pickup"] = figures


def close(middleware: Any) -> None:
    middleware.offloader.cache.close()
    middleware.offloader.queue.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- 5: worker throughput --------------------------------------------------------------


def enqueue_offload(url: str, count: int, prefix: str, query: str = "", namespace: str | None = None) -> None:
    """Queue ``count`` jobs through the middleware, in this process (``namespace``: that of another app)."""
    from offload import WSGIMiddleware
    from offload_bench.bench_apps import wsgi_handler

    middleware = WSGIMiddleware(wsgi_handler, url=url, worker_threads=0, max_queued=None, namespace=namespace)
    try:
        for n in range(count):
            environ_path = f"{prefix}{n}"
            status = direct_get_query(middleware, environ_path, query)
            if status != 202:
                raise RuntimeError(f"{environ_path} answered {status}, not 202")
    finally:
        close(middleware)


def direct_get_query(middleware: Any, path: str, query: str) -> int:
    statuses: list[int] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(int(status[:3]))

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1"}
    environ.update({"SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http"})
    for _ in middleware(environ, start_response):
        pass
    return statuses[0]


def rate(log: Path, expected: int, child: Any, timeout: float) -> dict[str, float]:
    """Wait until ``expected`` executions are logged (or ``timeout``); jobs/s between the first and the last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(log_lines(log)) < expected and child.alive():
        time.sleep(0.05)
    times = sorted(started for _, started in log_lines(log))
    if len(times) < 2:
        return {"jobs": len(times), "jobs_per_s": 0.0}
    return {"jobs": len(times), "jobs_per_s": (len(times) - 1) / (times[-1] - times[0])}


def throughput(bench: Bench) -> None:
    mode = bench.mode
    figures: dict[str, Any] = {}
    timeout = 60 if mode is QUICK else 180
    for round_ in range(max(1, mode.rounds - 2)):
        say(f"worker throughput: round {round_ + 1}")
        # offload worker
        url = bench.url("redis", "throughput")
        enqueue_offload(url, mode.backlog, "/t/")
        log = bench.log_file("offload-worker")
        child = bench.worker("wsgi_offload", url, log=log)
        figures.setdefault("offload worker", []).append(rate(log, mode.backlog, child, timeout))
        child.stop(10)
        # rq: the default forking worker, and SimpleWorker
        for label, worker_class, backlog in (
            ("rq worker (forking)", None, mode.fork_backlog),
            ("rq SimpleWorker", "rq.worker.SimpleWorker", mode.backlog),
        ):
            redis_url = bench.redis.url_for("rq")
            enqueue_rq(redis_url, backlog)
            log = bench.log_file("rq")
            command = [str(Path(sys.executable).with_name("rq")), "worker", "--url", redis_url, "--burst", "--quiet"]
            command.append("bench")
            if worker_class:
                command += ["--worker-class", worker_class]
            child = bench.processes.start(f"rq-{round_}-{label[:6]}", command, env=bench.env(log=log))
            figures.setdefault(label, []).append(rate(log, backlog, child, timeout))
            child.stop(10)
        # Celery, prefork pool, one child process
        redis_url = bench.redis.url_for("celery")
        enqueue_celery(redis_url, mode.backlog)
        log = bench.log_file("celery")
        command = [sys.executable, "-m", "celery", "-A", f"{APP}:celery_app", "worker", "--pool", "prefork"]
        command += ["--concurrency", "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
        command += ["--without-heartbeat"]
        child = bench.processes.start(
            f"celery-{round_}", command, env=bench.env(log=log, redis=redis_url) | {"PYTHONPATH": str(ROOT)}
        )
        figures.setdefault("Celery prefork (1 process)", []).append(rate(log, mode.backlog, child, timeout))
        child.stop(15)
        say("  " + ", ".join(f"{name} {runs[-1]['jobs_per_s']:.0f}/s" for name, runs in figures.items()))
    bench.results["throughput"] = figures
    end_to_end(bench)


def enqueue_rq(redis_url: str, count: int) -> None:
    import redis
    from rq import Queue

    connection = redis.Redis.from_url(redis_url)
    queue = Queue("bench", connection=connection)
    for start in range(0, count, 500):
        data = [Queue.prepare_data(f"{APP}.job", (f"/rq/{n}",)) for n in range(start, min(count, start + 500))]
        queue.enqueue_many(data)
    connection.close()


def enqueue_celery(redis_url: str, count: int) -> None:
    from celery import Celery

    app = Celery("bench", broker=redis_url)
    with app.producer_or_acquire() as producer:
        for n in range(count):
            app.send_task("bench.job", args=(f"/celery/{n}",), producer=producer, ignore_result=True)


def end_to_end(bench: Bench) -> None:
    """Miss, job, stored answer, hit: one URL at a time through gunicorn and one worker on Redis."""
    say("end to end")
    url = bench.url("redis", "e2e")
    server = Server(bench.processes, "gunicorn", "wsgi", "wsgi_offload", bench.env(url))
    worker = bench.worker("wsgi_offload", url)
    latencies = []
    try:
        get(server.port, "/e2e/warm")
        wait_for(lambda: get(server.port, "/e2e/warm")[0] == 200, 60, "the worker to start")
        for n in range(bench.mode.pickups):
            target = f"/e2e/{n}"
            started = time.perf_counter()
            status, _ = get(server.port, target)
            deadline = time.monotonic() + 10
            while status != 200 and time.monotonic() < deadline:
                time.sleep(0.001)
                status, _ = get(server.port, target)
            if status != 200:
                raise RuntimeError(f"{target} was not answered in 10 s")
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        worker.stop(10)
        server.stop()
    bench.results["end_to_end"] = {
        "median_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 99),
        "n": len(latencies),
    }


# -- 6: frontend isolation -------------------------------------------------------------


def isolation(bench: Bench) -> None:
    mode = bench.mode
    url = bench.url("redis", "isolation")
    server = Server(bench.processes, "gunicorn", "wsgi", "wsgi_offload", bench.env(url))
    workers = []
    figures: dict[str, list[dict[str, float]]] = {"idle": [], "busy": []}
    try:
        warm(bench, server, url, "redis")
        jobs = int(mode.isolation_seconds * mode.rounds * cores() * 10 * 2)  # 100 ms each: more than enough
        enqueue_offload(url, jobs, "/cpu/", "cpu=100")
        for round_ in range(mode.rounds):
            say(f"isolation: round {round_ + 1}")
            idle = wrk(server.url("/hit"), connections=8, seconds=mode.isolation_seconds, delay_ms=10)
            figures["idle"].append(vars(idle))
            if not workers:
                workers = [bench.worker("wsgi_offload", url) for _ in range(cores())]
                time.sleep(2)  # the workers started and took their first jobs
            busy = wrk(server.url("/hit"), connections=8, seconds=mode.isolation_seconds, delay_ms=10)
            figures["busy"].append(vars(busy))
            for worker in workers:
                worker.stop(10)
            workers = []
    finally:
        for worker in workers:
            worker.stop(10)
        server.stop()
    bench.results["isolation"] = figures


# -- 7: memory ----------------------------------------------------------------------------


def web_rss(url: str, keys: int) -> dict[str, float]:
    """Run in a process of its own: RSS of a web process before and after ``keys`` answers are cached and hit."""
    import dataclasses

    from offload import WSGIMiddleware
    from offload.backends import IndexEntry
    from offload.records import CachedResponse
    from offload_bench.bench_apps import HEADERS, wsgi_handler

    middleware = WSGIMiddleware(wsgi_handler, url=url, worker_threads=0, max_queued=None)
    offloader = middleware.offloader
    direct_get(middleware, "/k/warm")  # the backend opened and every module imported
    before = rss_kib(os.getpid())
    cache = offloader.cache
    answer = CachedResponse(200, tuple(HEADERS), b"x" * 1023 + b"\n", created=time.time())
    stored = dataclasses.replace(answer, expires=answer.created + 3600).encode()
    for n in range(keys):  # what a worker stores for each key
        path = f"/k/{n}"
        key = middleware.key_for(f"http://127.0.0.1:80{path}")
        cache.set(offloader.response_key(key), stored, 3600, IndexEntry(path, "", failed=False))
    for n in range(keys):
        if direct_get(middleware, f"/k/{n}") != 200:
            raise RuntimeError(f"/k/{n} is not a hit")
    return {"keys": keys, "rss_before_mib": before / 1024, "rss_after_mib": rss_kib(os.getpid()) / 1024}


def memory(bench: Bench) -> None:
    import subprocess

    mode = bench.mode
    web = {}
    for backend in ("memory", "sqlite", "redis"):
        say(f"memory: web process, {backend}, {mode.web_keys} keys")
        url = bench.url(backend, "rss")
        command = [sys.executable, "-m", "offload_bench.bench", "--web-rss", url, str(mode.web_keys)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=child_env({}), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"web RSS run failed:\n{done.stderr[-3000:]}")
        web[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    few, many = mode.worker_jobs
    say(f"memory: worker after {few} and {many} jobs")
    url = bench.url("redis", "worker-rss")
    enqueue_offload(url, many, "/w/")
    log = bench.log_file("worker-rss")
    child = bench.worker("wsgi_offload", url, log=log)
    samples = {}
    deadline = time.monotonic() + (120 if mode is QUICK else 600)
    read = follow(log)
    done_jobs = 0
    while time.monotonic() < deadline and done_jobs < many and child.alive():
        done_jobs += len(read())
        if done_jobs >= few and "few" not in samples:
            samples["few"] = rss_kib(child.pid) / 1024
        time.sleep(0.02)
    time.sleep(0.2)  # the last answer stored
    samples["many"] = rss_kib(child.pid) / 1024
    child.stop(10)
    bench.results["memory"] = {"web": web, "worker": {"jobs": [few, done_jobs], "rss_mib": samples}}


# -- running ---------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "hit": hit_path,
    "storm": miss_storm,
    "pickup": pickup,
    "throughput": throughput,
    "isolation": isolation,
    "memory": memory,
}


@contextlib.contextmanager
def bench_run(mode: Mode, directory: Path) -> Iterator[Bench]:
    processes = ProcessSet(directory, child_env({}))
    redis = RedisServer(directory / "redis")
    postgres = PostgresServer(directory / "postgres") if PostgresServer.missing() is None else None
    try:
        redis.launch()
        for child in redis.processes.children:  # the backend shares the load generator's core
            with contextlib.suppress(OSError):
                os.sched_setaffinity(child.pid, {0})
        if postgres is not None:
            postgres.launch()
        yield Bench(mode, directory, processes, redis, postgres, SQLiteFiles(directory / "sqlite"))
    finally:
        processes.stop_all(10)
        if postgres is not None:
            postgres.close()
        redis.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds: a few minutes")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="where to save the figures")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "performance.png", help="where to draw them")
    parser.add_argument("--web-rss", nargs=2, metavar=("URL", "KEYS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.web_rss:
        print(json.dumps(web_rss(args.web_rss[0], int(args.web_rss[1]))))
        return 0
    mode = QUICK if args.quick else FULL
    os.environ.update(child_env({}))  # the children import offload_bench and print unbuffered
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as tmp, bench_run(mode, Path(tmp)) as bench:
        bench.results["mode"] = "quick" if args.quick else "full"
        for name in args.only or list(SCENARIOS):
            try:
                SCENARIOS[name](bench)
            except Exception as error:  # one failed scenario must not lose the others' figures
                say(f"{name} failed: {type(error).__name__}: {error}")
                bench.results.setdefault("failed", {})[name] = f"{type(error).__name__}: {error}"
            args.json.write_text(json.dumps(bench.results, indent=1))
    from offload_bench.report import plot, tables

    print(tables(bench.results))
    if "hit_path" in bench.results:
        plot(bench.results, args.plot)
        say(f"plot written to {args.plot}")
    say(f"figures saved to {args.json}; {time.monotonic() - started:.0f}s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
