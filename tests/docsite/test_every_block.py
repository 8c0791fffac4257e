"""Every code block of every page of the docs site is run as printed by a test, or said here why not.

A test claims a block by passing a text it holds to the page's
:class:`~tests.examples.Document` (``TUTORIAL.block("# myapp.py")``); the
modules in :data:`CLAIMING` are read for those claims. ``text`` blocks
(diagrams, sample output, a command's synopsis) are not code and are left out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.examples import ROOT, Document, claims

DOCS = ROOT / "docs"

#: Every page of the site.
PAGES = sorted(DOCS.rglob("*.md"))

#: Modules whose tests claim blocks of the pages.
CLAIMING = [
    "tests/docsite/test_tutorial.py",
    "tests/docsite/test_frameworks.py",
    "tests/docsite/test_asgi.py",
    "tests/docsite/test_backends.py",
    "tests/docsite/test_proxy.py",
    "tests/docsite/test_operations.py",
    "tests/test_testing_docs.py",
]

#: Blocks no test runs, by page and a text each holds, and why.
NOT_RUN: dict[str, dict[str, str]] = {
    "tutorial.md": {
        'pip install -e "/path/to/offload[metrics]" flask': (
            "installing into a fresh virtual environment is CI's (.ci/run); the tests run in the checkout's own"
        ),
    },
    "PERFORMANCE.md": {
        "make bench": "the benchmark suite runs for minutes to half an hour and needs wrk: make bench, not the tests",
        "python -m offload_bench.scaling": "the scale-out, isolation and claim-cost benchmarks run for minutes each "
        "and print figures: benchmarks, not the tests",
    },
    "CONFORMANCE.md": {
        "make conformance": "the conformance suite needs Node.js, npm and a clone of http-tests/cache-tests; "
        "its harness is checked by tests/test_conformance_harness.py",
    },
    "RELIABILITY.md": {
        "make chaos": "the chaos harness runs for minutes (hours in long mode); "
        "tests/test_chaos.py runs its short mode, marked slow",
    },
}


def name(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_code_block_is_run_or_said_why(page: Path) -> None:
    claimed = claims(CLAIMING).get(page, set())
    excused = NOT_RUN.get(name(page), {})
    for block in Document(page).blocks:
        where = f"docs/{name(page)} line {block.line}"
        assert block.language, f"{where}: say the language (text for a diagram or an output)"
        if block.language == "text":
            continue
        assert any(marker in block.text for marker in claimed | set(excused)), (
            f"{where}: no test runs this block, and NOT_RUN does not say why:\n{block.text}"
        )
        if block.language in ("python", "html"):
            assert block.file is not None, f"{where}: a file's first line says its name"


def test_every_excuse_names_a_block_of_its_page() -> None:
    for page, excused in NOT_RUN.items():
        document = Document(DOCS / page)
        for marker in excused:
            document.block(marker)  # exactly one block holds it
