"""Which package may import which: one direction between the parts of ``metallica``.

The bench and the lab both use what they share, ``metallica.load``, and never each other;
``metallica.load`` knows neither of them, nor the CLI; nothing imports the CLI but
``python -m metallica``. Each rule is a row of :data:`RULES`: to add one, add a row.

Imports are read from the source (AST) of every module under ``src/metallica``, without
importing anything, wherever they stand: at the top, under ``if TYPE_CHECKING``, and inside
function bodies (an import deferred to a call is still a dependency, one that only shows late).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

import metallica

SOURCE = Path(metallica.__file__).parent


@dataclass(frozen=True)
class Rule:
    """No module of ``importer`` imports ``forbidden`` or anything in it, for ``reason``.

    A package or a module on either side stands for itself and everything below it. A module
    inside ``forbidden`` is never held to the rule (a package may import itself), nor are the
    modules named in ``exempt``.
    """

    importer: str
    forbidden: str
    reason: str
    exempt: tuple[str, ...] = ()

    def holds(self, importer: str) -> bool:
        return (
            _within(importer, self.importer)
            and not _within(importer, self.forbidden)
            and importer not in self.exempt
        )

    def __str__(self) -> str:
        but = f" (but {', '.join(self.exempt)})" if self.exempt else ""
        return f"{self.importer}{but} imports no {self.forbidden}: {self.reason}"


SHARED = "the bench and the lab share metallica.load, and never import each other"
SERVICES = ("metallica.protools", "metallica.password_generator", "metallica.mail_sender")
SERVES = "the web layer serves the services: each hands it its routes, document and checks"
STORES = "the storage stores for the services: it knows none of them, nor HTTP"
BENEATH = "metallica.load is what the bench and the lab share: it stands beneath both"

# One row a rule: importer, forbidden, reason (and the importer's modules it spares, if any).
# A new rule is a new row: the tests below run each row, and check that its modules exist.
RULES = (
    Rule("metallica.bench", "metallica.lab", SHARED),
    Rule("metallica.lab", "metallica.bench", SHARED),
    Rule("metallica.load", "metallica.bench", BENEATH),
    Rule("metallica.load", "metallica.lab", BENEATH),
    Rule("metallica.load", "metallica.cli", "the CLI drives the bench and the lab, never the load"),
    *(Rule("metallica.web", service, SERVES) for service in SERVICES),
    *(Rule("metallica.storage", above, STORES) for above in (*SERVICES, "metallica.web")),
    Rule(
        "metallica",
        "metallica.cli",
        "the CLI is the top: only `python -m metallica` starts it, nothing builds on it",
        exempt=("metallica.__main__",),
    ),
)


# The modules that import no other module of metallica at all (pure data, or the bottom).
LEAVES = ("metallica.config",)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


def _within(module: str, package: str) -> bool:
    """Whether ``module`` is ``package`` or below it (``metallica.client`` is not in
    ``metallica.cli``)."""
    return module == package or module.startswith(f"{package}.")


def _modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` (the ``metallica`` package) by its dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules(SOURCE)


def imports_of(module: str, source: str, *, package: bool, known: Iterable[str]) -> list[Import]:
    """Every import in ``source`` (the text of ``module``, a package's ``__init__`` if
    ``package``), function bodies included, resolved to the modules it names: ``from a import b``
    is ``a.b`` when that is one of the ``known`` modules, ``a`` otherwise."""
    modules = set(known)
    here = module if package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append(
                    Import(module, candidate if candidate in modules else base, node.lineno)
                )
    return sorted(set(found), key=lambda i: (i.line, i.imported))


def all_imports() -> list[Import]:
    return [
        found
        for module, path in MODULES.items()
        for found in imports_of(
            module, path.read_text(), package=path.name == "__init__.py", known=MODULES
        )
    ]


IMPORTS = all_imports()


def broken(rule: Rule, imports: Iterable[Import]) -> list[str]:
    """One line per import that breaks ``rule``: the importing module, the imported one, the
    rule."""
    return [
        f"{found}: breaks {rule}"
        for found in imports
        if rule.holds(found.importer) and _within(found.imported, rule.forbidden)
    ]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: f"{rule.importer}-x-{rule.forbidden}")
def test_no_module_imports_what_a_rule_forbids(rule: Rule) -> None:
    found = broken(rule, IMPORTS)
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: f"{rule.importer}-x-{rule.forbidden}")
def test_every_rule_names_modules_that_exist(rule: Rule) -> None:
    # A misspelt row would hold of nothing, and pass for ever.
    for name in (rule.importer, rule.forbidden, *rule.exempt):
        assert name in MODULES, f"{rule}: no module {name}"


@pytest.mark.parametrize("leaf", LEAVES)
def test_a_leaf_imports_nothing_of_metallica(leaf: str) -> None:
    assert leaf in MODULES
    found = [str(i) for i in IMPORTS if i.importer == leaf and _within(i.imported, "metallica")]
    assert found == [], "\n".join(found)


def package_of(module: str) -> str:
    """``metallica.protools.http``: metallica.protools; ``metallica.stack``: itself."""
    return ".".join(module.split(".")[:2])


def cycles(imports: Iterable[Import]) -> list[str]:
    """Each cycle of imports between the packages (and top-level modules) of ``metallica``,
    once, as ``a -> b -> a`` with the smallest name first."""
    graph: dict[str, set[str]] = {}
    for found in imports:
        if found.imported in MODULES or found.imported.startswith("metallica."):
            source, target = package_of(found.importer), package_of(found.imported)
            if target.startswith("metallica") and source != target:
                graph.setdefault(source, set()).add(target)
    loops = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for following in sorted(graph.get(node, ())):
                if following == start:
                    loops.append(" -> ".join([*path, start]))
                elif following not in path and following > start:
                    stack.append((following, [*path, following]))
    return loops


def test_no_cycle_between_packages() -> None:
    found = cycles(IMPORTS)
    assert found == [], "import cycles between packages:\n" + "\n".join(found)


# --- guarding the guard ------------------------------------------------------------------------


def _rule(importer: str, forbidden: str) -> Rule:
    (found,) = (r for r in RULES if (r.importer, r.forbidden) == (importer, forbidden))
    return found


def test_the_walk_reads_every_module_and_the_imports_inside_functions() -> None:
    edges = {(found.importer, found.imported) for found in IMPORTS}
    assert ("metallica.__main__", "metallica.cli") in edges
    # `from metallica.load import checker` names the module, not only the package.
    assert ("metallica.bench.runner", "metallica.load.checker") in edges
    # Imports inside function bodies: the CLI imports the bench only when a command runs.
    assert ("metallica.cli.bench", "metallica.bench.runner") in edges
    assert ("metallica.bench.runner", "metallica.client") in edges


def test_a_wrong_way_import_fails_with_the_modules_and_the_rule() -> None:
    source = (
        "from __future__ import annotations\n"
        "import metallica.cli\n"
        "def later() -> None:\n"
        "    from ..bench import runner\n"
        "    from . import checker\n"
        "    from metallica.client import format_table\n"
    )
    known = {*MODULES, "metallica.load.wrong"}
    found = imports_of("metallica.load.wrong", source, package=False, known=known)
    assert [str(i) for i in found] == [
        "metallica.load.wrong (line 1) imports __future__",
        "metallica.load.wrong (line 2) imports metallica.cli",
        "metallica.load.wrong (line 4) imports metallica.bench.runner",
        "metallica.load.wrong (line 5) imports metallica.load.checker",
        "metallica.load.wrong (line 6) imports metallica.client",
    ]
    load_bench = _rule("metallica.load", "metallica.bench")
    messages = {message for rule in RULES for message in broken(rule, found)}
    assert messages == {
        f"metallica.load.wrong (line 4) imports metallica.bench.runner: breaks {load_bench}",
        "metallica.load.wrong (line 2) imports metallica.cli: breaks "
        f"{_rule('metallica.load', 'metallica.cli')}",
        "metallica.load.wrong (line 2) imports metallica.cli: breaks "
        f"{_rule('metallica', 'metallica.cli')}",
    }
    assert str(load_bench) == (
        "metallica.load imports no metallica.bench: metallica.load is what the bench and the lab"
        " share: it stands beneath both"
    )


def test_a_cycle_is_found_and_named_once() -> None:
    looped = [
        Import("metallica.web.app", "metallica.protools.http", 1),
        Import("metallica.protools.http", "metallica.web.app", 2),
        Import("metallica.protools.http", "metallica.errors", 3),
    ]
    assert cycles(looped) == ["metallica.protools -> metallica.web -> metallica.protools"]


def test_the_cli_and_its_entry_point_may_import_the_cli() -> None:
    rule = _rule("metallica", "metallica.cli")
    assert not rule.holds("metallica.cli")
    assert not rule.holds("metallica.__main__")
    assert rule.holds("metallica.client")
    assert rule.holds("metallica.web.app")
