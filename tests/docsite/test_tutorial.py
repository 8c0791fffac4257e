"""docs/tutorial.md as printed: the app written out, served with its workers, asked, expired, inspected."""

from __future__ import annotations

import json
from pathlib import Path

from tests.examples import ROOT, Document, assert_prints, example, wait_for
from tests.servers import free_port

TUTORIAL = Document(ROOT / "docs" / "tutorial.md")


def test_the_tutorial_from_the_first_202_to_the_dashboard(tmp_path: Path) -> None:
    with example(tmp_path) as ex:
        ex.write(TUTORIAL.block("# myapp.py"))
        ex.shell(TUTORIAL.block("offload serve myapp:app --workers 2"))
        wait_for(ex.listening, 60, f"offload serve\n{ex.logs()}")

        [(command, printed)] = TUTORIAL.block("HTTP/1.1 202 Accepted").printed()
        first = ex.run(ex.substituted(command))
        assert first.returncode == 0, first.stderr
        assert_prints(printed, first.stdout)

        assert json.loads(ex.poll("/report").body) == {"total": 42}  # "three seconds later"
        [(command, printed)] = TUTORIAL.block("HTTP/1.1 200 OK").printed()
        hit = ex.run(ex.substituted(command))
        assert_prints(printed, hit.stdout)

        for command, printed in TUTORIAL.block("offload expire '/report'").printed():
            done = ex.run(command)
            assert done.returncode == 0, done.stderr
            assert_prints(printed, done.stdout)
        assert ex.get("/report").status == 202, "the next request queues a new job"

        [(status, printed)] = TUTORIAL.block("$ offload status\n").printed()
        done = ex.run(status)
        assert done.returncode == 0, done.stderr
        assert_prints(printed, done.stdout)

        dashboard = free_port()
        ex.addresses["127.0.0.1:8001"] = f"127.0.0.1:{dashboard}"
        ex.shell(TUTORIAL.block("$ offload dashboard"))
        wait_for(lambda: ex.listening(dashboard), 60, f"the dashboard\n{ex.logs()}")
        assert ex.get("/", port=dashboard).status == 200, ex.logs()
        overview = ex.get("/api/overview", port=dashboard)
        assert overview.status == 200 and b"myapp" in overview.body, overview.body[:500]
