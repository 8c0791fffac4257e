"""Two apps on one store never meet: each namespace has its own answers, jobs, indexes and expiries.

Two apps that set no namespace (``shop`` and ``blog`` of tests/isolation/site.py)
are served at once on one SQLite file, one Redis database and one PostgreSQL
schema, each with its own worker. Each gets only its own answers, its worker
never runs the other's jobs, and expiring one namespace leaves the other alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest

from tests.deployments import COMBINATIONS, Site, backend_url, combination_id, serving


@pytest.fixture(scope="module", params=COMBINATIONS, ids=combination_id)
def two_sites(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    protocol, backend = request.param
    directory = tmp_path_factory.mktemp(f"namespaces-{protocol}-{backend}")
    with backend_url(request, backend, directory) as url, contextlib.ExitStack() as stack:
        shop = stack.enter_context(
            serving(Site(protocol, backend, url, directory), f"tests.isolation.site:{protocol}_app")
        )
        blog = stack.enter_context(
            serving(Site(protocol, backend, url, directory), f"tests.isolation.site:other_{protocol}_app")
        )
        yield shop, blog


def test_two_apps_on_one_store_get_their_own_answers(two_sites: tuple[Site, Site]) -> None:
    shop, blog = two_sites
    host = {"Host": "example.com"}  # the same URL on both, so only the namespace tells them apart
    assert shop.poll("/echo?page=1", host).json()["app"] == "shop"
    assert blog.get("/echo?page=1", host).status == 202, "blog was served shop's answer"
    assert blog.poll("/echo?page=1", host).json()["app"] == "blog"
    assert shop.get("/echo?page=1", host).json()["app"] == "shop"


def test_expiring_one_namespace_leaves_the_other(two_sites: tuple[Site, Site]) -> None:
    shop, blog = two_sites
    host = {"Host": "example.com"}
    shop.poll("/echo?page=2", host)
    blog.poll("/echo?page=2", host)
    status = shop.cli("status", "--url", shop.url, "--json")
    namespaces = json.loads(status.stdout)
    assert len(namespaces) == 2, namespaces  # each app named by what it is: site.shop_wsgi, site.blog_wsgi...
    shop_namespace = next(name for name in namespaces if "shop" in name)
    expired = shop.cli("expire", "/echo", "-p", "page=2", "--url", shop.url, "--namespace", shop_namespace)
    assert expired.returncode == 0 and "expired 1 cached answer" in expired.stdout, expired.stdout + expired.stderr
    assert shop.get("/echo?page=2", host).status == 202
    assert blog.get("/echo?page=2", host).status == 200
    shop.poll("/echo?page=2", host)  # computed again
    everywhere = shop.cli("expire", "/echo", "-p", "page=2", "--url", shop.url)
    assert "expired 2 cached answers" in everywhere.stdout, "without --namespace, every namespace of the store"
    assert blog.get("/echo?page=2", host).status == 202
