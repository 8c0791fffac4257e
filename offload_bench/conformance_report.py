"""Scores of an HTTP caching test suite run, and the Markdown table of docs/CONFORMANCE.md.

Usage::

    python -m offload_bench.conformance_report RESULTS.json [--catalogue CATALOGUE.json]
        [--suite-dir DIR] [--no-cache NO_CACHE_RESULTS.json] [--label offload]

``RESULTS.json`` is what the suite's CLI prints (github.com/http-tests/cache-tests):
one member per test id, ``true`` when the test passed, else ``[error name,
message]``. The catalogue (written by ``python -m offload_bench.conformance``
next to the results) says which group, kind and dependencies each test has,
since the results alone do not. With ``--suite-dir`` (default
``$CACHE_TESTS_DIR``) the table also gives, group by group, the figures of the
caches whose results the suite publishes in its ``results/`` folder.

How a test counts, and why:

* **passed** means the result is ``true``. That is how the published totals
  are counted (Squid 262, Apache httpd 257, Varnish 218 of 365; they are the
  number of ``true`` results in the suite's ``results/*.json``), so our figure
  compares with theirs.
* **kind** is the suite's own: ``required`` (or no kind) is conformance,
  ``optimal`` is what a good cache does though the specification does not
  require it, ``check`` only records a behaviour.
* **verdict** is what cache-tests.fyi displays, the suite's
  ``determineTestResult``: it also marks a test whose dependency did not pass
  (``depends_on``), and tells setup failures and retries apart. The failing
  list gives it, so a failure caused by another one is easy to spot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Results as the suite's CLI writes them: ``true`` or ``[error name, message]`` per test id.
Results = Mapping[str, Any]

KINDS = ("required", "optimal", "check")
#: The suite's verdicts (test-engine/lib/results.mjs) and the symbol its README uses for each.
SYMBOLS = {
    "pass": "✅",
    "fail": "⛔️",
    "optional_fail": "⚠️",
    "yes": "Y",
    "no": "N",
    "setup_fail": "🔹",
    "harness_fail": "⁉️",
    "dependency_fail": "⚪️",
    "retry": "↻",
    "untested": "-",
}
PASSING_VERDICTS = frozenset({"pass", "yes"})


@dataclass(frozen=True)
class Peer:
    """A cache the table compares against: its published total, and its results file in the suite if any."""

    label: str
    published: int
    results_file: str | None


#: The figures published at cache-tests.fyi we compare against (tests passed of 365).
PEERS = (
    Peer("Squid", 262, "squid.json"),
    Peer("Apache Traffic Server", 262, "trafficserver.json"),
    Peer("Apache httpd", 257, "apache.json"),
    Peer("Varnish", 218, "varnish.json"),
    Peer("nginx", 202, "nginx.json"),
    Peer("HAProxy", 200, "haproxy.json"),
    Peer("no cache", 121, None),
)
#: The best published score on the required tests.
BEST_REQUIRED = ("Apache httpd", 141, 160)


@dataclass(frozen=True)
class Test:
    """One test of the suite, as its catalogue describes it."""

    id: str
    name: str
    group: str
    kind: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """One of the suite's test files (a spec topic, such as ``cc-freshness``), in the suite's order."""

    id: str
    name: str
    tests: tuple[Test, ...]


@dataclass(frozen=True)
class Catalogue:
    """The tests a run covers, grouped as the suite groups them, and which suite version that is."""

    groups: tuple[Group, ...]
    version: str = ""
    commit: str = ""

    def tests(self) -> dict[str, Test]:
        return {test.id: test for group in self.groups for test in group.tests}

    def total(self) -> int:
        return sum(len(group.tests) for group in self.groups)


def parse_catalogue(data: Mapping[str, Any]) -> Catalogue:
    """Build a catalogue from its JSON form, leaving out the browser-only tests the CLI never runs."""
    groups = []
    for raw_group in data["groups"]:
        tests = tuple(
            Test(
                id=raw["id"],
                name=raw.get("name", ""),
                group=raw_group["id"],
                kind=raw.get("kind") or "required",
                depends_on=tuple(raw.get("depends_on") or ()),
            )
            for raw in raw_group["tests"]
            if not raw.get("browser_only")
        )
        groups.append(Group(raw_group["id"], raw_group.get("name", raw_group["id"]), tests))
    suite = data.get("suite", {})
    return Catalogue(tuple(groups), suite.get("version", ""), suite.get("commit", ""))


def load_catalogue(path: Path) -> Catalogue:
    return parse_catalogue(json.loads(path.read_text("utf-8")))


def load_results(path: Path) -> dict[str, Any]:
    """The results a CLI run printed; a run that printed anything else is reported as such."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not the JSON the suite's CLI prints: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not an object of test results")
    return data


def passed(result: Any) -> bool:
    return result is True


def verdict(test_id: str, tests: Mapping[str, Test], results: Results) -> str:
    """The suite's verdict for one test, as cache-tests.fyi shows it (``determineTestResult``)."""
    if test_id not in results:
        return "untested"
    result = results[test_id]
    test = tests.get(test_id)
    for dependency in test.depends_on if test else ():
        if dependency in tests and verdict(dependency, tests, results) not in PASSING_VERDICTS:
            return "dependency_fail"
    error = result[0] if isinstance(result, list) and result else None
    if error == "Setup":
        return "retry" if len(result) > 1 and result[1] == "retry" else "setup_fail"
    if error == "AbortError":
        return "harness_fail"
    kind = test.kind if test else "required"
    if kind == "check":
        return "yes" if passed(result) else "no"
    if passed(result):
        return "pass"
    return "optional_fail" if kind == "optimal" else "fail"


@dataclass(frozen=True)
class Score:
    passed: int
    total: int

    def __str__(self) -> str:
        return f"{self.passed}/{self.total}"


@dataclass(frozen=True)
class Failure:
    """A test whose result is not ``true``: what the suite calls it and why it failed."""

    id: str
    name: str
    group: str
    kind: str
    verdict: str
    message: str


@dataclass
class Summary:
    """The scores of one run against one catalogue."""

    total: Score
    groups: dict[str, Score]
    required_by_group: dict[str, Score]
    kinds: dict[str, Score]
    verdicts: Counter[str]
    failures: list[Failure] = field(default_factory=list)
    #: Ids in the results the catalogue does not know (a results file from another suite version).
    unknown: list[str] = field(default_factory=list)


def score(tests: Iterable[Test], results: Results) -> Score:
    chosen = list(tests)
    return Score(sum(passed(results.get(test.id)) for test in chosen), len(chosen))


def message_of(result: Any) -> str:
    if isinstance(result, list):
        return ": ".join(str(part) for part in result if part)
    return "no result" if result is None else str(result)


def summarise(catalogue: Catalogue, results: Results) -> Summary:
    """Count the passes per group and per kind, the verdicts, and list the failures in the suite's order."""
    tests = catalogue.tests()
    everything = list(tests.values())
    summary = Summary(
        total=score(everything, results),
        groups={group.id: score(group.tests, results) for group in catalogue.groups},
        required_by_group={
            group.id: score((test for test in group.tests if test.kind == "required"), results)
            for group in catalogue.groups
        },
        kinds={kind: score((test for test in everything if test.kind == kind), results) for kind in KINDS},
        verdicts=Counter(verdict(test.id, tests, results) for test in everything),
        unknown=sorted(set(results) - set(tests)),
    )
    for test in everything:
        result = results.get(test.id)
        if not passed(result):
            summary.failures.append(
                Failure(test.id, test.name, test.group, test.kind, verdict(test.id, tests, results), message_of(result))
            )
    return summary


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table with aligned columns, readable in a terminal too."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[n]) for line in lines) for n in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("| " + " | ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(out)


def one_line(text: str, limit: int = 160) -> str:
    """Text fit for a table cell: one line, no pipe, at most ``limit`` characters."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render_summary(
    catalogue: Catalogue, summary: Summary, label: str, command: str = "", *, failures: bool = True
) -> str:
    """The summary of one run in Markdown: totals, kinds, verdicts, groups, then (if asked) every failing test."""
    suite = " ".join(filter(None, [catalogue.version and f"version {catalogue.version}", catalogue.commit[:12]]))
    lines = [
        f"# HTTP caching tests: {label}",
        "",
        f"Suite: http-tests/cache-tests {suite or '(version unknown)'}, {catalogue.total()} tests.",
        "",
        *([f"System under test: `{command}`", ""] if command else []),
        f"**Passed {summary.total}** (" + ", ".join(f"{kind} {summary.kinds[kind]}" for kind in KINDS) + ").",
        "",
        "Verdicts as cache-tests.fyi shows them: "
        + ", ".join(f"{SYMBOLS[name]} {name} {count}" for name, count in sorted(summary.verdicts.items())),
        "",
    ]
    if summary.unknown:
        lines += [f"Results for tests the catalogue does not list: {', '.join(summary.unknown)}", ""]
    names = {group.id: group.name for group in catalogue.groups}
    lines.append(
        markdown_table(
            ("group", "name", "passed", "required passed"),
            ((gid, names[gid], str(summary.groups[gid]), str(summary.required_by_group[gid])) for gid in names),
        )
    )
    if not failures:
        return "\n".join(lines) + "\n"
    lines += ["", f"## Not passed ({len(summary.failures)})", ""]
    lines.append(
        markdown_table(
            ("test id", "kind", "verdict", "name", "result"),
            (
                (f.id, f.kind, f"{SYMBOLS[f.verdict]} {f.verdict}", one_line(f.name), one_line(f.message))
                for f in summary.failures
            ),
        )
    )
    return "\n".join(lines) + "\n"


def peer_results(suite_dir: Path | None, no_cache: Results | None) -> dict[str, Results | None]:
    """Each peer's results: the suite's ``results/`` files, and our own no-cache run for "no cache"."""
    found: dict[str, Results | None] = {}
    for peer in PEERS:
        if peer.results_file is None:
            found[peer.label] = no_cache
            continue
        path = suite_dir / "results" / peer.results_file if suite_dir else None
        found[peer.label] = load_results(path) if path and path.is_file() else None
    return found


def conformance_table(
    catalogue: Catalogue, results: Results, label: str = "offload", peers: Mapping[str, Results | None] | None = None
) -> str:
    """The table of docs/CONFORMANCE.md: passes per group for us and for each peer, then totals.

    A peer cell is empty when the peer's results are not at hand. The last rows
    give the totals published at cache-tests.fyi: a results file may come from
    a slightly different run of the suite than the published figure.
    """
    peers = peers or {}
    labels = [peer.label for peer in PEERS]
    columns: list[Results | None] = [results, *(peers.get(name) for name in labels)]

    def cells(tests: Sequence[Test]) -> list[str]:
        """Ours as passed/total, the peers as passed only: the totals are the same for all."""
        out = []
        for index, column in enumerate(columns):
            if column is None:
                out.append("-")
            else:
                found = score(tests, column)
                out.append(str(found) if index == 0 else str(found.passed))
        return out

    everything = list(catalogue.tests().values())
    required = [test for test in everything if test.kind == "required"]
    rows = [[group.name, *cells(group.tests)] for group in catalogue.groups]
    rows.append([f"**total** (of {len(everything)})", *cells(everything)])
    rows.append([f"**required** (of {len(required)})", *cells(required)])
    published = {peer.label: str(peer.published) for peer in PEERS}
    rows.append(["published total", "", *(published[name] for name in labels)])
    best, best_passed, best_total = BEST_REQUIRED
    rows.append(["published required", "", *(f"{best_passed}/{best_total}" if n == best else "" for n in labels)])
    return markdown_table(("group", label, *labels), rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m offload_bench.conformance_report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("results", type=Path, help="the JSON the suite's CLI printed")
    parser.add_argument("--catalogue", type=Path, help="the catalogue (default: catalogue.json beside the results)")
    parser.add_argument(
        "--suite-dir",
        type=Path,
        default=Path(os.environ["CACHE_TESTS_DIR"]) if os.environ.get("CACHE_TESTS_DIR") else None,
        help="the suite's checkout, for the peers' results (default: $CACHE_TESTS_DIR)",
    )
    parser.add_argument("--no-cache", type=Path, help="results of a --no-cache run, for the 'no cache' column")
    parser.add_argument("--label", default="offload", help="the column of these results (default: %(default)s)")
    parser.add_argument("--summary", action="store_true", help="print the full summary instead of the table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalogue = load_catalogue(args.catalogue or args.results.with_name("catalogue.json"))
    results = load_results(args.results)
    if args.summary:
        print(render_summary(catalogue, summarise(catalogue, results), args.label), end="")
        return 0
    no_cache = load_results(args.no_cache) if args.no_cache else None
    print(conformance_table(catalogue, results, args.label, peer_results(args.suite_dir, no_cache)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
