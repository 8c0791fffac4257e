"""Fixtures of the integration tests: where handlers count their runs, and the Flask app of a stack.

The servers (``redis_url``, ``memcached``, ``broker_url``...) come from
``tests/conftest.py``; ``tests/servers.py`` says where they are found.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def count_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where handlers count their executions, for this process and the workers it starts."""
    monkeypatch.setenv("OFFLOAD_TEST_COUNT_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def make_app() -> Iterator[Any]:
    """Build the Flask app for a stack; its connections are closed after the test."""
    from tests.integrations import flask_app

    built: list[Any] = []

    def make(stack: dict[str, str]) -> Any:
        app, _ = flask_app.create_app(stack)
        built.append(app)
        return app

    yield make
    for app in built:
        flask_app.shutdown(app)
