"""The smallest settings Django serves requests with: no database, no apps, no middleware."""

from __future__ import annotations

SECRET_KEY = "offload-end-to-end-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.wsgi_e2e.apps.django_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
