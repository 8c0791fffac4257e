"""Views of the Django test project; each records its execution in the shared log."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from tests.wsgi_e2e.apps.common import BINARY, record


def _record(request: HttpRequest) -> None:
    record("start", request.method or "", request.path, request.META.get("QUERY_STRING", ""))


def hello(request: HttpRequest) -> HttpResponse:
    _record(request)
    response = HttpResponse(f"hello {request.GET.get('name', 'world')} from django", content_type="text/plain")
    response["X-App"] = "django"
    return response


def binary(request: HttpRequest) -> HttpResponse:
    _record(request)
    response = HttpResponse(BINARY, content_type="application/octet-stream")
    response.set_cookie("first", "1")
    response["X-Between"] = "yes"
    response.set_cookie("second", "2", httponly=True)
    return response


def echo(request: HttpRequest) -> HttpResponse:
    _record(request)
    return HttpResponse(repr((request.method, request.body)), status=201 if request.method == "POST" else 200)
