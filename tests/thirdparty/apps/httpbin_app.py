"""httpbin (the Flask app from PyPI) wrapped in offload's WSGI middleware, on the backend named by ``OFFLOAD_URL``.

The bare app is served as ``httpbin:app``; this one as
``tests.thirdparty.apps.httpbin_app:app``, and ``offload worker`` replays its jobs.
"""

from __future__ import annotations

import os

from httpbin import app as httpbin

import offload

app = offload.WSGIMiddleware(httpbin, url=os.environ.get("OFFLOAD_URL"))
