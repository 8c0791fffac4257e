from __future__ import annotations

from django.urls import include, path
from reports import views

urlpatterns = [
    path("report", views.report),
    path("plain", views.plain),
    path("reports/live", views.live),
    path("reports/<str:name>", views.by_pattern),
    path("cookies", views.cookies),
    path("class-report", views.ClassReport.as_view()),
    path("marked-as-view", views.marked_as_view),
    path("sub/", include("reports.urls")),
]
