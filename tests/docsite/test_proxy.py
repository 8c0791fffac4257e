"""docs/PROXY.md as printed: offload proxy, and offload.proxy_app under uvicorn with its workers, in front of a server.

The upstream is a static file server (``python -m http.server``) on a port of
the test's own, in place of the page's ``127.0.0.1:8080``.
"""

from __future__ import annotations

from pathlib import Path

from tests.examples import ROOT, Document, example, fetched_then_stored, file_server_upstream

PROXY = Document(ROOT / "docs" / "PROXY.md")


def test_offload_proxy(tmp_path: Path) -> None:
    with example(tmp_path) as ex:
        file_server_upstream(ex)
        ex.addresses["0.0.0.0:8000"] = f"127.0.0.1:{ex.port}"
        install, proxy = PROXY.block("offload proxy --upstream http://127.0.0.1:8080").commands()
        assert install.startswith('pip install -e "/path/to/offload[proxy]"')  # installed already
        ex.start(ex.substituted(proxy))
        fetched_then_stored(ex)


def test_proxy_app_under_uvicorn_with_its_workers(tmp_path: Path, redis_url: str) -> None:
    with example(tmp_path) as ex:
        file_server_upstream(ex)
        ex.addresses["redis://localhost:6379/0"] = redis_url
        ex.write(PROXY.block("# myproxy.py"))
        ex.shell(PROXY.block("uvicorn myproxy:app --no-server-header --no-date-header"))
        fetched_then_stored(ex)
