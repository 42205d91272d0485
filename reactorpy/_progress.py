"""The command line's progress displays: a line per step, or a live table drawn with Rich.

Owns: `PlainProgress` (a line per finished step, for pipes, files, CI logs, ``TERM=dumb``, and
installs without Rich), `RichProgress` (a live table of steps on a terminal), `progress_for`,
which picks one for a stream, and `console_for`, which decides (for the run listings too).
Both displays are middleware fed by step events; both end with a total-time line and mark
the steps a failed run never started as ``skipped`` and those it stopped as ``cancelled``.
Neither ever raises into a run: a closed stream (``| head``) only silences them.
Must not import: the executor; Rich at import time (it is the optional ``reactorpy[cli]``
extra, imported by `progress_for` and `RichProgress`).

Terminals and environment (Rich reads these): ``NO_COLOR`` removes colours, ``FORCE_COLOR``
colours the plain lines of a stream that is not a terminal, ``TERM=dumb`` gets plain lines
without escape codes, ``COLUMNS``/``LINES`` override the terminal's size. The live table is
drawn again at every tick at the terminal's current size, so it follows resizing; rows that
do not fit are cut with an ellipsis, never wrapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any, Final, TextIO

from ._events import Event, RunInfo

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.live import Live
    from rich.text import Text

__all__ = ["PlainProgress", "RichProgress", "console_for", "progress_for"]

STYLES: Final = {
    "pending": "dim",
    "running": "yellow",
    "retrying": "yellow",
    "done": "green",
    "skipped": "dim",
    "cancelled": "magenta",
    "failed": "bold red",
    "halted": "magenta",
    "undoing": "cyan",
    "undone": "cyan",
    "undo failed": "bold red",
}
# Row order when there are more steps than terminal lines: what needs attention first.
_URGENCY: Final = {
    "failed": 0,
    "undo failed": 0,
    "halted": 1,
    "cancelled": 1,
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
# The order of the counts in the header and the total line: what moves first.
_COUNT_ORDER: Final = (
    "running",
    "retrying",
    "undoing",
    "done",
    "failed",
    "halted",
    "cancelled",
    "undone",
    "undo failed",
    "skipped",
    "pending",
)
_CLOSED_STREAM: Final = (BrokenPipeError, ConnectionResetError, ValueError)  # ValueError: closed


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


def _now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0


class _Progress:
    """Shared bookkeeping: one row per step, updated from middleware events."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.title = ""
        self.started: float | None = None  # loop time when the outermost run started
        self.ended: float | None = None
        self.outcome: str | None = None  # "completed", "failed", "halted" once it ended

    # -- middleware hooks ------------------------------------------------------------------
    def on_run_start(self, run: RunInfo) -> None:
        """Add a pending row for every planned step of the outermost run."""
        if run.parent is None:
            self.title = run.reactor
            self.started = _now()
            for name in run.step_names:
                self.rows.setdefault(name, _Row())

    def on_event(self, event: Event) -> None:
        """Update the step's row."""
        self._update(event)

    def on_run_complete(self, run: RunInfo, result: Any) -> None:
        """Note the end of the outermost run (returning None leaves the result alone)."""
        if run.parent is None:
            self._end("completed")

    def on_run_error(self, run: RunInfo, error: BaseException) -> None:
        """Mark what the failed run never started as skipped, what it stopped as cancelled."""
        if run.parent is None:
            self._end("cancelled" if isinstance(error, asyncio.CancelledError) else "failed")

    def on_run_halt(self, run: RunInfo, checkpoint: Any) -> None:
        """Note the halt: steps not started stay pending (a resume runs them)."""
        if run.parent is None:
            self._end("halted")

    # -- bookkeeping -----------------------------------------------------------------------
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
        elif event.kind == "guard_skip":
            row.note = "its when= guard said no"
        row.state = state
        return row

    def _end(self, outcome: str) -> list[tuple[str, _Row]]:
        """Record the end; return the rows that changed state because of it."""
        self.outcome = outcome
        self.ended = _now()
        changed = []
        for name, row in self.rows.items():
            if row.state in ("running", "retrying"):
                row.state, row.end = "cancelled", self.ended
                changed.append((name, row))
            elif row.state == "pending" and outcome != "halted":
                row.state = "skipped"
                row.note = f"not started: the run {outcome}"
                changed.append((name, row))
        return changed

    def counts(self) -> dict[str, int]:
        """How many steps are in each state, in display order."""
        found: dict[str, int] = {}
        for row in self.rows.values():
            found[row.state] = found.get(row.state, 0) + 1
        return {state: found[state] for state in _COUNT_ORDER if state in found}

    def elapsed(self) -> float:
        """Seconds since the outermost run started (until it ended)."""
        if self.started is None:
            return 0.0
        return (self.ended if self.ended is not None else _now()) - self.started

    def total_line(self, *, title: bool = True) -> str:
        """``greeting: completed in 0.021 s (3 done)`` (without ``greeting: `` if not
        `title`)."""
        counts = ", ".join(f"{n} {state}" for state, n in self.counts().items())
        outcome = self.outcome or "running"
        line = f"{outcome} in {self.elapsed():.3f} s ({counts or 'no steps'})"
        return f"{self.title}: {line}" if title else line


class PlainProgress(_Progress):
    """Middleware printing one line per finished step, then a total-time line.

    Args:
        stream: where to print.
        console: a Rich ``Console`` writing to `stream`, to colour the lines (None: plain
            ``print``; the CLI passes one when Rich says the stream takes colours).
    """

    def __init__(self, stream: TextIO, console: Console | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.console = console
        self.closed = False  # the stream went away (a closed pipe): print nothing more

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
        self._print(f"{label:>9} {event.step}{took}{attempt}{note}", label)

    def _end(self, outcome: str) -> list[tuple[str, _Row]]:
        changed = super()._end(outcome)
        for name, row in changed:
            self._print(f"{row.state:>9} {name}", row.state)
        self._print(f"{'total':>9} {self.total_line()}", "bold")
        return changed

    def _print(self, line: str, style: str) -> None:
        if self.closed:
            return
        try:
            if self.console is not None:
                from rich.text import Text

                self.console.print(Text(line, style=STYLES.get(style, style)), soft_wrap=True)
            else:
                print(line, file=self.stream, flush=True)
        except _CLOSED_STREAM:
            self.closed = True
            silence(self.stream)


class RichProgress(_Progress):
    """Middleware drawing a live table of the steps on a terminal, with Rich.

    Each row shows a step's state, its name (cut with an ellipsis when the terminal is
    narrow), its elapsed time and, for errors, the error. `start` shows the table, `animate`
    redraws it every `interval` seconds (at the terminal's current size, so it follows
    resizing), `close` draws the final frame, with the total-time line, and leaves it on the
    screen.

    Args:
        console: the Rich ``Console`` to draw on (it knows the stream, its size and colours).
    """

    interval: float = 0.1

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.closed = False
        self._live: Live | None = None

    def start(self) -> None:
        """Show the table (before the run starts)."""
        from rich.live import Live

        self._live = Live(
            console=self.console,
            auto_refresh=False,  # redrawn by `animate` on the loop: no thread reads the rows
            transient=False,
            # What steps print goes above the table instead of through it (and, with
            # --json, to the table's stream rather than into stdout's JSON).
            redirect_stdout=True,
            redirect_stderr=True,
            get_renderable=self.render,
        )
        self._guard(self._live.start)

    def on_event(self, event: Event) -> None:
        """Update the step's row; failures are drawn at once, the rest at the next tick."""
        self._update(event)
        if event.kind in ("step_error", "step_halt", "undo_error"):
            self.tick()

    def tick(self) -> None:
        """Redraw the table now."""
        if self._live is not None:
            self._guard(self._live.refresh)

    async def animate(self) -> None:
        """Redraw every `interval` seconds until cancelled."""
        while not self.closed:
            self.tick()
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        """Draw the final frame and leave it on the screen."""
        if self._live is not None:
            self._guard(self._live.stop)
            self._live = None

    def _guard(self, draw: Any) -> None:
        if self.closed:
            return
        try:
            draw()
        except _CLOSED_STREAM:
            self.closed = True
            silence(self.console.file)

    def render(self) -> RenderableType:
        """What the live display draws: this object, rendered at each refresh."""
        return self

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Render at the size of the console drawing it (so a resized terminal is followed)."""
        yield self.frame(options.size.height)

    def frame(self, height: int) -> RenderableType:
        """The table as it stands: a header, one row per step (those that fit in `height`
        lines, what needs attention first), and the elapsed or total-time line."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = _now()
        items = list(self.rows.items())
        room = max(height - 2, 2)
        hidden = 0
        if len(items) > room:
            position = {name: k for k, (name, _) in enumerate(items)}
            items.sort(key=lambda it: (_URGENCY.get(it[1].state, 9), position[it[0]]))
            hidden = len(items) - (room - 1)
            items = items[: room - 1]
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(justify="right", no_wrap=True, min_width=9)
        table.add_column(no_wrap=True, ratio=3)
        table.add_column(justify="right", no_wrap=True, min_width=8)
        table.add_column(no_wrap=True, overflow="ellipsis", ratio=2, style="dim")
        for name, row in items:
            elapsed = row.elapsed(now)
            took = f"{elapsed:.2f}s" if elapsed is not None else ""
            attempt = f" #{row.attempt}" if row.attempt > 1 and row.state != "undone" else ""
            table.add_row(
                Text(row.state, style=STYLES.get(row.state, "")),
                _middle(name),
                took + attempt,
                row.note,
            )
        if hidden:
            table.add_row("", Text(f"... and {hidden} more", style="dim"), "", "")
        counts = Text.from_markup(
            "  ".join(f"[{STYLES[state]}]{n} {state}[/]" for state, n in self.counts().items())
        )
        if self.outcome is not None:
            style = {"completed": "bold green", "halted": "bold magenta"}.get(
                self.outcome, "bold red"
            )
            foot = _line(_middle(self.title, style), Text(self.total_line(title=False), style))
        else:
            foot = Text(f"running for {self.elapsed():.2f} s", style="dim")
        return Group(_line(_middle(self.title, "bold"), counts), table, foot)


def _line(title: RenderableType, rest: Text) -> RenderableType:
    """One line: `title` (cut in the middle when the line is too narrow), then `rest`."""
    from rich.table import Table

    rest.no_wrap = True
    rest.overflow = "ellipsis"
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_row(title, rest)
    return grid


def _middle(text: str, style: str = "") -> RenderableType:
    from rich.measure import Measurement
    from rich.text import Text

    class Middle:
        """`text`, cut in the middle with an ellipsis when it does not fit: step names
        differ at their ends as often as at their starts (``fetch_1``, ``map.[3].step``)."""

        def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
            return Measurement(min(len(text), 8), len(text))

        def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
            width = options.max_width
            shown = text
            if len(text) > width:
                head = max(width - 1, 0) - (width - 1) // 3
                tail = max(width - 1 - head, 0)
                shown = text[:head] + "…" + (text[len(text) - tail :] if tail else "")
            yield Text(shown[: max(width, 1)], style=style, no_wrap=True)

    return Middle()


def silence(stream: Any) -> None:
    """Point `stream`'s file descriptor at /dev/null after its reader went away, so that
    the interpreter's last flush at exit does not report a broken pipe."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def console_for(stream: TextIO) -> tuple[Console | None, bool]:
    """How to draw on `stream`: a Rich ``Console`` for it (None when Rich is not installed,
    or the stream is no terminal and takes no colours), and whether it is an interactive
    terminal (``NO_COLOR``, ``FORCE_COLOR`` and ``TERM=dumb`` decide, as Rich reads them)."""
    try:
        from rich.console import Console
    except ImportError:
        return None, False
    console = Console(file=stream, highlight=False)
    if console.is_interactive and _isatty(stream):
        return console, True
    coloured = console.color_system is not None and not console.no_color
    return (console if coloured else None), False


def progress_for(stream: TextIO) -> PlainProgress | RichProgress:
    """The display for `stream`: a live Rich table on an interactive terminal, else plain
    lines (coloured when Rich says the stream takes colours: ``FORCE_COLOR``); plain,
    uncoloured lines when Rich is not installed."""
    console, terminal = console_for(stream)
    if terminal and console is not None:
        return RichProgress(console)
    return PlainProgress(stream, console=console)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
