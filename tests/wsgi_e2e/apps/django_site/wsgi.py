"""The Django project's WSGI entry point, wrapped the documented way."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

import offload
from tests.wsgi_e2e.apps.common import middleware_options

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wsgi_e2e.apps.django_site.settings")

application = offload.WSGIMiddleware(get_wsgi_application(), **middleware_options())
