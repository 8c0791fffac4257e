"""The operations pages as printed: metrics, the dashboard, logs and traces of the tutorial's app.

One app serves every page: the tutorial's ``myapp.py`` with the metrics, the
tracing and the dashboard blocks added at its end, served with the logs
page's commands. The metrics page's workers join them for the metrics tests
(counting in one ``PROMETHEUS_MULTIPROC_DIR``, as the page advises for
several processes), and leave for the logs test, whose jobs must be run by
the workers that write JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.examples import ROOT, Document, Example, example, wait_for
from tests.servers import free_port

TUTORIAL = Document(ROOT / "docs" / "tutorial.md")
METRICS = Document(ROOT / "docs" / "operations" / "metrics.md")
DASHBOARD = Document(ROOT / "docs" / "operations" / "dashboard.md")
LOGS = Document(ROOT / "docs" / "operations" / "logs.md")
TRACING = Document(ROOT / "docs" / "operations" / "tracing.md")


@dataclass
class Served:
    ex: Example
    app: int  # offload serve
    metrics: list[int]  # the workers' --metrics-port
    mounted: int  # gunicorn myapp:dashboard
    dashboard: int  # offload dashboard

    def metrics_workers(self, running: bool) -> None:
        """Start the metrics page's workers (unless they run), or stop them."""
        block = METRICS.block("offload worker myapp:app --metrics-port 9101")
        alive = {command for command, process, _ in self.ex.processes if process.poll() is None}
        for line in block.commands():
            command = self.ex.substituted(line)
            if running and command not in alive:
                self.ex.start(command)
            elif not running and command in alive:
                self.ex.stop(command)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("operations")
    with example(directory) as ex:
        (directory / "prometheus").mkdir()
        ex.env["PROMETHEUS_MULTIPROC_DIR"] = str(directory / "prometheus")
        ex.write(TUTORIAL.block("# myapp.py"))
        ex.write(METRICS.block("import offload.metrics"))
        ex.write(TRACING.block("import offload.tracing"))
        ex.write(DASHBOARD.block("import offload.dashboard"))

        app = ex.port
        ex.shell(LOGS.block("offload worker myapp:app --log-format json"))

        metrics = [free_port(), free_port()]
        ex.addresses["127.0.0.1:9101"] = f"127.0.0.1:{metrics[0]}"
        ex.addresses["--metrics-port 9101"] = f"--metrics-port {metrics[1]}"

        mounted = free_port()
        ex.listen_on(mounted)
        ex.shell(DASHBOARD.block("gunicorn myapp:dashboard"))
        ex.listen_on(app)

        dashboard = free_port()
        ex.addresses["127.0.0.1:8001"] = f"127.0.0.1:{dashboard}"
        ex.addresses["redis://localhost:6379/0"] = f"sqlite:///{directory}/offload.sqlite3"
        ex.shell(DASHBOARD.block("$ offload dashboard --url"))
        yield Served(ex, app, metrics, mounted, dashboard)


def scrape(ex: Example, port: int) -> str:
    wait_for(lambda: ex.listening(port), 60, f"metrics on port {port}\n{ex.logs()}")
    answer = ex.get("/metrics", port=port)
    assert answer.status == 200, answer
    return answer.body.decode()


def test_a_job_done_is_one_json_line_with_the_fields_the_page_shows(served: Served) -> None:
    ex = served.ex
    served.metrics_workers(running=False)
    assert json.loads(ex.poll("/report?for=logs").body) == {"total": 42}
    shown = json.loads(LOGS.block('"event": "job.done"').text)

    def logged() -> dict[str, object] | None:
        for line in ex.logs().splitlines():
            if line.startswith("{") and '"event": "job.done"' in line:
                found: dict[str, object] = json.loads(line)
                return found
        return None

    line = wait_for(logged, 30, f"a job.done JSON line\n{ex.logs()}")
    assert set(line) == set(shown), (sorted(line), sorted(shown))
    assert (line["event"], line["outcome"], line["status"]) == ("job.done", "succeeded", 200)


def test_a_workers_metrics_port_shows_every_process_counts(served: Served) -> None:
    ex = served.ex
    served.metrics_workers(running=True)
    ex.poll("/report?for=metrics")
    assert ex.get("/report?for=metrics").status == 200

    def counted() -> str | None:
        text = scrape(ex, served.metrics[0])
        hits = re.search(r'^offload_requests_total\{[^}]*outcome="hit"[^}]*pattern="reports"[^}]*\} (\S+)', text, re.M)
        done = re.search(r'^offload_jobs_succeeded_total\{[^}]*pattern="reports"[^}]*\} (\S+)', text, re.M)
        return text if hits and done and float(hits[1]) >= 1 and float(done[1]) >= 1 else None

    wait_for(counted, 30, "the web processes' hits and the workers' jobs on one worker's port")
    assert "offload_requests_total" in scrape(ex, served.metrics[1])


def test_the_alerts_name_metrics_offload_exposes(served: Served) -> None:
    ex = served.ex
    served.metrics_workers(running=True)
    ex.poll("/report?for=metrics")
    exposed = set(re.findall(r"^(offload_\w+)[{ ]", scrape(ex, served.metrics[0]), re.M))
    rules = re.findall(r"^- alert: (\w+)\n\s+expr: (.+)$", METRICS.block("- alert: OffloadQueueLatency").text, re.M)
    assert len(rules) == 4, rules
    for alert, expression in rules:
        for metric in re.findall(r"\boffload_\w+", expression):
            assert metric in exposed, f"{alert}: {metric} is not exposed"


def test_the_mounted_dashboard_refuses_who_is_not_staff(served: Served) -> None:
    ex = served.ex
    wait_for(lambda: ex.listening(served.mounted), 60, f"gunicorn myapp:dashboard\n{ex.logs()}")
    refused = ex.get("/", port=served.mounted)
    assert refused.status == 403, refused


def test_the_dashboard_by_itself_says_it_has_no_auth(served: Served) -> None:
    ex = served.ex
    wait_for(lambda: ex.listening(served.dashboard), 60, f"offload dashboard\n{ex.logs()}")
    assert ex.get("/", port=served.dashboard).status == 200
    [(_, printed)] = DASHBOARD.block("$ offload dashboard --url").printed()
    assert ex.substituted(printed[0]) in ex.logs()


def test_tracing_is_installed_in_the_served_app(served: Served) -> None:
    ex = served.ex
    answer = ex.poll("/report?for=metrics")
    assert (answer.status, json.loads(answer.body)) == (200, {"total": 42})
    assert "Traceback" not in ex.logs()
