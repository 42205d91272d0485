"""Composite steps: compose, map, switch, recurse, around, and steps added at run time.

Owns: the steps that run children, each in a module of its own (`compose`: compose and
switch; `map`; `repeat`: recurse and around; `new_steps`: `rp.NewSteps`), and what they
share (`base`). A composite talks to its run through one protocol, `ChildScope`: run a child
and get back its value and undo records, undo records, keep records for the run, hand over
a halt. It holds no limiter slot while its children run, so nesting cannot deadlock.
Must not import: the executor's state (only `_executor.scope`'s protocol, the shared
coroutine driver `_executor.inline`, and `shielded`), the reactor module, the CLI.
"""

from .base import CompositeStep, child_reactor, is_reactor
from .compose import make_compose, make_switch
from .map import make_map
from .new_steps import run_new_steps
from .repeat import make_around, make_recurse

__all__ = [
    "CompositeStep",
    "child_reactor",
    "is_reactor",
    "make_around",
    "make_compose",
    "make_map",
    "make_recurse",
    "make_switch",
    "run_new_steps",
]
