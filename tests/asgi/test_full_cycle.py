"""The whole cycle with real processes: uvicorn serves the app, ``offload worker`` computes its answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.asgi.frameworks import APPS, GREETING, spec
from tests.asgi.processes import deployed, poll, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    gates = tmp_path / "gates"
    gates.mkdir()
    return {"OFFLOAD_URL": f"sqlite:///{tmp_path / 'offload.sqlite3'}", "OFFLOAD_TEST_GATES": str(gates)}


@pytest.mark.parametrize("name", sorted(APPS))
def test_202_then_the_worker_answer_then_the_same_bytes_from_cache(name: str, env: dict[str, str]) -> None:
    with deployed(spec(name), env) as site:
        get = lambda: site.client.get("/report", params={"name": "ada"})  # noqa: E731
        first = get()
        assert first.status_code == 202
        assert (first.headers["retry-after"], first.headers["cache-control"], first.content) == ("1", "no-store", b"")
        answer = poll(get, lambda response: response.status_code != 202)
        assert answer.status_code == 200
        assert answer.text == f"{GREETING} ada, computed by process {site.worker.pid}", "run by the worker process"
        again = get()
        assert (again.status_code, again.content) == (200, answer.content)
        assert [(k, v) for k, v in again.headers.multi_items() if k != "date"] == [
            (k, v) for k, v in answer.headers.multi_items() if k != "date"
        ]


def test_a_long_job_in_the_worker_never_delays_hits_served_by_the_web_process(env: dict[str, str]) -> None:
    gates = Path(env["OFFLOAD_TEST_GATES"])
    with deployed(spec("plain"), env) as site:
        cached = lambda: site.client.get("/report", params={"name": "cached"})  # noqa: E731
        warm = poll(cached, lambda response: response.status_code != 202)
        assert warm.status_code == 200

        gated = lambda: site.client.get("/gated", params={"token": "long", "name": "late"})  # noqa: E731
        assert gated().status_code == 202
        assert wait_for((gates / "long.started").exists), "the worker started the long job"

        # The job now runs until released: whatever the web process answers meanwhile, it answered without it.
        hits = [cached() for _ in range(5)]
        assert [(hit.status_code, hit.content) for hit in hits] == [(200, warm.content)] * 5
        assert site.client.get("/report", params={"name": "new"}).status_code == 202
        assert gated().status_code == 202, "the long job is still running"

        (gates / "long.release").touch()
        done = poll(gated, lambda response: response.status_code != 202)
        assert done.text == f"hello late, computed by process {site.worker.pid}"
        new = poll(lambda: site.client.get("/report", params={"name": "new"}), lambda r: r.status_code != 202)
        assert new.status_code == 200
