"""offload.contrib.starlette with a FastAPI app (a mounted Starlette app in it), under uvicorn and offload worker."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.examples import Example, example, wait_for

FASTAPI = """
import os

from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from offload.contrib.starlette import Offload, no_offload, offload


def ran(name):
    with open(os.environ["CALLS"], "a") as log:
        log.write(name + "\\n")


app = FastAPI()
extension = Offload(app, url="sqlite:///" + os.path.join(os.getcwd(), "offload.sqlite3"), paths=["/exports/*"])
router = APIRouter()


@app.get("/report")
@offload
async def report(year: int = 2024) -> dict[str, int]:
    ran("report")
    return {"year": year}


@app.get("/plain")
async def plain() -> str:
    ran("plain")
    return "plain"


@app.get("/exports/live")
@no_offload
async def live() -> str:
    ran("live")
    return "live"


@app.get("/exports/{name}")
async def export(name: str) -> str:
    ran("export")
    return name


@router.get("/items")
@offload
def items() -> list[int]:  # a sync endpoint, in a router
    ran("items")
    return [1, 2]


@offload
async def mounted(request):
    ran("mounted")
    return PlainTextResponse("mounted")


app.include_router(router, prefix="/api")
app.mount("/legacy", Starlette(routes=[Route("/report", mounted), Route("/plain", mounted)]))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    directory = tmp_path_factory.mktemp("fastapi")
    (directory / "main.py").write_text(FASTAPI)
    with example(directory) as ex:
        ex.env["CALLS"] = str(directory / "calls.log")
        ex.start("uvicorn main:app")
        ex.start("offload worker main:app")
        wait_for(ex.listening, 60, "uvicorn")
        yield ex


def runs(ex: Example, view: str) -> int:
    log = ex.directory / "calls.log"
    return log.read_text().splitlines().count(view) if log.exists() else 0


def test_marked_routes_and_listed_paths_are_offloaded(site: Example) -> None:
    for target, body in [
        ("/report?year=2023", {"year": 2023}),
        ("/api/items", [1, 2]),
        ("/exports/q3", "q3"),
        ("/legacy/report", None),
    ]:
        assert site.get(target).status == 202, target
        answer = site.poll(target)
        assert answer.status == 200, target
        if body is not None:
            assert json.loads(answer.body) == body
    assert site.get("/legacy/report").body == b"mounted", "a route of a mounted app, found through the mount"
    assert (runs(site, "report"), runs(site, "items"), runs(site, "export"), runs(site, "mounted")) == (1, 1, 1, 1)


def test_other_routes_are_the_apps_at_once(site: Example) -> None:
    for target in ("/plain", "/exports/live", "/openapi.json"):
        assert site.get(target).status == 200, target
    assert site.get("/legacy/plain").status == 202, "the same endpoint, marked, under another path"
    assert site.get("/nowhere").status == 404


def test_the_extension_expires_the_apps_answers(site: Example) -> None:
    site.poll("/report?year=2022")
    done = site.run("python -c 'from main import extension; print(extension.expire(\"/report\"))'")
    assert done.stdout.strip() != "0", done.stderr
    assert site.get("/report?year=2022").status == 202
