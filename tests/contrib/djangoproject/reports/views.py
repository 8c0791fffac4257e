"""Views that say who ran them (a line in REPORTS_CALLS_LOG per run), marked for offload in each way there is."""

from __future__ import annotations

import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import View

from offload.contrib.django import no_offload, offload


def _ran(name: str) -> None:
    if settings.REPORTS_CALLS_LOG:
        with open(settings.REPORTS_CALLS_LOG, "a", encoding="utf-8") as log:
            log.write(f"{name} {os.getpid()}\n")


@offload
def report(request: HttpRequest) -> HttpResponse:
    _ran("report")
    return HttpResponse(f"report {request.GET.get('q', '')}", content_type="text/plain")


@offload
def cookies(request: HttpRequest) -> HttpResponse:
    _ran("cookies")
    response = HttpResponse("two cookies", content_type="text/plain")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2", httponly=True)
    return response


def plain(request: HttpRequest) -> HttpResponse:
    _ran("plain")
    return HttpResponse("plain", content_type="text/plain")


def by_pattern(request: HttpRequest, name: str) -> HttpResponse:
    _ran("by_pattern")
    return HttpResponse(f"pattern {name}", content_type="text/plain")


@no_offload
def live(request: HttpRequest) -> HttpResponse:
    _ran("live")
    return HttpResponse("live", content_type="text/plain")


@offload
class ClassReport(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        _ran("class")
        return HttpResponse("class report", content_type="text/plain")


class Unmarked(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        _ran("as_view")
        return HttpResponse("as_view report", content_type="text/plain")


marked_as_view = offload(Unmarked.as_view())
