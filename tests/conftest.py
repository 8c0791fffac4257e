"""Fixtures shared by the whole suite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.behaviour import apps
from tests.behaviour.harness import Harness, WSGIHarness

#: Protocols the behaviour suite runs against; each maps to a harness factory.
HARNESSES: dict[str, Any] = {"wsgi": lambda **options: WSGIHarness(apps.wsgi_app, **options)}

try:  # the ASGI harness lives beside the ASGI tests
    from tests.asgi.harness import ASGI_HARNESS

    HARNESSES["asgi"] = ASGI_HARNESS
except ImportError:  # pragma: no cover - only while the ASGI side is absent
    pass


@pytest.fixture(autouse=True)
def _reset_app_counters() -> Iterator[None]:
    apps.calls.clear()
    apps.closed.clear()
    yield


@pytest.fixture(params=sorted(HARNESSES))
def make_harness(request: pytest.FixtureRequest) -> Any:
    """Build a harness for one protocol around the behaviour app, on a fresh in-memory backend."""
    factory = HARNESSES[request.param]

    def make(**options: Any) -> Harness:
        options.setdefault("url", f"memory://{uuid.uuid4().hex}")
        harness: Harness = factory(**options)
        return harness

    return make


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    h: Harness = make_harness()
    return h


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'offload.sqlite3'}"


@pytest.fixture(autouse=True)
def _no_ambient_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their backend; an OFFLOAD_URL in the caller's shell must not leak in."""
    monkeypatch.delenv("OFFLOAD_URL", raising=False)
    monkeypatch.delenv("OFFLOAD_APP", raising=False)


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
