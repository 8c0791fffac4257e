"""A Flask app wrapped the documented way: ``app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app)``."""

from __future__ import annotations

import io
from datetime import datetime, timezone

from flask import Flask, Response, request, send_file

import offload
from tests.wsgi_e2e.apps.common import BINARY, middleware_options, record

app = Flask(__name__)


@app.before_request
def count() -> None:
    record("start", request.method, request.path, request.query_string.decode("latin-1"))


@app.get("/hello")
def hello() -> Response:
    name = request.args.get("name", "world")
    response = Response(f"hello {name} from flask", content_type="text/plain; charset=utf-8")
    response.headers["X-App"] = "flask"
    return response


@app.get("/binary")
def binary() -> Response:
    response = Response(BINARY, content_type="application/octet-stream")
    response.set_cookie("first", "1")
    response.headers["X-Between"] = "yes"
    response.set_cookie("second", "2", httponly=True)
    return response


@app.get("/download")
def download() -> Response:
    """A file download: answers Range and conditional requests (206, 304) as Flask does."""
    modified = datetime(2024, 1, 1, tzinfo=timezone.utc)
    data = io.BytesIO(BINARY)
    return send_file(data, "application/octet-stream", download_name="data.bin", etag="v1", last_modified=modified)


@app.route("/echo", methods=["GET", "POST"])
def echo() -> Response:
    return Response(repr((request.method, request.get_data())), status=201 if request.method == "POST" else 200)


app.wsgi_app = offload.WSGIMiddleware(app.wsgi_app, **middleware_options())  # type: ignore[method-assign]
