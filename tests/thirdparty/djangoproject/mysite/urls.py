"""URL configuration of the reports site."""

from __future__ import annotations

from django.urls import path
from reports import views

urlpatterns = [
    path("report", views.report),
    path("export", views.export_form),
    path("greeting", views.greeting),
    path("boom", views.boom),
    path("account", views.account),
    path("visit", views.visit),
]
