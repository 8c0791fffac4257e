"""offload.contrib.flask with a real Flask app, served by gunicorn, its jobs run by ``flask offload worker``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples import Example, example, wait_for

APP = """
import os

from flask import Blueprint, Flask

from offload.contrib.flask import Offload, no_offload, offload

extension = Offload(ttl=120)  # defaults for every app; each app's config goes over them
shop = Blueprint("shop", __name__)


def ran(name):
    with open(os.environ["CALLS"], "a") as log:
        log.write(name + "\\n")


@shop.get("/basket")
@offload
def basket():
    ran("basket")
    return "basket"


def create_app():
    app = Flask(__name__)
    app.config.update(
        OFFLOAD_URL="sqlite:///" + os.path.join(os.getcwd(), "offload.sqlite3"),
        OFFLOAD_PATHS=["/exports/*"],
        OFFLOAD_TTL=600,
    )

    @app.get("/report")
    @offload
    def report():
        ran("report")
        return {"total": 42}

    @app.get("/plain")
    def plain():
        ran("plain")
        return "plain"

    @app.get("/exports/<name>")
    def export(name):
        ran("export")
        return "export " + name

    @app.get("/exports/live")
    @no_offload
    def live():
        ran("live")
        return "live"

    app.register_blueprint(shop, url_prefix="/shop")
    extension.init_app(app)
    return app


app = create_app()
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    directory = tmp_path_factory.mktemp("flask")
    (directory / "shopapp.py").write_text(APP)
    with example(directory) as ex:
        ex.env["CALLS"] = str(directory / "calls.log")
        ex.start("gunicorn shopapp:app --workers 2")
        ex.start("flask --app shopapp offload worker --concurrency 2")
        wait_for(ex.listening, 60, "gunicorn")
        yield ex


def runs(ex: Example, view: str) -> int:
    log = ex.directory / "calls.log"
    return log.read_text().splitlines().count(view) if log.exists() else 0


def test_marked_views_and_listed_paths_are_offloaded_the_others_are_not(site: Example) -> None:
    for target, body in [("/report", b'{"total":42}\n'), ("/shop/basket", b"basket"), ("/exports/q3", b"export q3")]:
        assert site.get(target).status == 202, target
        assert site.poll(target).body == body
    assert (runs(site, "report"), runs(site, "basket"), runs(site, "export")) == (1, 1, 1)
    for target, body in [("/plain", b"plain"), ("/exports/live", b"live")]:
        direct = site.get(target)
        assert (direct.status, direct.body) == (200, body), target
    assert site.get("/missing").status == 404, "no view: the app says so"


def test_the_config_goes_over_the_extensions_defaults(site: Example) -> None:
    site.poll("/report")
    assert "ttl=" in (site.get("/report").header("Cache-Status") or "")
    ttl = int((site.get("/report").header("Cache-Status") or "").split("ttl=")[1].split(";")[0])
    assert 120 < ttl <= 600


def test_the_flask_offload_commands(site: Example) -> None:
    site.poll("/report")
    status = site.run("flask --app shopapp offload status --json")
    assert status.returncode == 0 and json.loads(status.stdout)["cached"] >= 1, status.stderr
    expired = site.run("flask --app shopapp offload expire /report")
    assert expired.stdout.strip() == "expired 1 cached answer", expired.stderr
    assert site.get("/report").status == 202


def test_an_unknown_offload_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text(
        "from flask import Flask\nfrom offload.contrib.flask import Offload\n"
        "app = Flask(__name__)\napp.config['OFFLOAD_TLL'] = 5\nOffload(app)\n"
    )
    with example(tmp_path) as ex:
        done = ex.run("python -c 'import typo'")
    assert done.returncode != 0
    assert "unknown option(s) tll" in done.stderr and "OFFLOAD_* config" in done.stderr
