"""Diagrams of a reactor's definition: Mermaid flowcharts (`Reactor.to_mermaid`) and
Graphviz DOT digraphs (`Reactor.to_dot`).

Owns: `flowchart` and `dot`, the drawing of a reactor's graph as Mermaid or DOT text: node
ids, node shapes, labels and their escaping, edges, and the expansion of composite steps into
subgraphs (Mermaid) or clusters (DOT). The parameters composite steps use internally
(``_items``, ``_on``) are drawn under the names users gave them (``over``, ``on``): no
picture shows an internal name.
Must not import: the executor (a diagram is drawn from the definition, never from a run).

The drawing reads only the reactor's public surface: ``reactor.graph`` (node attribute
``kind`` is ``"input"`` or ``"step"``, ``step`` the `Step`; edge attributes ``args`` and
``kind``), ``reactor.returns`` and ``reactor.name``. A composite step may carry
``children``, a ``{label: Reactor}`` dict, which ``expand=True`` draws as nested subgraphs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["DIRECTIONS", "DOT_DIRECTIONS", "dot", "edge_params", "flowchart"]

DIRECTIONS: Final = ("TD", "TB", "BT", "LR", "RL")
DOT_DIRECTIONS: Final = ("TB", "TD", "BT", "LR", "RL")

# A composite step's internal parameters, under the names of the arguments users gave.
_PUBLIC_NAMES: Final = {"_items": "over", "_on": "on"}


def edge_params(step: Any, params: Any) -> list[str]:
    """The names to draw on an edge feeding `params` of `step`: a composite step's internal
    parameters under their public names, other internal (``_``) ones left out.

    >>> class Composite:
    ...     composite = True
    >>> edge_params(Composite(), ["_items", "user_id"]), edge_params(object(), ["_x"])
    (['over', 'user_id'], ['_x'])
    """
    names = list(params or ())
    if not getattr(step, "composite", False):
        return names
    out = []
    for name in names:
        public = _PUBLIC_NAMES.get(name, name)
        if not public.startswith("_"):
            out.append(public)
    return out


_UNSAFE: Final = re.compile(r"[^0-9A-Za-z_]")
_INDENT: Final = "    "


def flowchart(reactor: Any, *, direction: str = "TD", expand: bool = False) -> str:
    """Draw `reactor` as a Mermaid flowchart.

    Inputs are parallelograms, steps are boxes (with their description, if any, on a second
    line), argument edges are labelled with the parameters they feed, ``wait_for`` edges are
    dotted, and a ``return`` node is fed by the ``returns`` step or input (or, when
    ``returns`` is None, by every step nothing else depends on).

    Args:
        reactor: the `Reactor` to draw (it is planned, so definition errors are raised).
        direction: ``"TD"`` (same as ``"TB"``), ``"BT"``, ``"LR"`` or ``"RL"``; any case.
        expand: draw each composite step's child reactors (its ``children`` attribute) as
            nested subgraphs, recursively, instead of a single box.

    Returns:
        The Mermaid source, starting with ``flowchart <direction>``.

    Raises:
        ValueError: `direction` is not one of the Mermaid directions.

    >>> import reactorpy as rp
    >>> r = rp.Reactor("double", inputs=["x"], returns="twice")
    >>> @r.step
    ... def twice(x):
    ...     return 2 * x
    >>> print(flowchart(r, direction="LR"))
    flowchart LR
        i_x[/"x"/]
        s_twice["twice"]
        r_return(["return"])
        i_x -->|"x"| s_twice
        s_twice --> r_return
    """
    if not isinstance(direction, str) or direction.upper() not in DIRECTIONS:
        raise ValueError(
            f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, got {direction!r}."
        )
    lines = [f"flowchart {direction.upper()}"]
    _Drawing(lines, expand).reactor(reactor, prefix="", depth=1, stack=())
    return "\n".join(lines)


def node_id(name: str, used: set[str], prefix: str = "") -> str:
    """A Mermaid-safe id for `name`, unique within `used` (which it updates).

    Deterministic: unsafe characters become ``_`` and a clash gets the first free ``_2``,
    ``_3``... suffix, in the order names are asked for.

    >>> used = set()
    >>> node_id("a.b", used, "s_"), node_id("a_b", used, "s_")
    ('s_a_b', 's_a_b_2')
    """
    base = prefix + _UNSAFE.sub("_", name)
    candidate, k = base, 1
    while candidate in used:
        k += 1
        candidate = f"{base}_{k}"
    used.add(candidate)
    return candidate


def label(text: str) -> str:
    """`text` as a quoted Mermaid label: quotes, angle brackets and ``#`` become entities.

    >>> label('say "hi" <b>')
    '"say #quot;hi#quot; #lt;b#gt;"'
    """
    text = (
        text.replace("#", "#35;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("\r\n", " ")
        .replace("\n", " ")
    )
    return f'"{text}"'


class _Drawing:
    """Accumulates the lines of one chart; ids are unique across nested subgraphs."""

    def __init__(self, lines: list[str], expand: bool) -> None:
        self.lines = lines
        self.expand = expand
        self.used: set[str] = set()

    def reactor(self, reactor: Any, *, prefix: str, depth: int, stack: tuple[int, ...]) -> None:
        """Draw the nodes and edges of `reactor`; ids start with `prefix`."""
        pad = _INDENT * depth
        graph = reactor.graph
        ids: dict[str, str] = {}
        edges: list[str] = []
        stack = (*stack, id(reactor))
        for name, data in graph.nodes(data=True):
            if data.get("kind") == "input":
                ids[name] = node_id(name, self.used, prefix + "i_")
                self.lines.append(f"{pad}{ids[name]}[/{label(name)}/]")
        for name, data in graph.nodes(data=True):
            if data.get("kind") != "step":
                continue
            ids[name] = nid = node_id(name, self.used, prefix + "s_")
            step = data.get("step")
            text = _step_label(name, getattr(step, "description", None))
            children = getattr(step, "children", None) if self.expand else None
            if isinstance(children, Mapping) and children:
                self._subgraph(nid, text, children, depth=depth, stack=stack)
            else:
                self.lines.append(f"{pad}{nid}[{text}]")
        ret = node_id("return", self.used, prefix + "r_")
        self.lines.append(f"{pad}{ret}([{label('return')}])")
        for src, dst, data in graph.edges(data=True):
            if src not in ids or dst not in ids:  # pragma: no cover - graph has only these
                continue
            if data.get("kind") == "wait_for":
                edges.append(f"{pad}{ids[src]} -.->|{label('wait_for')}| {ids[dst]}")
            else:
                params = ", ".join(edge_params(graph.nodes[dst].get("step"), data.get("args")))
                arrow = f" -->|{label(params)}| " if params else " --> "
                edges.append(f"{pad}{ids[src]}{arrow}{ids[dst]}")
        returns = reactor.returns
        if returns is not None:
            if returns in ids:
                edges.append(f"{pad}{ids[returns]} --> {ret}")
        else:
            for name, data in graph.nodes(data=True):
                if data.get("kind") == "step" and not any(
                    graph.nodes[s].get("kind") == "step" for s in graph.successors(name)
                ):
                    edges.append(f"{pad}{ids[name]} --> {ret}")
        self.lines.extend(edges)

    def _subgraph(
        self,
        nid: str,
        text: str,
        children: Mapping[str, Any],
        *,
        depth: int,
        stack: tuple[int, ...],
    ) -> None:
        pad = _INDENT * depth
        self.lines.append(f"{pad}subgraph {nid} [{text}]")
        for key, child in children.items():
            name = getattr(child, "name", None)
            title = str(key) if name is None or str(name) in str(key) else f"{key}: {name}"
            cid = node_id(str(key), self.used, nid + "__")
            inner = _INDENT * (depth + 1)
            if id(child) in stack:
                # A reactor that contains itself (recursion): draw the reference, not a loop.
                self.lines.append(f"{inner}{cid}[{label(title + ' (recursive)')}]")
                continue
            self.lines.append(f"{inner}subgraph {cid} [{label(title)}]")
            self.reactor(child, prefix=cid + "__", depth=depth + 2, stack=stack)
            self.lines.append(f"{inner}end")
        self.lines.append(f"{pad}end")


def _step_label(name: str, description: str | None) -> str:
    """The quoted label of a step box: its name, and its description on a smaller line."""
    if not description:
        return label(name)
    # The description goes on a second, smaller line; only our own tags are real HTML.
    inner = label(description)[1:-1]
    return f'"{label(name)[1:-1]}<br/><small>{inner}</small>"'


# ---------------------------------------------------------------------------------- DOT
def _dot_id(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(reactor: Any, *, direction: str = "TB", expand: bool = False) -> str:
    """Draw `reactor` as a Graphviz DOT digraph.

    Inputs are dashed ellipses, steps rounded boxes (with their description as a tooltip),
    argument edges are labelled with the parameters they feed, ``wait_for`` edges are dashed,
    and the ``returns`` step or input points at a ``return`` node.

    Args:
        reactor: the `Reactor` to draw (it is planned, so definition errors are raised).
        direction: ``"TB"`` (same as ``"TD"``), ``"BT"``, ``"LR"`` or ``"RL"``; any case.
        expand: draw each composite step's child reactors inside a cluster around the
            step, recursively (a reactor that contains itself is drawn once).

    Returns:
        The DOT source, ending with a newline.

    Raises:
        ValueError: `direction` is not a Graphviz rank direction.

    >>> import reactorpy as rp
    >>> r = rp.Reactor("double", inputs=["x"], returns="twice")
    >>> @r.step
    ... def twice(x):
    ...     return 2 * x
    >>> print(dot(r, direction="LR"), end="")
    digraph "double" {
      rankdir=LR;
      node [fontname="Helvetica"];
      edge [fontname="Helvetica", fontsize=10];
      "x" [shape=ellipse, style=dashed];
      "twice" [shape=box, style=rounded];
      "x" -> "twice" [label="x"];
      "__return__" [shape=doublecircle, label="return"];
      "twice" -> "__return__";
    }
    """
    if not isinstance(direction, str) or direction.upper() not in DOT_DIRECTIONS:
        raise ValueError(
            f"direction must be one of {', '.join(map(repr, DOT_DIRECTIONS))}, got {direction!r}."
        )
    rank = "TB" if direction.upper() == "TD" else direction.upper()
    lines = [
        f"digraph {_dot_id(reactor.name)} {{",
        f"  rankdir={rank};",
        '  node [fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    if expand:
        lines.append("  compound=true;")
    _DotDrawing(lines, expand).reactor(reactor, prefix="", depth=1, stack=())
    lines.append("}")
    return "\n".join(lines) + "\n"


class _DotDrawing:
    """Accumulates the lines of one digraph; nested reactors get ids prefixed by the path
    of composite steps (and child keys) that leads to them, and their names as labels."""

    def __init__(self, lines: list[str], expand: bool) -> None:
        self.lines = lines
        self.expand = expand
        self.clusters = 0

    def reactor(self, reactor: Any, *, prefix: str, depth: int, stack: tuple[int, ...]) -> None:
        pad = "  " * depth
        graph = reactor.graph
        stack = (*stack, id(reactor))

        def node(name: str) -> str:
            return _dot_id(prefix + name)

        def named(name: str) -> str:  # nested nodes show their own name, not their id
            return f", label={_dot_id(name)}" if prefix else ""

        for name, data in graph.nodes(data=True):
            if data.get("kind") == "input":
                self.lines.append(f"{pad}{node(name)} [shape=ellipse, style=dashed{named(name)}];")
        for name, data in graph.nodes(data=True):
            if data.get("kind") != "step":
                continue
            step = data.get("step")
            tip = getattr(step, "description", None)
            extra = f", tooltip={_dot_id(tip)}" if tip else ""
            box = f"{pad}{node(name)} [shape=box, style=rounded{named(name)}{extra}];"
            children = getattr(step, "children", None) if self.expand else None
            if isinstance(children, Mapping) and children:
                self._cluster(prefix + name, box, children, depth=depth, stack=stack)
            else:
                self.lines.append(box)
        for src, dst, data in graph.edges(data=True):
            params = edge_params(graph.nodes[dst].get("step"), data.get("args"))
            attrs = []
            if params:
                attrs.append(f"label={_dot_id(', '.join(params))}")
            if data.get("kind") == "wait_for":
                attrs.append("style=dashed")
            suffix = f" [{', '.join(attrs)}]" if attrs else ""
            self.lines.append(f"{pad}{node(src)} -> {node(dst)}{suffix};")
        if reactor.returns is not None:
            ret = node("__return__")
            self.lines.append(f'{pad}{ret} [shape=doublecircle, label="return"];')
            self.lines.append(f"{pad}{node(reactor.returns)} -> {ret};")

    def _cluster(
        self,
        path: str,
        box: str,
        children: Mapping[str, Any],
        *,
        depth: int,
        stack: tuple[int, ...],
    ) -> None:
        pad = "  " * depth
        self.clusters += 1
        self.lines.append(f"{pad}subgraph {_dot_id(f'cluster_{self.clusters}')} {{")
        self.lines.append(f"{pad}  style=dashed;")  # the step's own box names it
        self.lines.append("  " + box)
        for key, child in children.items():
            child_name = getattr(child, "name", None)
            title = (
                str(key)
                if child_name is None or str(child_name) in str(key)
                else (f"{key}: {child_name}")
            )
            inner = f"{path}/{key}/"
            if id(child) in stack:
                # A reactor that contains itself (recursion): draw the reference, not a loop.
                self.lines.append(
                    f"{pad}  {_dot_id(inner)} [shape=box, style=dotted, "
                    f"label={_dot_id(title + ' (recursive)')}];"
                )
                continue
            self.clusters += 1
            self.lines.append(f"{pad}  subgraph {_dot_id(f'cluster_{self.clusters}')} {{")
            self.lines.append(f"{pad}    label={_dot_id(title)};")
            self.reactor(child, prefix=inner, depth=depth + 2, stack=stack)
            self.lines.append(f"{pad}  }}")
        self.lines.append(f"{pad}}}")
