"""The examples in the docstrings of the package's private modules.

``--doctest-modules`` only finds objects that belong to the module it imports; the public
classes are re-labelled as ``reactorpy.X`` and their methods live in ``reactorpy._x``, so
their examples (``Reactor.map``, ``Reactor.recurse``, ...) would otherwise never run.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import reactorpy

PRIVATE = sorted(
    f"reactorpy.{m.name}"
    for m in pkgutil.iter_modules(reactorpy.__path__)
    if m.name.startswith("_") and m.name != "__main__"
)


def examples(module_name: str) -> list[doctest.DocTest]:
    """The examples of what `module_name` exports under the name ``reactorpy.X``, run with
    the public names in scope, as a reader of the docs would."""
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) == "reactorpy":
            globs = {**vars(module), **vars(reactorpy)}
            found += finder.find(obj, name, module=False, globs=globs)
            # The parts a public class is made of (Reactor's Composing), by its name.
            for base in getattr(obj, "__mro__", ())[1:]:
                if base.__module__.startswith("reactorpy._"):
                    for method, fn in vars(base).items():
                        if callable(fn) and fn.__doc__:
                            found += finder.find(fn, f"{name}.{method}", module=False, globs=globs)
    return [t for t in found if t.examples]


@pytest.mark.parametrize("module_name", PRIVATE)
def test_docstring_examples(module_name: str) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in examples(module_name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "\n".join(report)


def test_the_methods_examples_are_found() -> None:
    names = {t.name for t in examples("reactorpy._reactor")}
    assert {"Reactor.map", "Reactor.recurse", "Reactor.around", "Reactor.run_reversible"} <= names
