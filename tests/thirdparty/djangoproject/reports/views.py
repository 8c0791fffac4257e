"""The views of the reports site: a slow report, and the kinds of page a cache must be careful with.

Each view appends ``<view> <pid>`` to the file named by ``REPORTS_CALLS_LOG``
when it runs, so the tests can count how often the app computed a page.
"""

from __future__ import annotations

import os
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import get_language_from_request
from django.views.decorators.cache import cache_control
from django.views.decorators.vary import vary_on_headers

GREETINGS = {"en": "Hello", "fr": "Bonjour", "de": "Hallo"}


def record(view: str) -> None:
    if settings.REPORTS_CALLS_LOG:
        with open(settings.REPORTS_CALLS_LOG, "a", encoding="utf-8") as log:
            log.write(f"{view} {os.getpid()}\n")


def report(request: HttpRequest) -> JsonResponse:
    """The yearly report: slow-ish, the page offload is for."""
    record("report")
    year = int(request.GET.get("year", "2024"))
    time.sleep(0.3)  # stands for the slow queries
    months = [{"month": month, "sales": (year * 31 + month * 17) % 1000} for month in range(1, 13)]
    return JsonResponse({"year": year, "months": months, "total": sum(row["sales"] for row in months)})


def export_form(request: HttpRequest) -> HttpResponse:
    """A form with ``{% csrf_token %}``: sets a ``csrftoken`` cookie for a client that has none."""
    record("export")
    return render(request, "reports/export.html")


@vary_on_headers("Accept-Language")
def greeting(request: HttpRequest) -> HttpResponse:
    """A greeting in the client's language."""
    record("greeting")
    return HttpResponse(f"{GREETINGS[get_language_from_request(request)]}\n", content_type="text/plain; charset=utf-8")


def boom(request: HttpRequest) -> HttpResponse:
    """A report whose backend is down: Django answers 500."""
    record("boom")
    raise RuntimeError("the reporting database is unreachable")


@cache_control(private=True)
def account(request: HttpRequest) -> HttpResponse:
    """A page for the visitor alone."""
    record("account")
    return HttpResponse("your account\n", content_type="text/plain; charset=utf-8")


def visit(request: HttpRequest) -> HttpResponse:
    """Counts the visitor's visits in the session: sets a ``sessionid`` cookie for a new visitor."""
    record("visit")
    visits = request.session.get("visits", 0) + 1
    request.session["visits"] = visits
    return HttpResponse(f"visit number {visits}\n", content_type="text/plain; charset=utf-8")
