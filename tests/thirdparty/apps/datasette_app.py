"""Datasette (the ASGI app from PyPI) over the SQLite file ``DATASETTE_DATABASE``, bare and wrapped in offload.

The bare app is served as ``tests.thirdparty.apps.datasette_app:bare``, the
wrapped one as ``...:app`` on the backend named by ``OFFLOAD_URL``, and
``offload worker`` replays its jobs. Both run with the same settings: time
limits generous enough that a busy machine cannot make one side time out a
facet the other computed, and a fixed secret.
"""

from __future__ import annotations

import os
import sys

from datasette.app import Datasette

import offload

# Datasette 0.65 prints each handled exception with rich when rich is installed (twine, in the
# test extra, brings it), and under uvicorn that call raises outside an except block: a 404 would
# be a 500. Both sides of every comparison are this module's app, so both go without it. (Its
# module is changed once Datasette has registered it as a plugin: importing it first breaks that.)
sys.modules["datasette.handle_exception"].rich = None  # type: ignore[attr-defined]

datasette = Datasette(
    [os.environ["DATASETTE_DATABASE"]],
    settings={"sql_time_limit_ms": 20_000, "facet_time_limit_ms": 20_000, "facet_suggest_time_limit_ms": 20_000},
    secret="thirdparty-tests-secret",
)
bare = datasette.app()
app = offload.ASGIMiddleware(bare, url=os.environ.get("OFFLOAD_URL"))
