"""reactorpy: an asyncio-native saga orchestrator.

Decorate plain functions as steps; their parameters wire them into a graph; ``await
reactor.run(inputs)`` starts each step the moment its own dependencies are done, runs
independent steps concurrently, and, when a step fails, undoes what was done and raises one
clear error.

>>> import reactorpy as rp
>>> r = rp.Reactor("sum", inputs=["xs"], returns="total")
>>> @r.step
... def total(xs):
...     return sum(xs)
>>> r.run_sync({"xs": [1, 2, 3]})
6
"""

import typing as _typing

# The executor is imported here, not by the definition layer (which must not import it), so
# that a first run pays no import time.
from . import _executor  # noqa: F401
from ._arguments import Context, Input, PathError, Result, Value
from ._checkpoint import Checkpoint, UndoRecord
from ._errors import (
    CycleError,
    DefinitionError,
    DuplicateStepError,
    Halt,
    Halted,
    InputError,
    ReactorError,
    ResumeError,
    Retry,
    RunFailed,
    TypeMismatchError,
    UnknownReferenceError,
)
from ._events import EVENT_KINDS, Event, RunInfo
from ._limiter import Limiter
from ._logging import LoggingMiddleware
from ._offload import OffloadError
from ._plan import Plan
from ._reactor import Reactor
from ._reversible import Reversible
from ._step import Continue, NewSteps, Skip, Step, step
from ._trace import Trace

if _typing.TYPE_CHECKING:
    from ._journal import (
        Journal,
        JsonSerializer,
        OwnershipError,
        PickleSerializer,
        PostgresJournal,
        RecordedError,
        RunRecord,
        RunStatus,
        SQLiteJournal,
    )

__version__ = "0.1.0"

__all__ = [
    "EVENT_KINDS",
    "Checkpoint",
    "Context",
    "Continue",
    "CycleError",
    "DefinitionError",
    "DuplicateStepError",
    "Event",
    "Halt",
    "Halted",
    "Input",
    "InputError",
    "Journal",
    "JsonSerializer",
    "Limiter",
    "LoggingMiddleware",
    "NewSteps",
    "OffloadError",
    "OwnershipError",
    "PathError",
    "PickleSerializer",
    "Plan",
    "PostgresJournal",
    "Reactor",
    "ReactorError",
    "RecordedError",
    "Result",
    "ResumeError",
    "Retry",
    "Reversible",
    "RunFailed",
    "RunInfo",
    "Skip",
    "RunRecord",
    "RunStatus",
    "SQLiteJournal",
    "Step",
    "Trace",
    "TypeMismatchError",
    "UndoRecord",
    "UnknownReferenceError",
    "Value",
    "__version__",
    "step",
]

# The journals (durable runs) load on first use: `import reactorpy` stays cheap, and never
# imports sqlite3 or asyncpg (which PostgresJournal imports only when one is made).
_LAZY = frozenset(
    {
        "Journal",
        "JsonSerializer",
        "OwnershipError",
        "PickleSerializer",
        "PostgresJournal",
        "RecordedError",
        "RunRecord",
        "RunStatus",
        "SQLiteJournal",
    }
)


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        from . import _journal

        value = getattr(_journal, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'reactorpy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)


for _name in __all__:
    _obj = globals().get(_name)  # None for the lazy names (_journal labels its own)
    if isinstance(_obj, type) and _obj.__module__.startswith("reactorpy._"):
        _obj.__module__ = "reactorpy"
del _name, _obj
