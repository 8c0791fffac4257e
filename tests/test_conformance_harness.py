"""The conformance harness's scoring and rendering, on a tiny results file written here.

The harness itself (``python -m offload_bench.conformance``, ``make conformance``)
needs Node.js and a checkout of the HTTP caching test suite, so it is not run
here; what turns its output into figures is, since docs/CONFORMANCE.md quotes
them. The catalogue and results below mimic what the suite's code and CLI
write: every verdict the suite knows appears once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from offload_bench import conformance, conformance_report, passthrough
from offload_bench.conformance_report import (
    Catalogue,
    conformance_table,
    load_catalogue,
    load_results,
    peer_results,
    render_summary,
    summarise,
)
from offload_bench.procs import HarnessError

CATALOGUE = {
    "suite": {"version": "0.4.5", "commit": "b55b8bda3dbb0123456789abcdef0123456789ab"},
    "groups": [
        {
            "id": "fresh",
            "name": "Freshness",
            "tests": [
                {"id": "t-none", "name": "Does the cache avoid reuse?", "kind": "check", "depends_on": []},
                {"id": "t-max-age", "name": "Reuses max-age", "kind": "optimal", "depends_on": ["t-none"]},
                {"id": "t-stale", "name": "Must not reuse | stale", "kind": None, "depends_on": ["t-max-age"]},
                {"id": "t-browser", "name": "Browsers only", "kind": "required", "browser_only": True},
            ],
        },
        {
            "id": "stale",
            "name": "Serving Stale",
            "tests": [
                {"id": "s-close", "name": "Serves stale on close?", "kind": "check", "depends_on": ["t-max-age"]},
                {"id": "s-must", "name": "Must not serve stale", "kind": "required", "depends_on": ["s-close"]},
                {"id": "s-setup", "name": "Setup fails", "kind": "optimal"},
                {"id": "s-retry", "name": "Retried", "kind": "required"},
                {"id": "s-abort", "name": "Timed out", "kind": "required"},
                {"id": "s-missing", "name": "Never run", "kind": "required"},
                {"id": "s-opt", "name": "Optimal only", "kind": "optimal"},
            ],
        },
    ],
}

RESULTS = """{
  "gone-test": true,
  "s-abort": ["AbortError", "This operation was aborted"],
  "s-close": ["TypeError", "fetch failed"],
  "s-must": true,
  "s-opt": ["Assertion", "Response 2 does not come from cache"],
  "s-retry": ["Setup", "retry"],
  "s-setup": ["Setup", "Response 1 status is 502, not 200"],
  "t-max-age": true,
  "t-none": true,
  "t-stale": ["Assertion", "Response 2 comes from cache"]
}"""


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(CATALOGUE), "utf-8")
    return load_catalogue(path)


@pytest.fixture
def results(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "results.json"
    path.write_text(RESULTS, "utf-8")
    return load_results(path)


def table_rows(markdown: str) -> dict[str, list[str]]:
    """A rendered table as cells by the text of the first column."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| "):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def test_the_catalogue_leaves_out_browser_only_tests_and_reads_no_kind_as_required(catalogue: Catalogue) -> None:
    tests = catalogue.tests()
    assert "t-browser" not in tests
    assert catalogue.total() == 10
    assert tests["t-stale"].kind == "required"
    assert tests["s-must"].depends_on == ("s-close",)
    assert (catalogue.version, catalogue.commit[:7]) == ("0.4.5", "b55b8bd")


def test_a_test_passes_only_when_its_result_is_true(catalogue: Catalogue, results: dict[str, object]) -> None:
    summary = summarise(catalogue, results)
    assert (summary.total.passed, summary.total.total) == (3, 10)
    assert {group: str(score) for group, score in summary.groups.items()} == {"fresh": "2/3", "stale": "1/7"}
    assert {kind: str(score) for kind, score in summary.kinds.items()} == {
        "required": "1/5",
        "optimal": "1/3",
        "check": "1/2",
    }
    assert {group: str(score) for group, score in summary.required_by_group.items()} == {
        "fresh": "0/1",
        "stale": "1/4",
    }
    assert summary.unknown == ["gone-test"]


def test_verdicts_follow_the_suite_including_dependencies(catalogue: Catalogue, results: dict[str, object]) -> None:
    summary = summarise(catalogue, results)
    assert dict(summary.verdicts) == {
        "yes": 1,
        "pass": 1,
        "fail": 1,
        "no": 1,
        "dependency_fail": 1,  # s-must passed, but s-close, on which it depends, did not
        "setup_fail": 1,
        "retry": 1,
        "harness_fail": 1,
        "untested": 1,
        "optional_fail": 1,
    }
    failures = {failure.id: failure for failure in summary.failures}
    assert list(failures) == ["t-stale", "s-close", "s-setup", "s-retry", "s-abort", "s-missing", "s-opt"]
    assert failures["t-stale"].verdict == "fail"
    assert failures["t-stale"].message == "Assertion: Response 2 comes from cache"
    assert failures["s-missing"].message == "no result"
    assert failures["s-setup"].name == "Setup fails"


def test_the_summary_gives_totals_groups_and_each_failure(catalogue: Catalogue, results: dict[str, object]) -> None:
    summary = summarise(catalogue, results)
    text = render_summary(catalogue, summary, "no-cache", "python -m offload_bench.passthrough")
    assert "**Passed 3/10** (required 1/5, optimal 1/3, check 1/2)." in text
    assert "version 0.4.5 b55b8bda3dbb, 10 tests" in text
    assert "gone-test" in text
    groups = table_rows(text)
    assert groups["fresh"] == ["Freshness", "2/3", "0/1"]
    assert groups["t-stale"][:2] == ["required", "⛔️ fail"]
    assert groups["t-stale"][2] == "Must not reuse \\| stale"  # a pipe in a name would split the cell
    assert groups["s-retry"][1] == "↻ retry"
    short = render_summary(catalogue, summary, "no-cache", failures=False)
    assert "Not passed" not in short and "t-stale" not in short


def test_the_table_compares_groups_with_the_peers_at_hand(catalogue: Catalogue, results: dict[str, object]) -> None:
    squid = {"t-none": True, "t-max-age": True, "t-stale": True, "s-close": True}
    table = table_rows(conformance_table(catalogue, results, "offload", {"Squid": squid, "no cache": {}}))
    header = table["group"]
    assert header[:2] == ["offload", "Squid"] and header[-1] == "no cache"
    assert table["Freshness"][:2] == ["2/3", "3"]
    assert table["Freshness"][2] == "-"  # no results file for that peer
    assert table["Serving Stale"][:2] == ["1/7", "1"]
    assert table["**total** (of 10)"][:2] == ["3/10", "4"]
    assert table["**total** (of 10)"][-1] == "0"
    assert table["**required** (of 5)"][:2] == ["1/5", "1"]
    published = dict(zip(header, table["published total"], strict=True))
    assert published["Squid"] == "262" and published["no cache"] == "121" and published["offload"] == ""
    best = dict(zip(header, table["published required"], strict=True))
    assert best["Apache httpd"] == "141/160"


def test_peers_come_from_the_suites_results_folder(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "varnish.json").write_text('{"t-none": true}', "utf-8")
    found = peer_results(tmp_path, {"t-none": False})
    assert found["Varnish"] == {"t-none": True}
    assert found["Squid"] is None
    assert found["no cache"] == {"t-none": False}
    assert all(value is None for value in peer_results(None, None).values())


def test_output_that_is_not_results_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("Running freshness-none\n", "utf-8")
    with pytest.raises(ValueError, match="not the JSON"):
        load_results(path)
    path.write_text("[1, 2]", "utf-8")
    with pytest.raises(ValueError, match="holds a list"):
        load_results(path)


def test_the_report_command_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "catalogue.json").write_text(json.dumps(CATALOGUE), "utf-8")
    (tmp_path / "results.json").write_text(RESULTS, "utf-8")
    assert conformance_report.main([str(tmp_path / "results.json"), "--suite-dir", str(tmp_path)]) == 0
    assert table_rows(capsys.readouterr().out)["Freshness"][0] == "2/3"


def test_the_proxy_command_template_is_filled_and_split() -> None:
    command = conformance.proxy_command(
        "varnishd -a 127.0.0.1:{port} -b {upstream_host}:{upstream_port} --origin '{upstream}'",
        "http://127.0.0.1:8000",
        9000,
    )
    assert command[1:] == ["-a", "127.0.0.1:9000", "-b", "127.0.0.1:8000", "--origin", "http://127.0.0.1:8000"]
    with pytest.raises(HarnessError, match="may use"):
        conformance.proxy_command("proxy {origin}", "http://127.0.0.1:8000", 9000)


def test_the_suite_directory_must_be_set_and_installed(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"git clone https://github\.com/http-tests/cache-tests"):
        conformance.suite_directory("")
    (tmp_path / "package.json").write_text('{"name": "http-cache-tests"}', "utf-8")
    with pytest.raises(HarnessError, match="npm install"):
        conformance.suite_directory(str(tmp_path))


def test_the_pass_through_proxy_drops_hop_by_hop_fields() -> None:
    fields = [
        ("Connection", "keep-alive, a"),
        ("a", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Cache-Control", "max-age=1"),
        ("Set-Cookie", "x=1"),
        ("Set-Cookie", "y=2"),
    ]
    kept = [("Cache-Control", "max-age=1"), ("Set-Cookie", "x=1"), ("Set-Cookie", "y=2")]
    assert passthrough.end_to_end(fields) == kept
    assert not passthrough.has_body("HEAD", 200)
    assert not passthrough.has_body("GET", 304)
    assert passthrough.has_body("GET", 999)
