"""The package's shape: small modules and functions (issue 13's limits), checked here so
that a change that breaks them fails the suite, not only a review."""

from __future__ import annotations

import ast
from pathlib import Path

import reactorpy

PACKAGE = Path(reactorpy.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "examples" not in p.parts)


def test_no_module_is_over_500_lines():
    """Every module of the package (examples aside) has at most 500 lines."""
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in MODULES
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert {} == long


def test_no_function_is_over_100_lines():
    """Every function and method of the package has at most 100 lines."""
    long = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > 100:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
    assert {} == long
