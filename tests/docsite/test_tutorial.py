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

        answered = ex.poll("/report")  # "three seconds later"
        assert json.loads(answered.body) == {"total": 42}
        age = int(answered.header("Age") or "-1")
        assert 0 <= age < 3, f"Age counts from when the app answered, not from the job's start (3 s before): {age}"
        [(command, printed)] = TUTORIAL.block("HTTP/1.1 200 OK").printed()
        shown = int(next(line for line in printed if line.startswith("Age: "))[5:])
        assert shown < 3, "asked three seconds after the 202, the answer is younger than the job's three seconds"
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
