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
    "Limiter",
    "LoggingMiddleware",
    "NewSteps",
    "OffloadError",
    "PathError",
    "Plan",
    "Reactor",
    "ReactorError",
    "Result",
    "ResumeError",
    "Retry",
    "Reversible",
    "RunFailed",
    "RunInfo",
    "Skip",
    "Step",
    "Trace",
    "TypeMismatchError",
    "UndoRecord",
    "UnknownReferenceError",
    "Value",
    "__version__",
    "step",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("reactorpy._"):
        _obj.__module__ = "reactorpy"
del _name, _obj
