"""The pure modules stay pure: no database driver, HTTP client or web framework, even indirectly.

Imports are read from the source (AST), following every ``metallica`` module the pure module
imports at load time. Imports inside function bodies run only when the function is called
(``metallica.storage.open_database`` picks its backend that way), so they are not followed.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PURE = (
    "metallica.protools.engine",
    "metallica.protools.password_workflow",
    "metallica.password_generator.domain",
    "metallica.password_generator.sealing",
    "metallica.mail_sender.domain",
    "metallica.problems",
    "metallica.fingerprints",
    "metallica.overload.limits",
    "metallica.overload.breaker",
    "metallica.overload.budget",
    "metallica.overload.rates",
    "metallica.protools.flow",
    "metallica.tracing",
)
FORBIDDEN = {
    "sqlite3",
    "psycopg",
    "psycopg_pool",
    "httpx",
    "aiohttp",
    "starlette",
    "uvicorn",
    "orjson",
}


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    assert spec.origin is not None, module
    return Path(spec.origin)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if _source(module).name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _load_time_imports(module: str) -> set[str]:
    """Modules imported when ``module`` loads: top level, classes, ``if``/``try`` blocks."""
    tree = ast.parse(_source(module).read_text(), filename=str(_source(module)))
    found: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            found.add(base)
            # ``from package import submodule`` imports the submodule too.
            if base.split(".")[0] == "metallica" and _source(base).name == "__init__.py":
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    if importlib.util.find_spec(candidate) is not None:
                        found.add(candidate)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return found


def _closure(module: str) -> dict[str, str]:
    """Every module reachable from ``module``, each with the metallica module that imports it."""
    parts = module.split(".")
    queue = [".".join(parts[:depth]) for depth in range(1, len(parts) + 1)]  # packages load too
    seen: dict[str, str] = dict.fromkeys(queue, "<root>")
    while queue:
        current = queue.pop()
        for imported in _load_time_imports(current):
            parents = imported.split(".")
            # importing a.b.c loads a and a.b first
            for depth in range(1, len(parents) + 1):
                name = ".".join(parents[:depth])
                if name in seen:
                    continue
                seen[name] = current
                if name.split(".")[0] == "metallica":
                    queue.append(name)
    return seen


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_package(module: str) -> None:
    reached = _closure(module)
    offenders = {
        name: importer for name, importer in reached.items() if name.split(".")[0] in FORBIDDEN
    }
    assert offenders == {}, f"{module} reaches I/O packages (name: imported by): {offenders}"


def test_the_walk_sees_through_metallica_modules() -> None:
    # Guards the guard: the same walk does find the I/O packages of an I/O module.
    reached = _closure("metallica.protools.http")
    assert {"starlette", "aiohttp"} <= {name.split(".")[0] for name in reached}
    assert "metallica.protools.engine" in _closure("metallica.protools.store")


@pytest.mark.parametrize("module", PURE)
def test_the_domain_never_imports_storage_or_the_web_layer(module: str) -> None:
    reached = _closure(module)
    layers = {"metallica.storage", "metallica.protools.store", "metallica.web"}
    offenders = {name for name in reached if name in layers or name.startswith("metallica.web.")}
    assert offenders == set(), f"{module} reaches {offenders}"


@pytest.mark.parametrize("module", PURE)
def test_importing_a_pure_module_loads_no_io_package(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"loaded = {{name.split('.')[0] for name in sys.modules}}\n"
        f"print(' '.join(sorted(loaded & {FORBIDDEN!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == ""
