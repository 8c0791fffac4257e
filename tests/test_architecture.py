"""The shape of the package, checked: one direction of dependency, no cycles, no shared private names.

The core decides with the backend and queue objects it is given; adapters,
integrations, the command line and the servers depend on it, never the
reverse (STYLE.md). The import graph counts every import, function-level
ones included, as grimp builds it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "offload"

#: Modules that sit at the edge: nothing below them may import them.
EDGE = (
    "offload.adapters",
    "offload.middleware",
    "offload.wsgi",
    "offload.asgi",
    "offload.integrations",
    "offload.contrib",
    "offload.cli",
    "offload.serving",
    "offload.served",
    "offload.demo",
    "offload.dashboard",
    "offload.proxy",
)

#: The core and what it is made of: the decision, its rules, its records and the storage contract.
CORE = (
    "offload.core",
    "offload.keys",
    "offload.records",
    "offload.settings",
    "offload.freshness",
    "offload.delivery",
    "offload.storable",
    "offload.local",
    "offload.events",
    "offload.waiting",
    "offload.admission",
    "offload.backends",
    "offload.errors",
)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("offload", include_external_packages=False, exclude_type_checking_imports=True)


def test_the_import_graph_has_no_cycle(graph: grimp.ImportGraph) -> None:
    cycles = sorted(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(imported, module)
    )
    assert cycles == [], f"import cycles: {cycles}"


def members(graph: grimp.ImportGraph, names: tuple[str, ...]) -> list[str]:
    """The modules of the graph that are, or are inside, one of ``names``."""
    return sorted(m for m in graph.modules if any(m == name or m.startswith(name + ".") for name in names))


def test_the_core_never_imports_the_edge(graph: grimp.ImportGraph) -> None:
    upward = [
        (low, high)
        for low in members(graph, CORE)
        for high in members(graph, EDGE)
        if graph.chain_exists(importer=low, imported=high)
    ]
    assert upward == [], f"the core reaches up to the edge: {upward}"


def test_importing_offload_imports_no_backend_integration_or_server() -> None:
    code = "import sys, offload; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    heavy = [
        name
        for name in loaded
        if (
            name.startswith(("offload.backends.", "offload.integrations", "offload.contrib", "offload.dashboard"))
            and name != "offload.backends.base"
        )
        or name.split(".")[0] in ("gunicorn", "uvicorn", "redis", "psycopg", "pymemcache", "rq", "celery", "httpx")
    ]
    assert heavy == [], f"import offload loads {heavy}"


def test_no_module_imports_a_private_name_of_another() -> None:
    found = []
    for path in SOURCE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("offload"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                found += [
                    f"{path.relative_to(SOURCE)}: {node.module}.{name}" for name in private if not name.endswith("__")
                ]
    assert found == [], f"private names imported across modules: {found}"
