"""A load client process: many asyncio tasks polling offload until each URL has its answer.

``python -m offload_bench.client`` reads a JSON :class:`Spec` on stdin and
prints a JSON :class:`Tally` on stdout. Modes:

``poll``
    ``concurrency`` tasks take paths from the list and poll each until its
    final answer (``200`` and ``done PATH``); after each, ``hits`` GETs of
    paths already done (a mixed load of misses and hits).
``storm``
    ``per_path`` tasks per path, all starting at ``start_at``, each polling
    its path until the answer.
``once``
    every path requested once by ``concurrency`` tasks (a flood of misses).

Every request has a timeout: a request that takes longer counts as a hang.
Any 5xx other than 503, a 503 without ``Retry-After``, a body that is not the
app's own answer and a connection error are recorded as problems.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

#: Problems kept as examples in the tally (the counts are complete).
SAMPLES = 5


@dataclass
class Spec:
    bases: list[str]
    paths: list[str]
    mode: str = "poll"
    concurrency: int = 50
    per_path: int = 1
    hits: int = 0
    interval: float = 0.25
    timeout: float = 30.0
    start_at: float = 0.0
    stop_new_at: float = 0.0  # poll mode: take no new path after this time (0: take them all)
    deadline: float = 0.0
    host: str = "offload-chaos.test"


@dataclass
class Tally:
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    worst_latency: float = 0.0
    hangs: int = 0
    resent: int = 0
    problems: int = 0
    samples: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    first: dict[str, int] = field(default_factory=dict)  # once mode: path -> status

    def problem(self, text: str) -> None:
        self.problems += 1
        if len(self.samples) < SAMPLES:
            self.samples.append(text)


class Poller:
    def __init__(self, spec: Spec, client: httpx.AsyncClient) -> None:
        self.spec = spec
        self.client = client
        self.tally = Tally()
        self.statuses: Counter[int] = Counter()
        self.turn = 0

    async def get(self, path: str) -> int | None:
        """One GET; returns the status, or None after a hang or a connection error."""
        base = self.spec.bases[self.turn % len(self.spec.bases)]
        self.turn += 1
        started = time.monotonic()
        try:
            try:
                answer = await self.client.get(base + path, timeout=self.spec.timeout)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                # The server closed an idle keep-alive connection as this request
                # went out on it: a GET is safe to send again, as browsers do.
                self.tally.resent += 1
                answer = await self.client.get(base + path, timeout=self.spec.timeout)
        except httpx.TimeoutException:
            self.tally.hangs += 1
            self.tally.problem(f"GET {path}: no answer within {self.spec.timeout:g}s")
            return None
        except httpx.HTTPError as error:
            self.tally.problem(f"GET {path}: {type(error).__name__}: {error}")
            return None
        finally:
            self.tally.requests += 1
            self.tally.worst_latency = max(self.tally.worst_latency, time.monotonic() - started)
        self.statuses[answer.status_code] += 1
        status = answer.status_code
        if status == 200:
            if answer.content != f"done {path}".encode():
                self.tally.problem(f"GET {path}: 200 with a wrong body {answer.content[:80]!r}")
        elif status in (202, 503):
            if "retry-after" not in answer.headers:
                self.tally.problem(f"GET {path}: {status} without Retry-After")
            if answer.content:
                self.tally.problem(f"GET {path}: {status} with a body {answer.content[:200]!r}")
        else:
            self.tally.problem(f"GET {path}: unexpected {status} {answer.content[:200]!r}")
        return status

    async def until_done(self, path: str) -> bool:
        while time.time() < self.spec.deadline:
            if await self.get(path) == 200:
                return True
            await asyncio.sleep(self.spec.interval * random.uniform(0.7, 1.3))
        return False

    async def poll_worker(self, todo: list[str], finished: list[str]) -> None:
        while todo and (not self.spec.stop_new_at or time.time() < self.spec.stop_new_at):
            path = todo.pop()
            if await self.until_done(path):
                finished.append(path)
                self.tally.done.append(path)
            else:
                self.tally.unfinished.append(path)
            for _ in range(self.spec.hits):
                if time.time() >= self.spec.deadline:
                    break
                await self.get(random.choice(finished))

    async def storm_worker(self, path: str, first: bool) -> None:
        await asyncio.sleep(max(0.0, self.spec.start_at - time.time()))
        done = await self.until_done(path)
        if first:
            (self.tally.done if done else self.tally.unfinished).append(path)

    async def once_worker(self, todo: list[str]) -> None:
        while todo and time.time() < self.spec.deadline:
            path = todo.pop()
            status = await self.get(path)
            self.tally.first[path] = status or 0

    async def run(self) -> Tally:
        spec = self.spec
        await asyncio.sleep(max(0.0, spec.start_at - time.time()))
        if spec.mode == "poll":
            todo, finished = list(reversed(spec.paths)), list[str]()
            await asyncio.gather(*(self.poll_worker(todo, finished) for _ in range(spec.concurrency)))
        elif spec.mode == "storm":
            tasks = [self.storm_worker(path, n == 0) for path in spec.paths for n in range(spec.per_path)]
            random.shuffle(tasks)
            await asyncio.gather(*tasks)
        elif spec.mode == "once":
            todo = list(reversed(spec.paths))
            await asyncio.gather(*(self.once_worker(todo) for _ in range(spec.concurrency)))
        else:
            raise ValueError(f"unknown mode {spec.mode!r}")
        self.tally.statuses = {str(code): count for code, count in sorted(self.statuses.items())}
        return self.tally


async def main_async(spec: Spec) -> Tally:
    # Idle connections are dropped before gunicorn's 2 s keep-alive timeout closes them.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=1.0)
    # One site behind several web processes: every request names the same Host, as behind a load
    # balancer, since the Host a client asks for is part of each answer's key.
    headers = {"Host": spec.host}
    async with httpx.AsyncClient(limits=limits, trust_env=False, headers=headers) as client:
        return await Poller(spec, client).run()


def main() -> None:
    data: dict[str, Any] = json.load(sys.stdin)
    tally = asyncio.run(main_async(Spec(**data)))
    json.dump(asdict(tally), sys.stdout)


if __name__ == "__main__":
    main()
