"""Django under ASGI: wrap the handler in the project's ``asgi.py``.

A whole project in one module for the tests; in a real project only the last
lines belong in ``asgi.py``. Serve it with
``offload serve tests.asgi.apps.django_app:application``.
"""

from __future__ import annotations

import asyncio
import os

from django.conf import settings

if not settings.configured:
    settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="only-for-tests", USE_TZ=True)

from django.core.asgi import get_asgi_application  # after the settings above
from django.http import HttpRequest, HttpResponse
from django.urls import path

from offload import ASGIMiddleware


async def report(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0.2)  # stands for the slow part
    name = request.GET.get("name", "world")
    return HttpResponse(f"hello {name}, computed by process {os.getpid()}", content_type="text/plain")


urlpatterns = [path("report", report)]

# asgi.py
application = ASGIMiddleware(get_asgi_application(), ttl=600)
