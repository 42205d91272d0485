"""The command line: ``python -m reactorpy run | graph | runs | recover | demo`` (also the
``reactorpy`` script).

Owns: argument parsing, loading ``MODULE:ATTR`` targets, ``--input`` parsing, choosing the
progress display (`reactorpy._progress`: a live Rich table on a terminal, plain lines
otherwise), and turning every expected failure into one message on stderr and an exit status.
Must not import: the executor's internals; it drives reactors only through their public API
(``run``, ``plan``, ``graph``, ``to_mermaid``, ``recover``, middleware events). The durable
run commands, ``runs`` and ``recover``, are in `reactorpy._cli_runs` (imported only for them).

Exit status: 0 on success, 1 when the run failed or halted (or a recovered one did), 2 for
usage errors (bad arguments, a module or attribute that cannot be loaded, something that is
not a `Reactor`, a reactor defined wrongly, unknown or missing inputs, a journal that does
not exist or cannot be opened), 130 when interrupted.

    $ python -m reactorpy run reactorpy.examples.seed:user_data --input user_id=123 --json
    $ python -m reactorpy graph reactorpy.examples.seed:user_data --format dot --expand
    $ python -m reactorpy runs --journal runs.db --status running
    $ python -m reactorpy recover package.flows:checkout --journal runs.db --undo
    $ python -m reactorpy --version
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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from ._errors import DefinitionError, Halted, InputError, RunFailed
from ._progress import PlainProgress, RichProgress, progress_for, silence
from ._reactor import Reactor

__all__ = [
    "PlainProgress",
    "RichProgress",
    "UsageError",
    "load_reactor",
    "main",
    "progress_for",
    "to_dot",
]

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
def to_dot(reactor: Reactor[Any], direction: str = "TB", *, expand: bool = False) -> str:
    """A Graphviz DOT digraph of the reactor (``reactor.to_dot``; kept here for callers of
    earlier versions).

    Raises:
        DefinitionError: the reactor is defined wrongly (from ``reactor.graph``).
    """
    return reactor.to_dot(direction=direction, expand=expand)


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
    """Print the result; a reader that went away (``| head -1``) is not an error."""
    if as_json:
        text = json.dumps(result, indent=2, default=str) + "\n"
    elif isinstance(result, str):
        text = result + "\n"
    else:
        text = pprint.pformat(result, sort_dicts=False) + "\n"
    try:
        out.write(text)
        out.flush()
    except (BrokenPipeError, ValueError):
        silence(out)


async def _run(
    args: argparse.Namespace, reactor: Reactor[Any], inputs: dict[str, Any], middleware: list[Any]
) -> Any:
    # Progress shares stdout with the result, except with --json: stdout holds only JSON.
    stream: TextIO = sys.stderr if args.json else sys.stdout
    display = None if args.quiet else progress_for(stream)
    if display is not None:
        middleware = [*middleware, display]
    ticker = None
    if isinstance(display, RichProgress):
        display.start()
        ticker = asyncio.create_task(display.animate())
    try:
        return await reactor.run(
            inputs, max_concurrency=args.max_concurrency, middleware=middleware
        )
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        if isinstance(display, RichProgress):
            display.close()


def _open_trace(path: str) -> TextIO:
    """Open the ``--trace`` file before the run starts, so a path that cannot be written
    stops the command before any step runs."""
    try:
        return open(path, "w", encoding="utf-8")  # closed by _write_trace
    except OSError as exc:
        raise UsageError(
            f"--trace: cannot write {path}: {exc.strerror or exc}; nothing was run."
        ) from None


def _write_trace(trace: Any, fh: TextIO) -> str | None:
    """Write the trace; return a message if that failed (never raise: a failed run's own
    error is on its way and must not be replaced)."""
    try:
        with fh:
            json.dump(trace.to_chrome_trace(), fh)
    except OSError as exc:
        return f"cannot write the trace to {fh.name}: {exc.strerror or exc}."
    return None


def _cmd_run(args: argparse.Namespace) -> int:
    reactor = load_reactor(args.target)
    inputs = parse_inputs(args.input)
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise UsageError(f"--max-concurrency must be at least 1, got {args.max_concurrency}.")
    reactor.plan()  # definition errors before anything is drawn
    middleware: list[Any] = []
    trace: Any = None
    trace_file: TextIO | None = None
    if args.trace is not None:
        # Imported here: tracing is optional and costs nothing when not asked for.
        from ._trace import Trace

        trace = Trace()
        middleware.append(trace)
        trace_file = _open_trace(args.trace)
    failed = True
    try:
        result = asyncio.run(_run(args, reactor, inputs, middleware))
        failed = False
    finally:
        # Written on failure too: the timeline of a failed run is the one worth reading.
        problem = _write_trace(trace, trace_file) if trace_file is not None else None
        if problem is not None and failed:
            # The run's own error is reported next, by main(): say this first, not instead.
            print(f"{PROG}: warning: {problem}", file=sys.stderr)
    _write_result(result, as_json=args.json, out=sys.stdout)
    return 0 if problem is None else _fail(problem, 2)


def _cmd_graph(args: argparse.Namespace) -> int:
    reactor = load_reactor(args.target)
    if args.format == "dot":
        direction = "LR" if args.direction == "LR" else "TB"
        text = reactor.to_dot(direction=direction, expand=args.expand)
    else:
        text = reactor.to_mermaid(direction=args.direction, expand=args.expand) + "\n"
    _write_result(text.rstrip("\n"), as_json=False, out=sys.stdout)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .examples import seed

    asyncio.run(seed.demo(args.user_id))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run, draw and demo reactorpy reactors; list and recover durable runs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a reactor and print its result",
        description="Run the reactor MODULE:ATTR and print its result. Progress is a live "
        "table on a terminal (with reactorpy[cli], which installs Rich), else one line per "
        "finished step; NO_COLOR, FORCE_COLOR and TERM=dumb are honoured.",
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
    run.add_argument(
        "--trace",
        metavar="FILE",
        help="write a Chrome/Perfetto trace of the run (checked before the run starts)",
    )
    run.add_argument("--max-concurrency", type=int, metavar="N", help="run at most N steps at once")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    run.set_defaults(handler=_cmd_run)

    graph = sub.add_parser(
        "graph", help="print a reactor's graph", description="Print the graph of MODULE:ATTR."
    )
    graph.add_argument("target", metavar="MODULE:ATTR")
    graph.add_argument(
        "--format", choices=("mermaid", "dot"), default="mermaid", help="default: mermaid"
    )
    graph.add_argument(
        "--direction", choices=("TD", "LR"), default="TD", help="top down (default) or left right"
    )
    graph.add_argument(
        "--expand",
        action="store_true",
        help="draw the reactors that compose, map, switch, recurse and around steps run, "
        "inside their steps",
    )
    graph.set_defaults(handler=_cmd_graph)

    from ._cli_runs import add_commands  # here: it imports this module

    add_commands(sub)

    demo = sub.add_parser(
        "demo",
        help="run the seed tutorial's reactor, concurrently and one step at a time",
        description="Run reactorpy.examples.seed: three fetches at once, then in sequence.",
    )
    demo.add_argument("--user-id", type=int, default=123, help="the input (default: 123)")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


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
    except BrokenPipeError:  # stdout's reader went away (`| head`): not an error of ours
        silence(sys.stdout)
        return 0
    except OSError as exc:  # the trace file could not be written (step errors are wrapped)
        return _fail(f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}.", 2)
    except KeyboardInterrupt:
        return _fail("interrupted.", 130)
