"""What the SQL backends promise beyond the contract suite: races, the log's horizon, notifications' edges."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backend_contract import BackendSpec, eventually
from sql_support import SQL_BACKENDS, Raw

from offload.backends import Cache, ExpiryRule, IndexEntry
from offload.errors import BackendUnavailable


@pytest.fixture(params=SQL_BACKENDS)
def sql_spec(request: pytest.FixtureRequest) -> BackendSpec:
    spec: BackendSpec = request.getfixturevalue(f"{request.param}_spec")
    return spec


@pytest.fixture
def two_caches(sql_spec: BackendSpec) -> Iterator[tuple[Cache, Cache]]:
    """A worker's cache and another process's, on the same database."""
    worker, admin = sql_spec.open_cache(), sql_spec.open_cache()
    yield worker, admin
    worker.close()
    admin.close()


def race(*operations: Callable[[], object]) -> None:
    """Run the callables at the same moment, one thread each."""
    barrier = threading.Barrier(len(operations))
    errors: list[BaseException] = []

    def run(operation: Callable[[], object]) -> None:
        barrier.wait(timeout=30)
        try:
            operation()
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(operation,)) for operation in operations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


@pytest.mark.parametrize(
    ("rule", "stale"),
    [
        (ExpiryRule("/r/*"), True),
        (ExpiryRule(tag="t"), True),
        (ExpiryRule("/r/*", (("a", "2"),)), False),  # the path fits, the params do not
        (ExpiryRule("/other/*"), False),
    ],
    ids=["path", "tag", "other-params", "other-path"],
)
def test_an_expiry_during_a_job_wins_whatever_the_timing(
    two_caches: tuple[Cache, Cache], rule: ExpiryRule, stale: bool
) -> None:
    """The expiry is logged after the job began, so its answer must not survive it, however the two interleave."""
    worker, admin = two_caches
    for number in range(60):
        answer, running, pending = f"answer-{number}", f"running-{number}", f"pending-{number}"
        taken, _, since = worker.start_job(running, pending, answer, b"m", 30)
        assert taken
        entry = IndexEntry(f"/r/{number}", "a=1", tags=("t",))
        survived: list[bool] = []
        race(
            finishing(worker, answer, entry, (pending, running), since, survived),
            lambda: admin.expire(rule),
        )
        assert (worker.get(answer) is None) is stale, number
        if not stale:  # a stale one may survive its own check, then be removed by the expiry's search
            assert survived == [True]
        assert (worker.get(pending), worker.get(running)) == (None, None)


def finishing(
    cache: Cache, answer: str, entry: IndexEntry, done: tuple[str, ...], since: int, survived: list[bool]
) -> Callable[[], None]:
    """A job's last step, reporting whether its answer survived."""
    return lambda: survived.append(cache.finish_job(answer, b"data", 30, entry, done, since))


def test_an_epoch_older_than_the_log_answers_as_if_everything_expired(
    sql_spec: BackendSpec, two_caches: tuple[Cache, Cache]
) -> None:
    worker, admin = two_caches
    since = worker.start_job("running", "pending", "answer", b"m", 30)[2]
    admin.expire(ExpiryRule("/first"))
    raw = Raw(sql_spec)
    try:  # the first expiry was logged two hours ago: the next one prunes it
        aged = "logged - 7200" if raw.engine == "sqlite" else "logged - interval '2 hours'"
        raw.run(f"UPDATE offload_expiries SET logged = {aged}")
    finally:
        raw.close()
    admin.expire(ExpiryRule("/second"))
    unrelated = IndexEntry("/unrelated", "")
    assert worker.expired_since(since, unrelated) == ExpiryRule("*")
    assert worker.expired_since(since + 1, unrelated) is None  # the second expiry is still in the log
    assert worker.finish_job("answer", b"data", 30, unrelated, ("pending", "running"), since) is False
    assert worker.get("answer") is None


def test_stale_claims_change_nothing(sql_spec: BackendSpec) -> None:
    queue = sql_spec.open_queue()
    try:
        queue.push("key", b"payload")
        lost = queue.claim(lease=0.3, wait=1)
        assert lost is not None
        again = queue.claim(lease=30, wait=15)
        assert again is not None
        queue.bury(lost, "from a worker that lost its lease")
        queue.release(lost, delay=0)
        assert queue.stats() == {"queued": 0, "running": 1, "dead": 0}
        queue.bury(again, "error")
        [dead] = queue.dead()
        other = sql_spec.open_queue("other")
        try:
            assert other.revive(dead.job_id) is False  # another namespace's dead letter
        finally:
            other.close()
        assert queue.revive(dead.job_id) is True
        revived = queue.claim(lease=30, wait=1)
        assert revived is not None and revived.job_id != again.job_id  # the back of the queue: a new position
    finally:
        queue.close()


def test_sqlite_notifications_reach_sockets_past_the_path_limit(tmp_path: Path) -> None:
    folder = tmp_path / ("deep" * 25)
    folder.mkdir()
    url = f"sqlite:///{folder / 'offload.sqlite3'}"
    assert len(f"{folder}/offload.sqlite3.watch/offload/123-12345678.sock") > 108  # longer than sun_path
    spec = BackendSpec("sqlite", url, url)
    cache, queue = spec.open_cache(), spec.open_queue()
    heard: list[str] = []
    stop = cache.watch(heard.append)
    try:
        assert stop is not None
        cache.finish_job("answer", b"v", 30, IndexEntry("/page", ""), (), 0)
        assert eventually(lambda: heard == ["answer"], within=5)
        queue.stats()
        pusher = threading.Timer(0.3, queue.push, args=("key", b"late"))
        started = time.monotonic()
        pusher.start()
        claim = queue.claim(lease=30, wait=5)
        pusher.join()
        assert claim is not None
        assert time.monotonic() - started < 0.8  # woken by the push, not found by the once-a-second look
    finally:
        if stop is not None:
            stop()
        cache.close()
        queue.close()


@pytest.mark.parametrize("name", SQL_BACKENDS)
def test_long_namespaces_have_channels_of_their_own(request: pytest.FixtureRequest, name: str) -> None:
    spec: BackendSpec = request.getfixturevalue(f"{name}_spec")
    first, second = spec.open_cache("n" * 64), spec.open_cache("n" * 63 + "m")
    heard: list[str] = []
    stop = first.watch(heard.append)
    try:
        assert stop is not None
        second.finish_job("second", b"v", 30, IndexEntry("/page", ""), (), 0)
        first.finish_job("first", b"v", 30, IndexEntry("/page", ""), (), 0)
        assert eventually(lambda: "first" in heard, within=10)
        time.sleep(0.3)
        assert heard == ["first"]
    finally:
        if stop is not None:
            stop()
        first.close()
        second.close()


def test_postgres_watch_listens_again_after_an_outage() -> None:
    from tests.servers import throwaway_postgres

    with throwaway_postgres() as server:
        spec = BackendSpec("postgres", server.url, server.url)
        cache, writer = spec.open_cache(), spec.open_cache()
        heard: list[str] = []
        stop = cache.watch(heard.append)
        assert stop is not None
        try:
            server.stop()
            server.start()

            def stored_and_heard() -> bool:
                key = f"answer-{uuid.uuid4().hex}"
                try:
                    writer.finish_job(key, b"v", 30, IndexEntry("/page", ""), (), 0)
                except BackendUnavailable:
                    return False
                time.sleep(0.2)
                return key in heard

            assert eventually(stored_and_heard, within=60)
        finally:
            stop()
            cache.close()
            writer.close()
