"""WSGI entry point of the reports site, its slow pages computed by offload workers.

Run it with ``gunicorn mysite.wsgi`` and ``offload worker mysite.wsgi:application``;
the backend is the one ``OFFLOAD_URL`` names. A report that fails is
tried twice, and its error served for 2 seconds only, so that clients
soon ask again and a new attempt runs.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

import offload

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = offload.WSGIMiddleware(
    get_wsgi_application(), url=os.environ.get("OFFLOAD_URL"), ttl=600, error_ttl=2, max_attempts=2
)
