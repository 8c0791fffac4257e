"""Real servers and workers for the operations tests (metrics, logs, traces, the dashboard)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wsgi_e2e.conftest import Stack, running_stack

# The apps are imported by the processes that serve them, not collected as tests.
collect_ignore = ["apps"]

OPS_APP = "tests.operations.apps.ops_app:app"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as result:
        yield result


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a Prometheus exposition, by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``; -1 when there is none."""
    found = [value for (sample, have), value in samples.items() if sample == name and set(labels.items()) <= have]
    return sum(found) if found else -1.0
