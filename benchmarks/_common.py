"""Helpers shared by the benchmark scripts: the command line, timing, the result table and
the ``main(argv)`` plumbing.

Only the standard library is imported here (``bench_frameworks.py`` runs in a separate
environment). Scripts import this module as a sibling: each puts its own directory on
``sys.path`` first, so ``python benchmarks/<name>.py`` and ``import bench_<name>`` both work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Self, TypeVar

# ``arm()`` is called untimed before each repetition and returns the awaitable that is timed.
Arm = Callable[[], Awaitable[Any]]
# A workload's benchmark: awaited once, it prints (emits) its own rows.
Job = Callable[[], Awaitable[None]]
Columns = tuple[tuple[str, int], ...]
# A contender's target: its label and whether a time meets it.
Target = tuple[str, Callable[[float], bool]]


# --------------------------------------------------------------------------- reactorpy


_RP: ModuleType | None = None
_RP_ERROR: str | None = None


def load_reactorpy() -> ModuleType | None:
    """Import reactorpy lazily (from the repository root if it is not installed)."""
    global _RP, _RP_ERROR
    if _RP is None and _RP_ERROR is None:
        root = str(Path(__file__).resolve().parents[1])
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            import reactorpy
        except Exception as exc:
            _RP_ERROR = f"import failed: {type(exc).__name__}: {exc}"
        else:
            _RP = reactorpy
    return _RP


def reactorpy_error() -> str:
    """Why :func:`load_reactorpy` returned None."""
    return _RP_ERROR or "unavailable"


def short_error(exc: BaseException, limit: int = 90) -> str:
    """The exception's type and first line of message, cut to ``limit`` characters."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- timing


@contextmanager
def frozen_gc() -> Iterator[None]:
    """``gc.collect(); gc.freeze()`` around a timing series."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def best_times(contenders: dict[str, Arm], reps: int) -> dict[str, float]:
    """Best wall time of each contender, repetitions interleaved, gc frozen beforehand."""
    best = dict.fromkeys(contenders, math.inf)
    with frozen_gc():
        for _ in range(reps):
            for name, arm in contenders.items():
                awaitable = arm()
                gc.collect()
                start = time.perf_counter()
                await awaitable
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def timed(run: Callable[[], Any], reps: int) -> list[float]:
    """Wall times of ``reps`` calls of ``run()``, gc frozen around the series."""
    times = []
    with frozen_gc():
        for _ in range(reps):
            gc.collect()
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------- table


def join_cells(cells: Sequence[str], columns: Columns, right_from: int | None = None) -> str:
    """Cells padded to their column's width (right-aligned from index ``right_from`` on)."""
    return "  ".join(
        c.rjust(w) if right_from is not None and i >= right_from else c.ljust(w)
        for i, (c, (_, w)) in enumerate(zip(cells, columns, strict=True))
    )


def rule(columns: Columns, extra: int = 0) -> str:
    """The dashed line under a header of ``columns`` (``extra`` characters longer)."""
    return "-" * (sum(w + 2 for _, w in columns) + extra)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass(slots=True)
class Row:
    workload: str
    contender: str
    figure: str
    ratio: str = ""
    target: str = ""
    verdict: str = ""


@dataclass(slots=True)
class Table:
    """The rows printed so far, under a script's ``columns`` (workload, contender, figure,
    ratio, target; then the verdict, unpadded)."""

    columns: ClassVar[Columns] = ()
    rows: list[Row] = field(default_factory=list)

    def format_row(self, row: Row) -> str:
        cells = (row.workload, row.contender, row.figure, row.ratio, row.target)
        return join_cells(cells, self.columns) + row.verdict

    def print_header(self) -> None:
        print(join_cells([name for name, _ in self.columns], self.columns) + "verdict")
        print(rule(self.columns, 7))

    def emit(self, row: Row) -> None:
        self.rows.append(row)
        print(self.format_row(row), flush=True)


@dataclass(slots=True)
class RepsConfig(Table):
    """A table and one repetition count: 7, or 2 with ``--quick``."""

    quick: bool = False
    reps: int = 7

    @classmethod
    def make(cls, quick: bool) -> Self:
        return cls(quick=True, reps=2) if quick else cls()


def per_step(t: float, n: int, unit: str = "us/step", ms_digits: int = 1) -> str:
    """A figure such as ``   4.08 us/step (40.8 ms)``: ``t`` seconds over ``n`` steps."""
    return f"{t / n * 1e6:7.2f} {unit} ({t * 1e3:.{ms_digits}f} ms)"


def emit_timings(
    table: Table,
    workload: str,
    best: dict[str, float],
    ref: str,
    figure: Callable[[str, float], str],
    targets: Mapping[str, Target],
) -> None:
    """One row per contender: ``figure(name, time)``, its time over ``best[ref]``, and for
    those in ``targets`` the target's label and whether ``ok(time)`` (PASS/FAIL)."""
    base = best[ref]
    for name, t in best.items():
        row = Row(workload, name, figure(name, t), ratio=f"{t / base:.3f}")
        if name in targets:
            label, ok = targets[name]
            row.target, row.verdict = label, verdict(ok(t))
        table.emit(row)


# --------------------------------------------------------------------------- running


def selection(only: Sequence[str] | None, workloads: Sequence[str]) -> set[str]:
    """The workloads to run (all by default); a ValueError names any unknown one."""
    selected = set(only or workloads)
    unknown = selected - set(workloads)
    if unknown:
        raise ValueError(f"unknown workloads {sorted(unknown)}; choose from {list(workloads)}")
    return selected


async def run_jobs(
    table: Table, jobs: dict[str, Job], selected: set[str], *, catch: bool = False
) -> list[Row]:
    """Await the selected jobs in ``jobs``' order; with ``catch``, a failing job emits an
    ERROR row instead of raising. Returns the table's rows."""
    for name, job in jobs.items():
        if name not in selected:
            continue
        if not catch:
            await job()
            continue
        try:
            await job()
        except Exception as exc:
            table.emit(Row(name, "reactorpy", "failed", verdict=f"ERROR: {short_error(exc)}"))
    return table.rows


async def run_reactorpy_jobs(
    table: Table,
    only: Sequence[str] | None,
    workloads: Sequence[str],
    make_jobs: Callable[[Any, Any], dict[str, Job]],
) -> list[Row]:
    """Header, then the selected jobs of ``make_jobs(table, reactorpy)``, each failure an
    ERROR row; a single SKIP row when reactorpy does not import."""
    selected = selection(only, workloads)
    table.print_header()
    rp = load_reactorpy()
    if rp is None:
        table.emit(Row("all", "reactorpy", "skipped", verdict="SKIP: import failed"))
        return table.rows
    return await run_jobs(table, make_jobs(table, rp), selected, catch=True)


def parse_args(
    argv: Sequence[str] | None,
    doc: str | None,
    choices: Sequence[str] | None = None,
    *,
    quick_help: str = "fewer repetitions",
    what: str = "workloads",
    only_note: str = "",
) -> argparse.Namespace:
    """``--quick``, and ``--only a,b`` among ``choices`` (when given)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if choices is None:
        return parser.parse_args(argv)
    parser.add_argument(
        "--only",
        type=lambda s: [w.strip() for w in s.split(",") if w.strip()],
        help=f"comma-separated {what} among {', '.join(choices)}{only_note}",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(choices))
    if unknown:
        parser.error(f"unknown {what} {unknown}; choose from {', '.join(choices)}")
    return args


def banner(quick: bool, *versions: str) -> str:
    """``python X.Y.Z, <versions>, quick|full mode``."""
    return ", ".join(
        (f"python {sys.version.split()[0]}", *versions, f"{'quick' if quick else 'full'} mode")
    )


T = TypeVar("T", bound=Table)


def run_main(
    argv: Sequence[str] | None,
    doc: str | None,
    workloads: Sequence[str],
    run_benchmarks: Callable[..., Coroutine[Any, Any, list[Row]]],
    config: Callable[[bool], T],
    *,
    quick_help: str = "fewer repetitions",
    versions: Sequence[str] = (),
) -> T:
    """The body of a table script's ``main``: parse the flags, print the banner, run the
    benchmarks into ``config(quick)``, and return it (for the script's closing lines)."""
    args = parse_args(argv, doc, workloads, quick_help=quick_help)
    print(banner(args.quick, *versions))
    cfg = config(args.quick)
    asyncio.run(run_benchmarks(args.quick, args.only, out=cfg))
    return cfg
