"""The isolation tests' deployments: tests/isolation/site.py served on every protocol and backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployments import COMBINATIONS, Site, combination_id, deployed, run

__all__ = ["run", "site"]


@pytest.fixture(scope="module", params=COMBINATIONS, ids=combination_id)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """tests/isolation/site.py served on each protocol and backend, one deployment per module."""
    with deployed(request, tmp_path_factory, "tests.isolation.site") as served:
        yield served
