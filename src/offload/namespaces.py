"""The default namespace of an app: a name derived from the app object itself.

Two apps that share a store (two projects started in one folder on the
default SQLite file, two services on one Redis) must never meet: each
namespace has its own answers, jobs, indexes and expiries. An app that sets
no ``namespace`` gets one derived from what it *is*, not from how a command
line named it, so that the web process that wraps ``myapp.app.wsgi_app`` and
``offload worker myapp:app`` given the bare app land in the same namespace:

* a bound method stands for its object (Flask's ``app.wsgi_app`` is the Flask app);
* a Flask or Quart app is named by its ``import_name`` (the ``Flask(__name__)`` argument);
* a Django handler by its settings module (``DJANGO_SETTINGS_MODULE``);
* a Starlette or FastAPI router by the modules of its endpoints;
* a function or class by its module and qualified name; any other object by its class.

Renaming the app (its module, its function, its settings module) therefore
starts a fresh cache; set ``namespace`` to keep one across renames.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from offload.backends import DEFAULT_NAMESPACE

#: Modules of frameworks and servers: naming an app after them would make every app of that framework one.
FRAMEWORKS = ("flask", "quart", "django", "starlette", "fastapi", "werkzeug", "offload", "asgiref", "builtins")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def namespace_for(app: Any) -> str:
    """The namespace an app gets when it names none.

    >>> def report_app(environ, start_response): ...
    >>> namespace_for(report_app)
    'offload-namespaces-report_app'
    """
    name = app_name(app)
    if not name:
        return DEFAULT_NAMESPACE
    safe = _UNSAFE.sub("-", name).strip("-") or DEFAULT_NAMESPACE
    if len(safe) > 64:
        safe = safe[:51] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return safe


def app_name(app: Any, depth: int = 0) -> str:
    """A stable dotted name for what ``app`` is, or an empty string when nothing identifies it."""
    if app is None or depth > 8:
        return ""
    owner = getattr(app, "__self__", None)
    if owner is not None and not isinstance(owner, type(sys)):  # a bound method: its object is the app
        return app_name(owner, depth + 1)
    inner = getattr(app, "func", None)  # functools.partial
    if inner is not None and callable(inner) and hasattr(app, "args"):
        return app_name(inner, depth + 1)
    import_name = getattr(app, "import_name", None)
    if isinstance(import_name, str) and import_name:  # Flask, Quart
        return _main_as_module(import_name)
    module = getattr(type(app), "__module__", "") or ""
    if module.startswith("django."):
        return _django_settings_module()
    if hasattr(app, "__qualname__") and hasattr(app, "__module__"):  # a function or a class
        return f"{_main_as_module(str(app.__module__))}.{app.__qualname__}"
    endpoints = _endpoint_modules(app, depth)
    if endpoints:
        return endpoints
    if not module.startswith(FRAMEWORKS):
        return f"{module}.{type(app).__qualname__}"
    for attribute in ("app", "router", "application"):  # a framework's wrapper: what it wraps
        inner = getattr(app, attribute, None)
        if inner is not None and inner is not app:
            found = app_name(inner, depth + 1)
            if found:
                return found
    return ""


def _main_as_module(name: str) -> str:
    """``__main__`` named as the module it would be when imported (``python myapp.py`` is ``myapp``)."""
    if name != "__main__":
        return name
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(path).stem if path else name


def _django_settings_module() -> str:
    settings = sys.modules.get("django.conf")
    if settings is None:
        return ""
    try:
        module = settings.settings.SETTINGS_MODULE
    except Exception:  # settings not configured: nothing identifies the project
        return ""
    return str(module or "")


def _endpoint_modules(app: Any, depth: int) -> str:
    """For a Starlette or FastAPI router (or an app holding one), the user modules its endpoints live in."""
    routes = getattr(app, "routes", None)
    if not isinstance(routes, list):
        return ""
    modules = set()
    for route in routes:
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        module = getattr(endpoint, "__module__", None)
        if isinstance(module, str) and not module.startswith(FRAMEWORKS):
            modules.add(module)
    return ".".join(sorted(modules)[:3])
