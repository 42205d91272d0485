"""Runs the Python code blocks of README.md and docs/ as tests, with Sybil.

A ```python block runs in its document's namespace, after the blocks above it. A block may
``await`` at top level: it runs on the document's own event loop, a
`reactorpy.testing.VirtualClockLoop`, so ``asyncio.sleep(0.3)`` takes no real time and the
loop's clock reads exactly 0.3 s later. Blocks run in a temporary directory of the
document's own (what they write lands there), and what a document defines pickles by
reference, as it would in a module. A block written as a script (``asyncio.run(main())``)
runs as a script would, on a real loop of its own. A block that starts with ``>>>`` is a
doctest. ``<!-- skip: next -->`` above a block marks it as a fragment that is not run (an
excerpt of a larger program, a file for another tool); every other block is run.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import itertools
import sys
import tempfile
import types
from typing import Any

from sybil import Example, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

from reactorpy.testing import VirtualClockLoop

# The site's own build tooling (a griffe extension, imported by mkdocs), not a test module:
# --doctest-modules would import it, and griffe is installed by the docs extra only.
collect_ignore_glob = ["docs/_ext/*"]

_RUNNER = "__reactorpy_docs_runner__"
_FOLDER = "__reactorpy_docs_folder__"


def _evaluate(example: Example) -> None:
    """Run one block; one with top-level ``await`` runs on the document's loop."""
    __tracebackhide__ = True
    source = pad(example.parsed, example.line + example.parsed.line_offset)
    code = compile(
        source, example.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    namespace: dict[str, Any] = example.namespace
    with contextlib.chdir(namespace[_FOLDER].name):  # files a block writes land there
        if code.co_flags & inspect.CO_COROUTINE:
            namespace[_RUNNER].run(eval(code, namespace))
        else:
            exec(code, namespace)
    namespace.pop("__builtins__", None)


class _Parser(PythonCodeBlockParser):
    """Sybil's Python code block parser, with `_evaluate` for plain (non-doctest) blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.codeblock_parser = self.codeblock_parser_class("python", _evaluate)


class _DocumentModule(types.ModuleType):
    """A module whose attributes are a document's namespace: what the document defines
    pickles by reference, as it would in a module of the reader's own."""

    def __init__(self, name: str, namespace: dict[str, Any]) -> None:
        super().__init__(name)
        self.__namespace = namespace

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__namespace[name]
        except KeyError:
            raise AttributeError(name) from None


_numbers = itertools.count(1)


def _setup(namespace: dict[str, Any]) -> None:
    name = f"reactorpy_docs_example_{next(_numbers)}"
    namespace["__name__"] = name
    sys.modules[name] = _DocumentModule(name, namespace)
    namespace[_RUNNER] = asyncio.Runner(loop_factory=VirtualClockLoop)
    namespace[_FOLDER] = tempfile.TemporaryDirectory(prefix="reactorpy-docs-")


def _teardown(namespace: dict[str, Any]) -> None:
    namespace[_RUNNER].close()
    namespace[_FOLDER].cleanup()
    sys.modules.pop(namespace["__name__"], None)


pytest_collect_file = Sybil(
    parsers=[_Parser(), SkipParser()],
    patterns=["*.md"],
    setup=_setup,
    teardown=_teardown,
).pytest()
