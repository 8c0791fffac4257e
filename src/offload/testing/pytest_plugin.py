"""offload's pytest plugin (registered by installing offload): :mod:`offload.testing` as fixtures.

::

    def test_report(offload_eager):
        offload = offload_eager(app)
        assert client.get("/report").status_code == 200
        assert len(offload.jobs) == 1

Each fixture is a function of the app (none for a Django project) that
returns its :class:`~offload.testing.Recorder`; the app gets its own backend
back when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from offload.testing import Recorder, eager, recording


@pytest.fixture
def offload_eager() -> Iterator[Callable[..., Recorder]]:
    """``offload_eager(app)``: the app's offloaded jobs run inline; a miss answers as a worker made it."""
    with ExitStack() as stack:

        def install(app: Any = None) -> Recorder:
            return stack.enter_context(eager(app))

        yield install


@pytest.fixture
def offload_recording() -> Iterator[Callable[..., Recorder]]:
    """``offload_recording(app)``: the app's jobs are recorded and wait for ``recorder.run_jobs()``."""
    with ExitStack() as stack:

        def install(app: Any = None) -> Recorder:
            return stack.enter_context(recording(app))

        yield install
