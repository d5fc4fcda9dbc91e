"""No module of the product draws from the process-wide ``random`` generator.

The global generator is shared with everything else in the process: a program embedding
Metallica may seed it, and hypothesis (the fuzz tests run protools in a thread of the test
process) checks that nothing draws from it while a strategy draws, and fails the case when
something does. A background task jittering a retry at that moment made the schemathesis run
fail once in CI. Each module that needs randomness owns a ``random.Random()``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import metallica

SOURCE = Path(metallica.__file__).parent
# The functions of the module that use its hidden global instance.
GLOBAL_DRAWS = {
    "betavariate",
    "choice",
    "choices",
    "expovariate",
    "gauss",
    "getrandbits",
    "lognormvariate",
    "normalvariate",
    "paretovariate",
    "randbytes",
    "randint",
    "random",
    "randrange",
    "sample",
    "seed",
    "setstate",
    "shuffle",
    "triangular",
    "uniform",
    "vonmisesvariate",
    "weibullvariate",
}


def global_draws(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            found += [
                f"line {node.lineno}: from random import {a.name}"
                for a in node.names
                if a.name in GLOBAL_DRAWS
            ]
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr in GLOBAL_DRAWS
        ):
            found.append(f"line {node.lineno}: random.{node.attr}")
    return found


def test_the_checker_sees_a_global_draw() -> None:
    assert global_draws(ast.parse("import random\nx = random.uniform(0, 1)\n")) == [
        "line 2: random.uniform"
    ]
    assert global_draws(ast.parse("from random import random\n")) == [
        "line 1: from random import random"
    ]
    assert global_draws(ast.parse("import random\nr = random.Random()\nr.uniform(0, 1)\n")) == []


def test_no_module_draws_from_the_global_generator() -> None:
    offenders = {
        str(path.relative_to(SOURCE)): draws
        for path in sorted(SOURCE.rglob("*.py"))
        if (draws := global_draws(ast.parse(path.read_text(), filename=str(path))))
    }
    assert offenders == {}
