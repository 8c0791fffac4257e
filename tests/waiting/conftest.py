"""The waiting tests' deployments: tests/waiting/site.py served on every protocol and backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployments import COMBINATIONS, Site, combination_id, deployed, run

__all__ = ["run", "site"]


@pytest.fixture(scope="module", params=COMBINATIONS, ids=combination_id)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with deployed(request, tmp_path_factory, "tests.waiting.site", web_processes=2) as served:
        yield served
