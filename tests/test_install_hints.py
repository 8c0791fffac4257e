"""What offload tells people to install works today: an extra from a checkout, never a package PyPI does not have.

offload is not on PyPI yet, so ``pip install "offload[metrics]"`` finds nothing
(or someone else's package). Errors for a missing optional library name the
extra and the checkout to install it from; the README and the docs say the same.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import metadata

from tests.examples import ROOT

#: Hides the optional libraries, then prints the message of each error that asks for one.
MISSING = """
import sys

for name in ("prometheus_client", "opentelemetry"):
    sys.modules[name] = None  # import fails, as when the library is not installed

import offload
import offload.metrics
import offload.tracing
from offload.errors import MissingDependency

middleware = offload.WSGIMiddleware(lambda environ, start_response: [], url="memory://install-hints")
for needs in (offload.metrics.wsgi_app, lambda: offload.tracing.install(middleware)):
    try:
        needs()
    except MissingDependency as error:
        print(error)
"""

#: A suggestion to install offload from PyPI.
FROM_PYPI = re.compile(r"pip install \"?offload\[")


def extras() -> set[str]:
    return set(metadata("offload").get_all("Provides-Extra") or [])


def test_metrics_and_tracing_name_the_extra_and_the_checkout_to_install_it_from() -> None:
    done = subprocess.run([sys.executable, "-c", MISSING], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        f'metrics need prometheus_client: pip install -e "{ROOT}[metrics]"',
        f'tracing needs opentelemetry-api: pip install -e "{ROOT}[otel]"',
    ], done.stdout
    assert {"metrics", "otel"} <= extras()


def test_the_readme_and_the_docs_install_extras_from_a_checkout() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text("utf-8")
        assert not FROM_PYPI.search(text), f"{page.relative_to(ROOT)} says to install offload from PyPI"
        for extra in re.findall(r'pip install -e "/path/to/offload\[(\w+)\]"', text):
            assert extra in extras(), f"{page.relative_to(ROOT)}: offload has no extra {extra!r}"
