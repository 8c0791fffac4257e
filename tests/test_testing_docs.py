"""docs/TESTING.md as printed: each example test file run with pytest (or Django's runner) against the README's apps.

The fixtures come from offload's pytest plugin. Where offload is installed
with its entry point the plugin loads by itself; where it is imported from a
checkout without one, ``PYTEST_ADDOPTS`` loads it, so the commands stay as printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.examples import ROOT, Block, Document, Example, claimed_markers, example

README = Document(ROOT / "README.md")
TESTING = Document(ROOT / "docs" / "TESTING.md")
PLUGIN = "offload.testing.pytest_plugin"


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Example]:
    with example(tmp_path) as made:
        if not any(point.value == PLUGIN for point in entry_points(group="pytest11")):
            made.env["PYTEST_ADDOPTS"] = f"-p {PLUGIN}"
        yield made


def test_every_code_block_is_run() -> None:
    claimed = claimed_markers("tests/test_testing_docs.py", "TESTING")
    for block in TESTING.blocks:
        assert any(marker in block.text for marker in claimed), f"TESTING.md line {block.line} is not run"


def run(ex: Example, block: Block) -> str:
    done = ex.run(block.commands()[0])
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_flask(ex: Example) -> None:
    ex.write(README.block("from offload.contrib.flask import Offload, offload"))
    ex.write(TESTING.block("# test_myapp.py"))
    assert "3 passed" in run(ex, TESTING.block("python -m pytest test_myapp.py"))
    ex.write(TESTING.block("# check_report.py"))
    assert run(ex, TESTING.block("python check_report.py")).strip() == "ok"
    assert not (ex.directory / "offload.sqlite3").exists(), "the tests never touched the app's own backend"


def test_django(ex: Example) -> None:
    ex.shell(README.block("django-admin startproject mysite ."))
    for marker in ("# mysite/settings.py (add at the end)", "# mysite/views.py", "# mysite/urls.py"):
        ex.write(README.block(marker))
    ex.write(TESTING.block("# mysite/tests.py"))
    output = run(ex, TESTING.block("python manage.py test mysite"))
    assert "Ran 1 test" in output and "OK" in output


def test_fastapi(ex: Example) -> None:
    ex.write(README.block("from fastapi import FastAPI"))
    ex.write(TESTING.block("# test_main.py"))
    assert "1 passed" in run(ex, TESTING.block("python -m pytest test_main.py"))
