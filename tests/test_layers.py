"""Imports point down only: services → projections → events, and inside services in the order
its docstring draws. Read from the source with ``ast``, lazy imports inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

LAYERS = [
    "events",
    "projections",
    "services.errors services.settings services.auth services.redis_server services.logs",
    "services.redis_clients",
    "services.streams",
    "services.media",
    "services.web",
    "services.bench",
    "services.cli services.worker_pool",
]
"""Bottom first. A module may import its own layer's modules and any layer below it."""

RANK = {prefix: rank for rank, names in enumerate(LAYERS) for prefix in names.split()}
OURS = ("events", "projections", "services")


def layer_of(module: str) -> str:
    """The longest prefix of ``module`` that names a layer."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in RANK:
            return prefix
    raise LookupError(f"{module} is in no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, importer: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module of ours that ``importer``'s ``source`` imports, with the line."""
    found = []
    package = importer if is_package else importer.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            # `from services.web import pages` imports services.web.pages
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in OURS]


def sources() -> list[Path]:
    """Every module of ours but ``services/__init__.py``, a map of the layers that imports none."""
    top = REPO / "services" / "__init__.py"
    return sorted(path for name in OURS for path in (REPO / name).rglob("*.py") if path != top)


def test_the_services_package_itself_imports_nothing() -> None:
    assert imports_in(REPO / "services" / "__init__.py") == []


def imports_in(path: Path) -> list[tuple[int, str]]:
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def wrong_imports(source: str, importer: str, shown: str) -> list[str]:
    own = layer_of(importer)
    wrong = []
    for line, imported in imports_of(source, importer):
        try:
            target = layer_of(imported)
        except LookupError:  # `from services import x` where x is a module: take its layer
            target = layer_of(imported.rsplit(".", 1)[0])
        if RANK[target] > RANK[own]:
            wrong.append(f"{shown}:{line}: {own} imports {imported} ({target})")
    return wrong


def test_every_module_is_in_a_layer() -> None:
    for path in sources():
        layer_of(module_name(path))


@pytest.mark.parametrize("top", OURS)
def test_no_module_imports_from_a_layer_above_it(top: str) -> None:
    wrong = [
        line
        for path in sources()
        if path.relative_to(REPO).parts[0] == top
        for line in wrong_imports(path.read_text(), module_name(path), str(path.relative_to(REPO)))
    ]

    assert wrong == []


def test_events_imports_nothing_of_ours_but_events() -> None:
    imported = {
        name.split(".")[0]
        for path in (REPO / "events").rglob("*.py")
        for _, name in imports_in(path)
    }

    assert imported <= {"events"}


def test_projections_import_only_events_and_projections() -> None:
    imported = {
        name.split(".")[0]
        for path in (REPO / "projections").rglob("*.py")
        for _, name in imports_in(path)
    }

    assert imported <= {"events", "projections"}


def test_the_check_sees_an_import_from_above_even_inside_a_function() -> None:
    probe = "def f() -> None:\n    from services.web.app import create_app\n"

    assert wrong_imports(probe, "services.streams.probe", "probe.py") == [
        "probe.py:2: services.streams imports services.web.app.create_app (services.web)"
    ]


def test_the_check_sees_a_circle_between_cli_and_bench() -> None:
    probe = "from services.cli import WorkerServer\n"

    assert wrong_imports(probe, "services.bench.probe", "probe.py") == [
        "probe.py:1: services.bench imports services.cli.WorkerServer (services.cli)"
    ]
