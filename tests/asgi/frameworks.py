"""The real apps under test, and how to load each one fresh on a backend of the test's choosing."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from offload.importer import find_offloader
from offload.replay import replayer_for
from offload.worker import Worker

ROOT = Path(__file__).resolve().parents[2]

#: Name -> (module, attribute): the documented examples in tests/asgi/apps.
APPS = {
    "plain": ("tests.asgi.apps.plain", "app"),
    "fastapi": ("tests.asgi.apps.fastapi_app", "app"),
    "starlette": ("tests.asgi.apps.starlette_app", "app"),
    "quart": ("tests.asgi.apps.quart_app", "app"),
    "django": ("tests.asgi.apps.django_app", "application"),
}

#: What each app's lifespan (or lack of one) puts before the name in its answer.
GREETING = "hello"


def spec(name: str) -> str:
    """The ``MODULE:ATTR`` string of an app, as given to ``offload worker`` and uvicorn."""
    module, attribute = APPS[name]
    return f"{module}:{attribute}"


def load_fresh(name: str) -> Any:
    """Import (or re-import) an app's module, so its middleware reads the current ``OFFLOAD_URL``."""
    module_name, attribute = APPS[name]
    module = importlib.reload(importlib.import_module(module_name))
    return getattr(module, attribute)


def run_jobs(app: Any) -> int:
    """Run every queued job through ``app`` in this process, as ``offload worker --burst`` would."""
    offloader = find_offloader(app)
    assert offloader is not None, "the app carries no offload middleware"
    worker = Worker(offloader, replayer_for(app), burst=True, claim_wait=0.05)
    worker.run(install_signals=False)
    return worker.jobs_done


#: Set in a child interpreter that runs one test on its own.
ISOLATED = "OFFLOAD_TEST_ISOLATED"


def needs_own_process(name: str) -> bool:
    """Django's settings are global to a process: its in-process cases run in a child interpreter.

    So they neither depend on nor disturb the Django settings of other tests
    in the same run.
    """
    return name == "django" and not os.environ.get(ISOLATED)


def run_in_own_process(nodeid: str) -> None:
    """Run one test (a pytest node id) in a fresh interpreter and fail if it fails."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid]
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, ISOLATED: "1"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{nodeid} failed in its own process:\n{result.stdout}\n{result.stderr}"
