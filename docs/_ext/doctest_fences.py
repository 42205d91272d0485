"""A griffe extension for the documentation site: the ``>>>`` examples in reactorpy's
docstrings are shown as Python console code blocks.

reactorpy's docstrings hold doctests (run by the test suite) where they explain something,
not only under an ``Examples:`` heading; Markdown would read their ``>>>`` as nested block
quotes. This wraps each run of example lines (from a ``>>>`` line to the next blank line) in
a ``pycon`` fence when the docstrings are loaded, leaving the source untouched.
"""

from __future__ import annotations

from typing import Any

import griffe

__all__ = ["DoctestFences"]


def fence(text: str) -> str:
    """`text` with each block of doctest lines wrapped in a ```` ```pycon ```` fence."""
    out: list[str] = []
    inside = False
    in_fence = False
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if not in_fence and not inside and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            inside = True
        elif inside and not stripped:
            out.append(f"{indent}```")
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctest examples of every docstring loaded."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence(obj.docstring.value)
