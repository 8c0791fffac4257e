"""A project as ``startproject`` makes it, with offload added: the app, the middleware first, and ``OFFLOAD``.

``REPORTS_CALLS_LOG`` is the file each view appends a line to when it runs;
``REPORTS_OFFLOAD`` holds the ``OFFLOAD`` setting as JSON, so that one test
can try a variant (Django's cache as offload's cache, a wrong option).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
WORK_DIR = Path(os.environ.get("REPORTS_WORK_DIR", BASE_DIR))

SECRET_KEY = "reports-site-for-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "offload.contrib.django",
    "reports",
]

MIDDLEWARE = [
    "offload.contrib.django.OffloadMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(WORK_DIR / "db.sqlite3")}}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(WORK_DIR / "cache")}
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

OFFLOAD = json.loads(os.environ.get("REPORTS_OFFLOAD", "{}")) or {
    "url": f"sqlite:///{WORK_DIR / 'offload.sqlite3'}",
    "paths": ["/reports/*"],
    "client_path": "/_offload/offload.js",
}

REPORTS_CALLS_LOG = os.environ.get("REPORTS_CALLS_LOG")
