"""The command line: ``python -m reactorpy run | graph | demo`` (also the ``reactorpy`` script).

Owns: argument parsing, loading ``MODULE:ATTR`` targets, ``--input`` parsing, the progress
display (live on a terminal, plain lines otherwise), the Graphviz DOT export, and turning
every expected failure into one message on stderr and an exit status.
Must not import: the executor's internals; it drives reactors only through their public API
(``run``, ``plan``, ``graph``, ``to_mermaid``, middleware events).

Exit status: 0 on success, 1 when the run failed or halted, 2 for usage errors (bad
arguments, a module or attribute that cannot be loaded, something that is not a `Reactor`,
a reactor defined wrongly, unknown or missing inputs), 130 when interrupted.

    $ python -m reactorpy run reactorpy.examples.seed:user_data --input user_id=123 --json
    $ python -m reactorpy graph reactorpy.examples.seed:user_data --format dot
    $ python -m reactorpy demo
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import importlib
import importlib.util
import json
import os
import pprint
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from ._errors import DefinitionError, Halted, InputError, RunFailed
from ._events import Event, RunInfo
from ._reactor import Reactor

__all__ = ["LiveProgress", "PlainProgress", "UsageError", "load_reactor", "main", "to_dot"]

PROG: Final = "reactorpy"


class UsageError(Exception):
    """A problem with the command line or its target; reported on stderr, exit status 2."""


# ---------------------------------------------------------------------------------- loading
def _import_module(spec: str) -> Any:
    """Import `spec`, a dotted module name or a path to a ``.py`` file."""
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"No such file {spec!r}; give MODULE:ATTR or path/to/file.py:ATTR.")
        name = f"_reactorpy_cli_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:  # pragma: no cover - defensive
            raise UsageError(f"Cannot load {spec!r} as a Python module.")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # so pickling by reference and dataclasses work
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise UsageError(f"Importing {spec!r} raised {type(exc).__name__}: {exc}") from None
        return module
    # Like ``python -m``, make modules in the current directory importable.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise UsageError(
                f"No module named {exc.name!r} (while importing {spec!r}); check the "
                "spelling and that it is on the Python path (run from its project directory)."
            ) from None
        raise UsageError(
            f"Importing {spec!r} failed: {exc}. The module itself needs something missing."
        ) from None
    except Exception as exc:
        raise UsageError(f"Importing {spec!r} raised {type(exc).__name__}: {exc}") from None


def _reactors_in(module: Any) -> list[str]:
    return sorted(name for name, obj in vars(module).items() if isinstance(obj, Reactor))


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def load_reactor(target: str) -> Reactor:
    """Load the `Reactor` named by ``MODULE:ATTR`` (or ``MODULE`` holding exactly one).

    ``MODULE`` is a dotted module name or a path to a ``.py`` file; ``ATTR`` may be dotted.

    Raises:
        UsageError: the module cannot be imported, the attribute is missing, or it is not a
            `Reactor`; the message says which and lists the reactors the module has.
    """
    module_name, colon, attr = target.partition(":")
    if not module_name or (colon and not attr):
        raise UsageError(f"Expected MODULE:ATTR, like 'package.flows:checkout'; got {target!r}.")
    module = _import_module(module_name)
    found = _reactors_in(module)
    listing = ", ".join(repr(n) for n in found) or "(none)"
    if not attr:
        if len(found) != 1:
            raise UsageError(
                f"Module {module_name!r} has {len(found)} reactors ({listing}); "
                f"name one as {module_name}:NAME."
            )
        attr = found[0]
    obj: Any = module
    walked: list[str] = []
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = ".".join([module_name, *walked]) if walked else module_name
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, found + names, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(
                f"{where!r} has no attribute {part!r}.{hint} Reactors in {module_name!r}: "
                f"{listing}."
            )
        obj = getattr(obj, part)
        walked.append(part)
    if not isinstance(obj, Reactor):
        raise UsageError(
            f"{module_name}:{attr} is {_a(type(obj).__name__)}, not a reactorpy.Reactor. "
            f"Reactors in {module_name!r}: {listing}."
        )
    return obj


def parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` pairs; a value that is valid JSON is decoded, else kept a string.

    >>> parse_inputs(["n=3", "name=Ada", 'tags=["a"]', "flag=true", "s=\\"3\\""])
    {'n': 3, 'name': 'Ada', 'tags': ['a'], 'flag': True, 's': '3'}

    Raises:
        UsageError: a pair has no ``=``, an empty key, or a key given twice.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"--input takes key=value, got {pair!r}.")
        if key in out:
            raise UsageError(f"--input {key!r} is given twice.")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


# ---------------------------------------------------------------------------------- graph
def _dot_id(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(reactor: Reactor, direction: str = "TB") -> str:
    """A Graphviz DOT digraph of the reactor's inputs, steps, edges and return.

    Inputs are ellipses, steps boxes; an argument edge is labelled with the parameters it
    feeds; ``wait_for`` edges are dashed; the ``returns`` target points at a ``return`` node.

    Raises:
        DefinitionError: the reactor is defined wrongly (from ``reactor.graph``).
    """
    graph = reactor.graph
    lines = [
        f"digraph {_dot_id(reactor.name)} {{",
        f"  rankdir={direction};",
        '  node [fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for node, data in graph.nodes(data=True):
        if data.get("kind") == "input":
            lines.append(f"  {_dot_id(node)} [shape=ellipse, style=dashed];")
        else:
            step = data.get("step")
            tip = getattr(step, "description", None)
            extra = f", tooltip={_dot_id(tip)}" if tip else ""
            lines.append(f"  {_dot_id(node)} [shape=box, style=rounded{extra}];")
    for src, dst, data in graph.edges(data=True):
        args = data.get("args") or []
        attrs_ = []
        if args:
            attrs_.append(f"label={_dot_id(', '.join(args))}")
        if data.get("kind") == "wait_for":
            attrs_.append("style=dashed")
        suffix = f" [{', '.join(attrs_)}]" if attrs_ else ""
        lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)}{suffix};")
    if reactor.returns is not None:
        lines.append('  "__return__" [shape=doublecircle, label="return"];')
        lines.append(f'  {_dot_id(reactor.returns)} -> "__return__";')
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- progress
_COLOURS: Final = {
    "pending": "2",
    "running": "33",
    "retrying": "33",
    "done": "32",
    "skipped": "2",
    "failed": "31",
    "halted": "35",
    "undoing": "36",
    "undone": "36",
    "undo failed": "31",
}
# Row order when there are more steps than terminal lines: what needs attention first.
_URGENCY: Final = {
    "failed": 0,
    "undo failed": 0,
    "halted": 1,
    "running": 2,
    "retrying": 2,
    "undoing": 2,
    "undone": 3,
    "done": 4,
    "skipped": 4,
    "pending": 5,
}
_TRANSITIONS: Final = {
    "step_start": "running",
    "step_retry": "retrying",
    "step_complete": "done",
    "compensate_continue": "done",
    "step_error": "failed",
    "step_halt": "halted",
    "guard_skip": "skipped",
    "undo_start": "undoing",
    "undo_retry": "undoing",
    "undo_complete": "undone",
    "undo_error": "undo failed",
}


class _Row:
    __slots__ = ("attempt", "end", "note", "start", "state")

    def __init__(self) -> None:
        self.state = "pending"
        self.start: float | None = None
        self.end: float | None = None
        self.attempt = 1
        self.note = ""

    def elapsed(self, now: float) -> float | None:
        if self.start is None:
            return None
        return (self.end if self.end is not None else now) - self.start


class _Progress:
    """Shared bookkeeping: one row per step, updated from middleware events."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.rows: dict[str, _Row] = {}
        self.title = ""

    def on_run_start(self, run: RunInfo) -> None:
        if run.parent is None:
            self.title = f"{run.reactor}:"
            for name in run.step_names:
                self.rows.setdefault(name, _Row())

    def _update(self, event: Event) -> _Row:
        row = self.rows.setdefault(event.step, _Row())
        state = _TRANSITIONS.get(event.kind)
        if state is None:  # compensate_start and the like change nothing visible
            return row
        row.attempt = max(event.attempt, 1)
        if event.kind == "step_start":
            if row.start is None:
                row.start = event.time
            row.end = None
        elif event.kind in ("step_complete", "compensate_continue", "step_error", "step_halt"):
            row.end = event.time
        if event.error is not None:
            row.note = f"{type(event.error).__name__}: {event.error}"
        row.state = state
        return row


class PlainProgress(_Progress):
    """Middleware printing one line per finished step (for pipes, files and CI logs)."""

    def on_event(self, event: Event) -> None:
        """Record `event` and print a line when a step finishes, fails or is undone."""
        row = self._update(event)
        if event.kind not in (
            "step_complete",
            "step_error",
            "step_retry",
            "step_halt",
            "guard_skip",
            "compensate_continue",
            "undo_complete",
            "undo_error",
        ):
            return
        elapsed = row.elapsed(event.time)
        timed = event.kind in ("step_complete", "step_error", "step_halt", "compensate_continue")
        took = f" in {elapsed:.3f} s" if elapsed is not None and timed else ""
        attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
        label = "retrying" if event.kind == "step_retry" else row.state
        note = f": {row.note}" if row.note and event.error is not None else ""
        print(f"{label:>8} {event.step}{took}{attempt}{note}", file=self.stream, flush=True)


class LiveProgress(_Progress):
    """Middleware drawing a table of steps that redraws in place on a terminal (ANSI).

    Each row shows a step's state (pending, running, done, failed, ...) and its elapsed
    time; `tick` redraws it (the caller runs `animate` alongside the run so running times
    advance), `close` draws the final state and restores the cursor.
    """

    interval: float = 0.1

    def __init__(self, stream: TextIO, *, colour: bool = True) -> None:
        super().__init__(stream)
        self.colour = colour
        self._drawn = 0
        self._dirty = True
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_run_start(self, run: RunInfo) -> None:
        """Add a pending row for every planned step."""
        super().on_run_start(run)
        self._dirty = True

    def on_event(self, event: Event) -> None:
        """Update the step's row; the next tick redraws."""
        self._update(event)
        self._dirty = True
        if event.kind in ("step_error", "step_halt", "undo_error"):
            self.tick()

    def _now(self) -> float:
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        return self._loop.time() if self._loop is not None else 0.0

    def _lines(self) -> list[str]:
        size = shutil.get_terminal_size()
        width = max(size.columns - 1, 20)
        now = self._now()
        items = list(self.rows.items())
        counts: dict[str, int] = {}
        for _, row in items:
            counts[row.state] = counts.get(row.state, 0) + 1
        header = "  ".join(
            [self.title] + [f"{counts[state]} {state}" for state in _COLOURS if state in counts]
        )
        room = max(size.lines - 2, 4)
        if len(items) > room:
            order = {name: k for k, (name, _) in enumerate(items)}
            items.sort(key=lambda it: (_URGENCY.get(it[1].state, 9), order[it[0]]))
            items = items[: room - 1]
        name_width = min(max((len(n) for n, _ in items), default=4), 40)
        lines = [self._paint("1", header[:width])]
        for name, row in items:
            elapsed = row.elapsed(now)
            took = f"{elapsed:7.2f}s" if elapsed is not None else " " * 8
            attempt = f" #{row.attempt}" if row.attempt > 1 else ""
            note = f"  {row.note}" if row.note else ""
            text = f"{row.state:>11}  {name:<{name_width}} {took}{attempt}{note}"[:width]
            lines.append(self._paint(_COLOURS.get(row.state, "0"), text))
        return lines

    def _paint(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def tick(self) -> None:
        """Redraw the table in place: move up over the last drawing, clear and rewrite."""
        lines = self._lines()
        # First draw: hide the cursor (close() shows it again); later: move up over the table.
        out = [f"\x1b[{self._drawn}F"] if self._drawn else ["\r\x1b[?25l"]
        out.extend(f"\x1b[2K{line}\n" for line in lines)
        if len(lines) < self._drawn:  # the table shrank: clear what is left below it
            out.append("\x1b[J")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)
        self._dirty = False

    async def animate(self) -> None:
        """Redraw every `interval` seconds until cancelled."""
        while True:
            self.tick()
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        """Draw the final state and show the cursor again."""
        self.tick()
        self.stream.write("\x1b[?25h")
        self.stream.flush()


# ---------------------------------------------------------------------------------- commands
def _describe_failure(error: RunFailed) -> str:
    lines = [f"{error.message}."]
    for exc in error.exceptions:
        notes = [n.removeprefix("reactorpy: ") for n in getattr(exc, "__notes__", ())]
        lines.append(f"  {type(exc).__name__}: {exc}")
        lines.extend(f"    {note}" for note in notes)
    if error.abandoned:
        lines.append(f"  abandoned (still running in threads or processes): {error.abandoned}")
    return "\n".join(lines)


def _write_result(result: Any, *, as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(result, out, indent=2, default=str)
        out.write("\n")
    elif isinstance(result, str):
        out.write(result + "\n")
    else:
        out.write(pprint.pformat(result, sort_dicts=False) + "\n")


async def _run(
    args: argparse.Namespace, reactor: Reactor, inputs: dict[str, Any], middleware: list[Any]
) -> Any:
    # Progress shares stdout with the result, except with --json: stdout holds only JSON.
    stream: TextIO = sys.stderr if args.json else sys.stdout
    live: LiveProgress | None = None
    if not args.quiet:
        if stream.isatty():
            live = LiveProgress(stream, colour="NO_COLOR" not in os.environ)
            middleware = [*middleware, live]
        else:
            middleware = [*middleware, PlainProgress(stream)]
    ticker = asyncio.create_task(live.animate()) if live is not None else None
    try:
        return await reactor.run(
            inputs, max_concurrency=args.max_concurrency, middleware=middleware
        )
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        if live is not None:
            live.close()


def _cmd_run(args: argparse.Namespace) -> int:
    reactor = load_reactor(args.target)
    inputs = parse_inputs(args.input)
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise UsageError(f"--max-concurrency must be at least 1, got {args.max_concurrency}.")
    middleware: list[Any] = []
    trace: Any = None
    if args.trace is not None:
        try:
            # Imported lazily: tracing is optional and costs nothing when not asked for.
            trace = importlib.import_module("reactorpy._trace").Trace()
        except ImportError:
            raise UsageError(
                "--trace needs reactorpy's Trace middleware, which this install lacks."
            ) from None
        middleware.append(trace)
    reactor.plan()  # definition errors before anything is drawn
    try:
        result = asyncio.run(_run(args, reactor, inputs, middleware))
    finally:
        if trace is not None:
            # Written on failure too: the timeline of a failed run is the one worth reading.
            with open(args.trace, "w", encoding="utf-8") as fh:
                json.dump(trace.to_chrome_trace(), fh)
    _write_result(result, as_json=args.json, out=sys.stdout)
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    reactor = load_reactor(args.target)
    if args.format == "dot":
        text = to_dot(reactor, direction="LR" if args.direction == "LR" else "TB")
    else:
        try:
            text = reactor.to_mermaid(direction=args.direction)
        except ImportError:
            raise UsageError(
                "Mermaid output is not available in this install; use --format dot."
            ) from None
        if not text.endswith("\n"):
            text += "\n"
    sys.stdout.write(text)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .examples import seed

    asyncio.run(seed.demo(args.user_id))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run, draw and demo reactorpy reactors.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a reactor and print its result",
        description="Run the reactor MODULE:ATTR and print its result. Progress is drawn "
        "live on a terminal, else printed one line per finished step.",
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="e.g. package.flows:checkout")
    run.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an input; VALUE is decoded as JSON when it is valid JSON, else kept a string",
    )
    run.add_argument(
        "--json", action="store_true", help="print the result as JSON (progress goes to stderr)"
    )
    run.add_argument("--trace", metavar="FILE", help="write a Chrome/Perfetto trace of the run")
    run.add_argument("--max-concurrency", type=int, metavar="N", help="run at most N steps at once")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    run.set_defaults(handler=_cmd_run)

    graph = sub.add_parser(
        "graph", help="print a reactor's graph", description="Print the graph of MODULE:ATTR."
    )
    graph.add_argument("target", metavar="MODULE:ATTR")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.add_argument("--direction", choices=("TD", "LR"), default="TD")
    graph.set_defaults(handler=_cmd_graph)

    demo = sub.add_parser(
        "demo",
        help="run the seed tutorial's reactor, concurrently and one step at a time",
        description="Run reactorpy.examples.seed: three fetches at once, then in sequence.",
    )
    demo.add_argument("--user-id", type=int, default=123)
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default ``sys.argv[1:]``); return the exit status.

    Expected failures print one message on stderr, never a traceback: 2 for usage errors,
    1 when the run failed or halted, 130 when interrupted.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its usage message
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        status: int = args.handler(args)
        return status
    except UsageError as exc:
        return _fail(str(exc), 2)
    except InputError as exc:
        return _fail(f"{exc} Pass them with --input KEY=VALUE.", 2)
    except DefinitionError as exc:
        return _fail(f"{args.target} is defined wrongly: {exc}", 2)
    except RunFailed as exc:
        return _fail(_describe_failure(exc), 1)
    except Halted as exc:
        return _fail(str(exc).replace(" Resume it with reactor.resume().", ""), 1)
    except OSError as exc:  # the trace file could not be written (step errors are wrapped)
        return _fail(f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}.", 2)
    except KeyboardInterrupt:
        return _fail("interrupted.", 130)
