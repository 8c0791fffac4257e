"""Telling ASGI apps from WSGI ones, and finding the middleware inside a framework's app."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from offload.asgi import ASGIMiddleware
from offload.importer import find_offloader
from offload.replay import is_asgi
from offload.wsgi import WSGIMiddleware
from tests.asgi.frameworks import needs_own_process, run_in_own_process


def _django_asgi() -> Any:
    importlib.import_module("tests.asgi.apps.django_app")  # configures Django unless a test did already
    from django.core.handlers.asgi import ASGIHandler

    return ASGIHandler()


def _django_wsgi() -> Any:
    importlib.import_module("tests.asgi.apps.django_app")
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


def _quart() -> Any:
    from quart import Quart

    return Quart(__name__)


def _flask() -> Any:
    from flask import Flask

    return Flask(__name__)


async def _asgi_function(scope: Any, receive: Any, send: Any) -> None:
    pass


def _wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    return []


ASGI_APPS: dict[str, Callable[[], Any]] = {
    "fastapi": lambda: importlib.import_module("fastapi").FastAPI(),
    "starlette": lambda: importlib.import_module("starlette.applications").Starlette(),
    "quart": _quart,
    "quart asgi_app": lambda: _quart().asgi_app,
    "django": _django_asgi,
    "function": lambda: _asgi_function,
    "sync callable returning an awaitable": lambda: lambda scope, receive, send: _asgi_function(scope, receive, send),
    "middleware": lambda: ASGIMiddleware(_asgi_function, url="memory://detect"),
}

WSGI_APPS: dict[str, Callable[[], Any]] = {
    "flask": _flask,
    "flask wsgi_app": lambda: _flask().wsgi_app,
    "django": _django_wsgi,
    "function": lambda: _wsgi_function,
    "middleware": lambda: WSGIMiddleware(_wsgi_function, url="memory://detect"),
    "a class": lambda: ASGIMiddleware,
}


@pytest.mark.parametrize("name", sorted(ASGI_APPS))
def test_asgi_apps_are_detected(name: str, request: pytest.FixtureRequest) -> None:
    if needs_own_process(name):
        run_in_own_process(request.node.nodeid)
        return
    assert is_asgi(ASGI_APPS[name]()) is True


@pytest.mark.parametrize("name", sorted(WSGI_APPS))
def test_wsgi_apps_are_not_taken_for_asgi(name: str, request: pytest.FixtureRequest) -> None:
    if needs_own_process(name):
        run_in_own_process(request.node.nodeid)
        return
    assert is_asgi(WSGI_APPS[name]()) is False


def test_the_middleware_added_to_a_fastapi_app_is_found_and_serves_the_replays() -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(ASGIMiddleware, url=f"memory://{uuid.uuid4().hex}", worker_threads=0)
    assert app.middleware_stack is None, "Starlette builds its stack on the first request"
    offloader = find_offloader(app)
    assert offloader is not None
    stack: Any = app.middleware_stack
    chain = []
    while stack is not None and len(chain) < 20:
        chain.append(stack)
        stack = getattr(stack, "app", None)
    assert any(getattr(layer, "offloader", None) is offloader for layer in chain), "the very instance the app runs"


def test_a_starlette_app_without_offload_is_left_as_it_is() -> None:
    from starlette.applications import Starlette

    app = Starlette()
    assert find_offloader(app) is None
    assert app.middleware_stack is None


def test_a_quart_app_wrapped_through_asgi_app_is_found() -> None:
    app = _quart()
    middleware = ASGIMiddleware(app.asgi_app, url=f"memory://{uuid.uuid4().hex}")
    app.asgi_app = middleware  # type: ignore[method-assign]
    assert find_offloader(app) is middleware.offloader
