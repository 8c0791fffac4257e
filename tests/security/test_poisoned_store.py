"""A poisoned store, on every backend: whatever is found under offload's keys is a miss, never code.

Garbage is written where offload reads: under a URL's response key (as a
cached answer) and as a queued job's payload. Each must be a miss (202) plus a
log line; the worker drops a bad job, frees its key and keeps working; and a
pickle whose loading would create a marker file never runs.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.keys import Target
from offload.records import MAGIC, CachedResponse, PendingMarker, StoredRequest
from tests.behaviour.harness import Harness
from tests.security.conftest import Store
from tests.security.support import PROTOCOLS, drain, from_app, key_of, opened

#: Examples per backend: each one is a few round trips to a real server.
POISON_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_numbers = itertools.count()


class Touch:
    """Unpickling this runs a shell command that creates ``path``: the payload an attacker would plant."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.path))}",))


def pickles(marker: Path) -> dict[str, bytes]:
    """Pickle payloads, bare and dressed up as offload records."""
    payload = pickle.dumps(Touch(marker))
    meta = {"kind": "response", "status": 200, "headers": [], "created": 0.0, "failed": False}
    return {
        "pickle": payload,
        "pickle-protocol-0": pickle.dumps(Touch(marker), protocol=0),
        "pickle-after-marker": MAGIC + payload,
        "pickle-as-metadata": MAGIC + payload.replace(b"\n", b" ") + b"\n",
        "pickle-in-truncated-body": MAGIC + json.dumps({**meta, "length": len(payload) + 1}).encode() + b"\n" + payload,
    }


def good_answer() -> bytes:
    return CachedResponse(200, (("Content-Type", "text/plain"),), b"a cached answer", created=1.0).encode()


def good_job(key: str) -> bytes:
    """A job record in offload's format; its keys match its inputs only when ``key`` is their key."""
    target = Target("http", "testserver", b"", b"/poisoned", b"")
    return StoredRequest(key, key, target, (), ("authorization", "cookie")).encode()


def broken_records(key: str) -> dict[str, bytes]:
    """Records that are almost offload's: truncated, of another version, of the wrong kind."""
    answer = good_answer()
    job = good_job(key)
    return {
        "empty": b"",
        "truncated-marker": MAGIC[:5],
        "truncated-metadata": answer[:20],
        "truncated-body": answer[:-1],
        "longer-body": answer + b"x",
        "other-version": b"offload/2\n" + answer[len(MAGIC) :],
        "other-version-job": b"offload/2\n" + job[len(MAGIC) :],
        "no-marker": answer[len(MAGIC) :],
        "metadata-not-json": MAGIC + b"\xff\xfe{\n",
        "deep-json": MAGIC + b"[" * 100_000 + b"\n",
        "request-where-answer-belongs": job,
        "answer-where-request-belongs": answer,
        "pending-marker": PendingMarker("queued", 1.0).encode(),
        "header-injection": answer.replace(b'"text/plain"', b'"text/plain\\r\\nSet-Cookie: stolen=1"'),
        "job-of-another-key": good_job("0" * 64),
        "job-with-trailing-data": job + b"trailing",
    }


@pytest.fixture(params=PROTOCOLS)
def harness(request: pytest.FixtureRequest, store: Store) -> Iterator[Harness]:
    """The security app behind offload on the store under test, for each protocol."""
    with opened(request.param, **store.options) as made:
        yield made


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pickle-ran"
    yield path
    assert not path.exists(), "a pickle planted in the store was executed"


def new_url() -> tuple[str, str]:
    return "/poisoned", f"case={next(_numbers)}"


def poison_answer(harness: Harness, data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """Plant ``data`` as a URL's cached answer: the URL is a miss with a log line, then gets the app's answer."""
    path, query = new_url()
    offloader = harness.offloader
    offloader.cache.set(offloader.response_key(key_of(harness, path, query)), data, 60)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="offload"):
        first = harness.request("GET", path, query)
        assert first.status == 202, f"a poisoned answer was served: {first}"
        assert any("offload's format" in r.getMessage() for r in caplog.records), "no log line for the poison"
        assert drain(harness) == 1
    hit = harness.request("GET", path, query)
    assert (hit.status, hit.body, from_app(hit)) == (200, b"ok", True)


def poison_job(harness: Harness, build: Callable[[str], bytes], caplog: pytest.LogCaptureFixture) -> None:
    """Queue ``build(key)`` as a URL's job: the worker drops it with a log line, frees the URL and keeps working."""
    path, query = new_url()
    offloader = harness.offloader
    key = key_of(harness, path, query)
    assert offloader.cache.add(offloader.pending_key(key), PendingMarker("queued", 0.0).encode(), 60)
    offloader.queue.push(key, build(key))
    good_path, good_query = new_url()
    assert harness.request("GET", good_path, good_query).status == 202  # a good job behind the bad one
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="offload"):
        assert drain(harness) == 1, "the worker did not go on to the good job"
    assert any("not in offload's format" in r.getMessage() for r in caplog.records), "no log line for the poison"
    assert offloader.queue.stats() == {"queued": 0, "running": 0, "dead": 0}
    assert harness.request("GET", good_path, good_query).body == b"ok"
    assert harness.request("GET", path, query).status == 202, "the bad job's URL is not queued again"
    assert drain(harness) == 1
    assert harness.request("GET", path, query).body == b"ok"


def test_the_pickle_payload_would_run_if_unpickled(tmp_path: Path) -> None:
    """Proof that the pickles below are live: loading one does create the marker file."""
    live = tmp_path / "live"
    pickle.loads(pickles(live)["pickle"])
    assert live.exists()


@pytest.mark.parametrize("name", sorted(pickles(Path("x"))))
def test_a_pickle_in_the_cache_is_a_miss_and_never_runs(
    harness: Harness, marker: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    poison_answer(harness, pickles(marker)[name], caplog)


@pytest.mark.parametrize("name", sorted(pickles(Path("x"))))
def test_a_pickle_in_the_queue_is_dropped_and_never_runs(
    harness: Harness, marker: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    poison_job(harness, lambda key: pickles(marker)[name], caplog)


BROKEN_ANSWERS = sorted(set(broken_records("k")) - {"answer-where-request-belongs", "job-with-trailing-data"})
BROKEN_JOBS = sorted(set(broken_records("k")) - {"request-where-answer-belongs", "header-injection"})


@pytest.mark.parametrize("name", BROKEN_ANSWERS)
def test_a_broken_record_in_the_cache_is_a_miss(harness: Harness, name: str, caplog: pytest.LogCaptureFixture) -> None:
    poison_answer(harness, broken_records("k")[name], caplog)


@pytest.mark.parametrize("name", BROKEN_JOBS)
def test_a_broken_job_is_dropped(harness: Harness, name: str, caplog: pytest.LogCaptureFixture) -> None:
    poison_job(harness, lambda key: broken_records(key)[name], caplog)


# -- generated poison ---------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
NOT_A_NUMBER = st.none() | st.text(max_size=5) | st.lists(JSON, max_size=2) | st.dictionaries(st.text(), JSON)
BAD_HEADERS = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.integers(),
    st.dictionaries(st.text(max_size=3), JSON, max_size=2),
    st.sampled_from(
        [
            [["A"]],
            [["A", "b", "c"]],
            [[1, "b"]],
            [["A", None]],
            [["", "b"]],
            [["a:b", "c"]],
            [["a b", "c"]],
            [["a", "b\r\nSet-Cookie: x=1"]],
            [["a", "b\nc"]],
            [["\u0100", "x"]],
            [["a", "\u20ac"]],
            ["A", "b"],
        ]
    ),
)
BODY = b"the body"
#: For each field of an answer record, values that are wrong for it.
WRONG_ANSWER_FIELDS: dict[str, Any] = {
    "kind": st.none() | st.integers() | st.sampled_from(["request", "pending", "Response", ""]),
    "status": st.one_of(
        NOT_A_NUMBER,
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.integers(max_value=99),
        st.integers(1000),
    ),
    "headers": BAD_HEADERS,
    "length": st.one_of(NOT_A_NUMBER, st.integers().filter(lambda n: n != len(BODY))),
    "created": NOT_A_NUMBER,
    "expires": NOT_A_NUMBER,
    "failed": st.one_of(NOT_A_NUMBER, st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
}


@st.composite
def wrong_answers(draw: st.DrawFn) -> bytes:
    """An answer record with valid JSON where exactly one field has the wrong type or value."""
    meta: dict[str, Any] = {
        "kind": "response",
        "status": 200,
        "headers": [["Content-Type", "text/plain"]],
        "length": len(BODY),
        "created": 1.0,
        "expires": 2.0,
        "failed": False,
    }
    name = draw(st.sampled_from(sorted(WRONG_ANSWER_FIELDS)))
    if draw(st.booleans()) and name not in ("expires",):
        del meta[name]
    else:
        meta[name] = draw(WRONG_ANSWER_FIELDS[name])
    line = json.dumps(meta, allow_nan=False) if draw(st.booleans()) else json.dumps(draw(JSON))
    return MAGIC + line.encode() + b"\n" + BODY


def wrong_jobs(key: str) -> st.SearchStrategy[bytes]:
    """Job records with valid JSON where one field has the wrong type or value."""
    wrong = {
        "kind": st.none() | st.integers() | st.sampled_from(["response", "pending", "Request", ""]),
        "key": st.one_of(st.none(), st.integers(), st.lists(JSON, max_size=2)),
        "primary": st.one_of(st.none(), st.integers(), st.just("0" * 64)),
        "path": st.one_of(st.none(), st.integers(), st.just("/\u0100")),
        "raw_path": st.one_of(st.integers(), st.just("/\u0100"), st.lists(JSON, max_size=2)),
        "query": st.one_of(st.none(), st.integers(), st.just("a=\u20ac")),
        "headers": st.one_of(st.none(), st.text(max_size=3), st.sampled_from([[["A"]], [[1, "b"]], [["\u0100", "x"]]])),
        "scheme": st.one_of(st.none(), st.integers(), st.lists(JSON, max_size=2)),
        "host": st.one_of(st.none(), st.integers(), st.just("h\u0100")),
        "root_path": st.one_of(st.none(), st.integers()),
        "vary": st.one_of(st.none(), st.text(max_size=3), st.sampled_from([[1], [None], ["cookie", 2]])),
        "learned": st.one_of(st.none(), st.integers(), st.sampled_from([[1], [[]]])),
        "present": st.one_of(st.none(), st.integers(), st.sampled_from([[1.5], [{}]])),
        "enqueued": NOT_A_NUMBER,
    }

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        record = json.loads(good_job(key)[len(MAGIC) :])
        name = draw(st.sampled_from(sorted(wrong)))
        if draw(st.booleans()) and name != "headers":
            del record[name]
        else:
            record[name] = draw(wrong[name])
        line = json.dumps(record) if draw(st.booleans()) else json.dumps(draw(JSON))
        return MAGIC + line.encode() + b"\n"

    return build()


@POISON_SETTINGS
@given(data=st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(lambda b: MAGIC + b), wrong_answers()))
def test_generated_garbage_in_the_cache_is_a_miss(harness: Harness, data: bytes, caplog: Any) -> None:
    poison_answer(harness, data, caplog)


@POISON_SETTINGS
@given(data=st.data())
def test_generated_garbage_in_the_queue_is_dropped(harness: Harness, data: st.DataObject, caplog: Any) -> None:
    raw = st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(lambda b: MAGIC + b))
    poison_job(harness, lambda key: data.draw(st.one_of(raw, wrong_jobs(key))), caplog)


# -- poison written past offload, straight into the server ----------------------------------


@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_a_foreign_entry_in_the_redis_stream_is_dropped(
    store: Store, marker: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program adds to offload's job stream: the worker drops the entry and keeps working."""
    with opened("wsgi", **store.options) as harness:
        queue: Any = harness.offloader.queue
        client = queue.redis.client
        client.xadd(queue.stream, {"foreign": "entry"})
        client.xadd(queue.stream, {"p": pickle.dumps(Touch(marker))})
        assert harness.request("GET", "/after-foreign-entries").status == 202
        with caplog.at_level(logging.WARNING, logger="offload"):
            assert drain(harness) == 1
        assert sum("not in offload's format" in r.getMessage() for r in caplog.records) == 2
        assert harness.request("GET", "/after-foreign-entries").body == b"ok"


@pytest.mark.parametrize("store", ["memcached"], indirect=True)
@pytest.mark.parametrize(
    "value",
    [
        b"offload-chunks/1\n{not json",
        b"offload-chunks/1\n[]",
        b'offload-chunks/1\n{"id": "../x", "n": 2, "length": 4}',
        b'offload-chunks/1\n{"id": "abc", "n": 100000000, "length": 4}',
        b'offload-chunks/1\n{"id": "abc", "n": 2, "length": 4}',  # chunks that do not exist
    ],
)
def test_a_foreign_chunk_header_in_memcached_is_a_miss(store: Store, marker: Path, value: bytes) -> None:
    """Another program writes a chunked-value header of its own under offload's key: a miss."""
    with opened("wsgi", **store.options) as harness:
        cache: Any = harness.offloader.cache
        key = harness.offloader.response_key(key_of(harness, "/chunks"))
        cache.client.set(key, value, 60)
        cache.client.set(f"{key}:c:abc:0", pickle.dumps(Touch(marker)), 60)
        assert harness.request("GET", "/chunks").status == 202
        assert drain(harness) == 1
        assert harness.request("GET", "/chunks").body == b"ok"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_a_redis_value_of_another_type_is_a_miss(store: Store, protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    """Another program stores a hash under a URL's key: a miss and a log line, not a 503 for an outage."""
    with opened(protocol, **store.options) as harness:
        offloader: Any = harness.offloader
        key = offloader.response_key(key_of(harness, "/wrong-type"))
        offloader.cache.redis.client.hset(key, "field", "value")
        with caplog.at_level(logging.WARNING, logger="offload"):
            assert harness.request("GET", "/wrong-type").status == 202
        assert any("offload's format" in r.getMessage() for r in caplog.records)
        assert drain(harness) == 1
        assert harness.request("GET", "/wrong-type").body == b"ok"
