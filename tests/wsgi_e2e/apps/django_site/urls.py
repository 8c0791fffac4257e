"""The URLconf of the Django test project."""

from __future__ import annotations

from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from tests.wsgi_e2e.apps.django_site import views

urlpatterns = [
    path("hello", views.hello),
    path("binary", views.binary),
    path("echo", csrf_exempt(views.echo)),
]
