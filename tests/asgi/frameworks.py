"""The real apps under test, and how to load each one fresh on a backend of the test's choosing."""

from __future__ import annotations

import importlib
from typing import Any

from offload.importer import find_offloader, replayer_for
from offload.worker import Worker

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
