"""docs/PROXY.md as printed: offload proxy, and offload.proxy_app under uvicorn with its workers, in front of a server.

The upstream is a static file server (``python -m http.server``) on a port of
the test's own, in place of the page's ``127.0.0.1:8080``.
"""

from __future__ import annotations

from pathlib import Path

from tests.examples import ROOT, Document, Example, example, wait_for
from tests.servers import free_port

PROXY = Document(ROOT / "docs" / "PROXY.md")


def upstream(ex: Example) -> None:
    """A file server where the page's upstream is, serving hello.txt."""
    (ex.directory / "hello.txt").write_text("hello from upstream\n", encoding="utf-8")
    port = free_port()
    ex.start(f"python -m http.server {port} --bind 127.0.0.1")
    wait_for(lambda: ex.listening(port), 30, "the upstream")
    ex.addresses["127.0.0.1:8080"] = f"127.0.0.1:{port}"


def fetched_then_stored(ex: Example) -> None:
    """A miss waits for the one fetch of its key; the next request is served from the store."""
    wait_for(ex.listening, 60, f"the proxy\n{ex.logs()}")
    first = ex.get("/hello.txt")
    assert (first.status, first.body) == (200, b"hello from upstream\n"), (first, ex.logs())
    (ex.directory / "hello.txt").write_text("changed\n", encoding="utf-8")
    again = ex.get("/hello.txt")  # Last-Modified gives a heuristic lifetime
    assert (again.status, again.body) == (200, b"hello from upstream\n"), again
    assert "hit" in (again.header("Cache-Status") or ""), again.headers
    assert again.header("Age") is not None


def test_offload_proxy(tmp_path: Path) -> None:
    with example(tmp_path) as ex:
        upstream(ex)
        ex.addresses["0.0.0.0:8000"] = f"127.0.0.1:{ex.port}"
        install, proxy = PROXY.block("offload proxy --upstream http://127.0.0.1:8080").commands()
        assert install.startswith('pip install -e "/path/to/offload[proxy]"')  # installed already
        ex.start(ex.substituted(proxy))
        fetched_then_stored(ex)


def test_proxy_app_under_uvicorn_with_its_workers(tmp_path: Path, redis_url: str) -> None:
    with example(tmp_path) as ex:
        upstream(ex)
        ex.addresses["redis://localhost:6379/0"] = redis_url
        ex.write(PROXY.block("# myproxy.py"))
        ex.shell(PROXY.block("uvicorn myproxy:app --no-server-header --no-date-header"))
        fetched_then_stored(ex)
