"""What :mod:`offload.testing` records, and how it puts its backend under an app for the length of a test."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from offload.backends import Backend, ExpiryRule, IndexEntry
from offload.core import Decision, Incoming, Offloader
from offload.errors import ConfigurationError, CorruptRecord
from offload.importer import find_offloader
from offload.records import CachedResponse, StoredRequest
from offload.replay import replayer_for
from offload.testing.backend import RecordingCache, TestQueue
from offload.worker import Worker


@dataclass(frozen=True)
class QueuedJob:
    """A job offload queued: the request a worker replays (its keyed headers only)."""

    method: str
    url: str  # scheme://host/path?query, the canonical query
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    key: str


@dataclass(frozen=True)
class StoredAnswer:
    """An answer a worker stored: what later requests get (``shared``), or one client only."""

    path: str
    query: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    shared: bool
    failed: bool

    def header(self, name: str) -> str | None:
        """The first value of a header, by name in any case."""
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass
class Recorder:
    """What happened to an app's offloaded requests in a test: jobs queued, answers stored, expiries.

    With ``eager`` each job runs as soon as it is queued, in the request that
    queued it, which then answers as a later request would (usually 200);
    otherwise jobs wait until :meth:`run_jobs`.
    """

    eager: bool = False
    jobs: list[QueuedJob] = field(default_factory=list)
    answers: list[StoredAnswer] = field(default_factory=list)
    expiries: list[tuple[ExpiryRule, int]] = field(default_factory=list)
    worker: Worker | None = field(default=None, repr=False)
    queue: TestQueue | None = field(default=None, repr=False)
    _paths: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run_jobs(self) -> int:
        """Run the jobs waiting, as a worker would (replay, store); return how many ran."""
        if self.worker is None or self.queue is None:
            raise ConfigurationError("this recorder is not installed under an app")
        ran = 0
        with self.queue.claiming():
            while True:
                claim = self.queue.claim(self.worker.settings.lease, 0)
                if claim is None:
                    return ran
                self.worker.process(claim)
                ran += 1

    def run_jobs_now(self) -> None:
        """Run the jobs waiting (eagerly, as a job is queued)."""
        self.run_jobs()

    def clear(self) -> None:
        """Forget what was recorded so far (the cache keeps its answers)."""
        with self._lock:
            self.jobs.clear()
            self.answers.clear()
            self.expiries.clear()

    # -- called by the backend ---------------------------------------------------

    def queued(self, payload: bytes) -> None:
        request = StoredRequest.decode(payload)
        target = request.target
        path = target.full_path.decode("utf-8", "replace")
        query = target.query.decode("latin-1")
        url = f"{target.scheme}://{target.host}{path}" + (f"?{query}" if query else "")
        headers = tuple((name, value.decode("latin-1")) for name, value in request.headers)
        with self._lock:
            self._paths[request.key] = (path, query)
            self.jobs.append(QueuedJob("GET", url, path, query, headers, request.key))

    def stored(self, key: str, value: bytes, index: IndexEntry | None) -> None:
        try:
            answer = CachedResponse.decode(value)
        except CorruptRecord:
            return  # a record that is not an answer (the Vary names learned for a URL)
        with self._lock:
            path, query = (index.path, index.query) if index is not None else self._paths.get(key, ("", ""))
            self.answers.append(
                StoredAnswer(path, query, answer.status, answer.headers, answer.body, not answer.private, answer.failed)
            )

    def expired(self, rule: ExpiryRule, count: int) -> None:
        with self._lock:
            self.expiries.append((rule, count))


@contextmanager
def installed(app: Any, eager: bool) -> Iterator[Recorder]:
    """Put a recording in-memory backend under ``app``'s middleware for the block; restore it after."""
    offloader, replay_app = _target(app)
    recorder = Recorder(eager=eager)
    namespace = offloader.namespace
    queue = TestQueue(recorder, namespace)
    backend = Backend(f"memory://offload-testing-{id(recorder)}", RecordingCache(recorder, namespace), queue)
    worker = Worker(offloader, replayer_for(replay_app))
    worker.settings = dataclasses.replace(worker.settings, retry_backoff=0.0)  # a test does not wait between tries
    recorder.worker, recorder.queue = worker, queue
    if eager:
        queue.on_push = recorder.run_jobs_now
    saved = offloader.use_backend(backend)  # the in-process tier is built again over this backend
    _forget_native_calls(app, offloader)
    if eager:
        setattr(offloader, "decide", _eager_decision(offloader))  # noqa: B010 - an instance's own method
    try:
        yield recorder
    finally:
        offloader.__dict__.pop("decide", None)
        offloader.use_backend(saved)
        _forget_native_calls(app, offloader)


def _eager_decision(offloader: Offloader) -> Callable[[Incoming], Decision]:
    """The decision of an eager test: a miss ran its job when it was queued, so look again and answer that."""

    def decide(incoming: Incoming) -> Decision:
        answer = yield from Offloader.decide(offloader, incoming)
        if answer is not None and answer.status == 202 and not answer.from_app:
            answer = yield from Offloader.decide(offloader, incoming)
        return answer

    return decide


def _target(app: Any) -> tuple[Offloader, Any]:
    """The offloader to test, and the app its jobs are replayed through (the Django project's, for Django)."""
    django = app is None or type(app).__module__.startswith("django.")
    if django:
        try:
            from offload.contrib.django.conf import DjangoApp, installed_offloader
        except ImportError as error:
            raise ConfigurationError("name the app whose offloaded views you test: eager(app)") from error
        offloader = installed_offloader()
        if offloader is None:
            raise ConfigurationError("offload.contrib.django.OffloadMiddleware is not in settings.MIDDLEWARE")
        return offloader, DjangoApp(for_tests=True)
    offloader = find_offloader(app)
    if offloader is None:
        raise ConfigurationError(f"{app!r} has no offload middleware in it")
    return offloader, app


def _forget_native_calls(app: Any, offloader: Offloader) -> None:
    """ASGI middlewares remember the backend's coroutine methods; make those over this offloader look again."""
    seen: set[int] = set()
    todo = [app]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen or len(seen) > 50:
            continue
        seen.add(id(current))
        if getattr(current, "offloader", None) is offloader:
            getattr(current, "__dict__", {}).pop("_calls", None)
        for name in ("wsgi_app", "asgi_app", "app", "application", "middleware_stack", "_app"):
            inner = getattr(current, name, None)
            if inner is not None and not isinstance(inner, (str, bytes, int, float)):
                todo.append(inner)
