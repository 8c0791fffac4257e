"""Datasette behind offload: uvicorn serving the bare app and the wrapped one, an ``offload worker`` replaying.

The database is made by a fixture: a table of 50 rows whose primary key is
text, one key holding a ``/`` (``reports/2024``), and a column of paths with
``/`` in them. Each URL is fetched from the bare app and through offload
(polling while it answers 202), with the same request (``Host`` alone), and
the answers must be the same: status, headers in order, body byte for byte.

Left out of the comparison: the headers uvicorn adds itself (``date``,
``server``, ``Transfer-Encoding``); no other header. One value in the bodies
is the time a query took, different on every call of the app: ``"query_ms":
0.61...`` in JSON and ``Queries took 0.612ms`` in the HTML footer. That
number is replaced by 0 on both sides before comparing; every other byte is
compared as it is.

Datasette 0.65 encodes a ``/`` in a row's key with its own tilde encoding:
the row ``reports/2024`` is ``/db/items/reports~2F2024``. The same row asked
for with ``%2F`` in the raw path gets a redirect to that address from the
bare app.

Request headers at replay: Datasette reads ``Host`` (its ``Link`` headers and
the ``link rel=alternate`` of its pages are absolute URLs built from it) and
``Cookie`` (``ds_actor``, ``ds_csrftoken``); a ``Host``-only request is
answered identically by the bare app and by the replay.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from offload.keys import canonical_query, parse_query
from tests.thirdparty.harness import (
    CHEAP_BACKENDS,
    Server,
    assert_no_shared_cookie,
    assert_same_answer,
    backend_url,
    processes,
    require,
)

BARE = "tests.thirdparty.apps.datasette_app:bare"
WRAPPED = "tests.thirdparty.apps.datasette_app:app"
HOST = [("Host", "datasette.test")]
#: The row whose primary key holds a slash, and its address in Datasette's tilde encoding.
SLASHED_KEY = "reports/2024"
SLASHED_ROW = "/db/items/reports~2F2024"

_QUERY_MS = re.compile(rb'"query_ms": [0-9.eE+-]+')
_QUERIES_TOOK = re.compile(rb"Queries took [0-9.,]+ms")


def without_timing(body: bytes) -> bytes:
    """The body with the time its queries took set to 0: the one value two calls of the app never share."""
    return _QUERIES_TOOK.sub(b"Queries took 0ms", _QUERY_MS.sub(b'"query_ms": 0', body))


URLS = [
    "/",
    "/db",
    "/db/items",
    "/db/items.json?_size=5",
    "/db/items.json?_size=5&_next=5",
    "/db/items.json?_size=5&_next=k04",
    "/db/items?_facet=category",
    "/db/items.json?_facet=category&_size=2",
    "/db/items.json?_col=name&_col=category",
    "/db/items.json?_col=category&_col=name",
    "/db/items.json?_shape=array&_size=3",
    "/db/items.json?_sort_desc=name&_size=3",
    "/db/items.json?path__startswith=dir1/&_size=3",
    "/db/items.json?path=dir3%2Ffile7.txt",
    "/db/items?category=blue&_size=4",
    "/db/items.csv?_size=3",
    SLASHED_ROW,
    f"{SLASHED_ROW}.json",
    "/db/items/k99",
    "/-/versions.json",
    "/-/static/app.css",
    "/no-such-database",
]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``db.db``: the table ``items``, 50 rows with text keys, one key and every path holding a ``/``."""
    path = tmp_path_factory.mktemp("datasette-db") / "db.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT, category TEXT, path TEXT)")
        rows = [
            (
                SLASHED_KEY if n == 7 else f"k{n:02d}",
                f"name {n}",
                ("red", "green", "blue")[n % 3],
                f"dir{n % 4}/file{n}.txt",
            )
            for n in range(50)
        ]
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", rows)
    return path


def uvicorn(app: str) -> Callable[[int], list[str]]:
    def args(port: int) -> list[str]:
        return ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", app]

    return args


@pytest.fixture(scope="module")
def bare(database: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """uvicorn serving Datasette as it is."""
    require("datasette", "datasette")
    with processes(tmp_path_factory.mktemp("datasette-bare")) as started:
        yield started.serve("uvicorn-bare", uvicorn(BARE), {"DATASETTE_DATABASE": str(database)})


@pytest.fixture(scope="module", params=CHEAP_BACKENDS)
def offloaded(
    request: pytest.FixtureRequest, database: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """uvicorn serving Datasette wrapped in offload, and one ``offload worker``, on one backend."""
    require("datasette", "datasette")
    directory = tmp_path_factory.mktemp(f"datasette-{request.param}")
    with backend_url(request.param, request, directory) as url, processes(directory) as started:
        env = {"DATASETTE_DATABASE": str(database), "OFFLOAD_URL": url}
        server = started.serve(f"uvicorn-{request.param}", uvicorn(WRAPPED), env)
        started.worker(f"worker-{request.param}", WRAPPED, env)
        yield server


@pytest.mark.parametrize("target", URLS)
def test_each_answer_is_the_bare_apps_byte_for_byte(target: str, bare: Server, offloaded: Server) -> None:
    # The worker hands the app the query in its canonical order: the bare app is asked the same.
    path, _, query = target.partition("?")
    canonical = f"{path}?{canonical_query(parse_query(query.encode()))}" if query else target
    expected = bare.get(canonical, HOST)
    assert_same_answer(expected, offloaded.poll(target, HOST), body=without_timing)
    assert_same_answer(expected, offloaded.get(target, HOST), body=without_timing)  # a hit: the same again


# Isolation: what offload must guarantee. Each uses URLs no other test asks for, so they are independent.


def test_a_csrf_cookie_is_never_shared_between_anonymous_clients(offloaded: Server) -> None:
    """``/-/messages`` sets a fresh ``ds_csrftoken`` (and puts it in its form) for every client without one."""
    assert_no_shared_cookie(offloaded, "/-/messages", HOST, "ds_csrftoken")


def test_repeated_parameters_keep_their_order(bare: Server, offloaded: Server) -> None:
    """``_col`` picks columns in the order given: each order is a different page, and gets the bare app's."""
    first, second = "/db/items?_col=category&_col=path", "/db/items?_col=path&_col=category"
    assert without_timing(bare.get(first, HOST).body) != without_timing(bare.get(second, HOST).body)
    for target in (first, second):
        assert_same_answer(bare.get(target, HOST), offloaded.poll(target, HOST), body=without_timing)


def test_a_slash_encoded_as_percent_2f_is_not_a_path_separator(bare: Server, offloaded: Server) -> None:
    """``/db/items/reports%2F2024`` (one segment: a redirect to the row) is not ``/db/items/reports/2024`` (a 404)."""
    for target in ("/db/items/reports/2024", "/db/items/reports%2F2024"):
        expected = bare.get(target, HOST)
        assert_same_answer(expected, offloaded.poll(target, HOST), body=without_timing)
    assert bare.get("/db/items/reports%2F2024", HOST).header("Location") == SLASHED_ROW  # what the bare app does
