"""The composite steps a reactor can add: compose, recurse, around, map, switch.

Owns: `Composing`, the part of `Reactor` that adds composite steps (each a thin front to
`reactorpy._composites`, where the steps are made).
Must not import: the executor, the reactor module (which builds on this).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._arguments import Source
from ._composites import make_around, make_compose, make_map, make_recurse, make_switch
from ._errors import DefinitionError

if TYPE_CHECKING:
    from ._step import Step

__all__ = ["Composing"]

#: A reactor, as seen from here (the class is defined on top of this one).
ReactorLike = Any


class Composing:
    """Adds composite steps to a reactor (`Reactor` is made of this)."""

    if TYPE_CHECKING:

        def add(
            self, step: Step[..., Any], name: str | None = None, args: Any = None
        ) -> Step[..., Any]: ...

    def compose(
        self,
        name: str,
        child: ReactorLike,
        args: Mapping[str, Source] | None = None,
        **options: Any,
    ) -> Step[..., Any]:
        """Add a step that runs `child` with the given arguments as its inputs.

        Inputs of `child` not in `args` are wired by name, like a step's parameters. The
        child shares this run's limiter; the composing step holds no slot while it runs.
        When this reactor fails after the child finished, the child's steps are undone as a
        unit, newest first. A halt inside the child halts this run, and resume continues
        inside the child. Options are those of `step`, except ``executor``; ``async_=False``
        runs the child one step at a time (as ``run(async_=False)`` runs a whole reactor).

        >>> import reactorpy as rp
        >>> inner = rp.Reactor("inner", inputs=["x"], returns="inc")
        >>> _ = inner.step(lambda x: x + 1, name="inc")
        >>> outer = rp.Reactor("outer", inputs=["y"], returns="plus")
        >>> _ = outer.compose("plus", inner, args={"x": rp.Input("y")})
        >>> outer.run_sync({"y": 1})
        2
        """
        return self.add(make_compose(name, child, args, options))

    def recurse(
        self,
        name: str,
        child: ReactorLike,
        args: Mapping[str, Source] | None = None,
        *,
        until: Callable[[Any], Any] | None = None,
        max_iterations: int | None = None,
        **options: Any,
    ) -> Step[..., Any]:
        """Add a step that runs `child` again and again, each result the next inputs.

        The first run gets `args` (the child's inputs, wired by name like `compose`); each
        result must then be a mapping holding the child's inputs, which the next run gets.
        It stops after the first result for which ``until(result)`` is truthy, or after
        `max_iterations` runs (at least one of the two is required), and the step's result
        is that last result. Each run's steps are named ``name.[k].step``; they are undone
        as a unit, newest first, if this reactor fails later. A halt inside undoes the runs
        so far, and the step starts over on resume.

        >>> import reactorpy as rp
        >>> halve = rp.Reactor("halve", inputs=["n"], returns="half")
        >>> _ = halve.add(rp.step(lambda n: {"n": n // 2}, name="half"))
        >>> r = rp.Reactor("halving", inputs=["n"], returns="loop")
        >>> _ = r.recurse("loop", halve, until=lambda out: out["n"] <= 1)
        >>> r.run_sync({"n": 40})
        {'n': 1}
        """
        return self.add(make_recurse(name, child, args, until, max_iterations, options))

    def around(
        self,
        name: str,
        child: ReactorLike,
        wrapper: Callable[..., Any],
        args: Mapping[str, Source] | None = None,
        **options: Any,
    ) -> Step[..., Any]:
        """Add a step that runs `child` inside ``await wrapper(run_child, inputs)``.

        `inputs` are the child's inputs (wired like `compose`); ``await run_child()`` runs
        the child with them (or ``run_child(other_inputs)``) and returns its result. The
        wrapper's return value is the step's result. Use it to hold something around a
        group of steps: a database transaction, a lock, a temporary directory; or to
        prepare inputs and post-process the result. If the wrapper raises, or this
        reactor fails later, the child's completed steps are undone (newest first). A halt
        inside the child propagates through the wrapper (which sees `rp.Halted`); the
        child's steps are undone and the step runs again on resume.

        >>> import reactorpy as rp
        >>> child = rp.Reactor("pair", inputs=["x"])
        >>> _ = child.add(rp.step(lambda x: x + 1, name="inc"))
        >>> async def logged(run_child, inputs):
        ...     print("begin", inputs)
        ...     out = await run_child()
        ...     print("commit", out)
        ...     return out["inc"]
        >>> r = rp.Reactor("wrapped", inputs=["x"], returns="txn")
        >>> _ = r.around("txn", child, logged)
        >>> r.run_sync({"x": 1})
        begin {'x': 1}
        commit {'inc': 2}
        2
        """
        return self.add(make_around(name, child, wrapper, args, options))

    def map(
        self,
        name: str,
        over: Source | str,
        step_or_reactor: Step[..., Any] | ReactorLike,
        *,
        as_: str | None = None,
        batch_size: int = 100,
        ordered: bool = True,
        **options: Any,
    ) -> Step[..., Any]:
        """Add a step that runs `step_or_reactor` once per element of `over`.

        `over` (a source, or the name of an input or step) must resolve to an iterable or
        an async iterable; at most `batch_size` elements are taken and run at a time, under
        the shared limiter. The result is the list of results in input order, or with
        ``ordered=False`` in the order the elements finished (batch by batch; Elixir's
        ``strict_ordering?: false``). The element is passed as the parameter (or input)
        named `as_`, by default the only one; other parameters are wired by name from this
        reactor. When an element fails, the other elements of its batch are cancelled and
        every completed element is undone.

        >>> import reactorpy as rp
        >>> r = rp.Reactor("squares", inputs=["xs"], returns="squares")
        >>> _ = r.map("squares", "xs", rp.step(lambda x: x * x, name="square"))
        >>> r.run_sync({"xs": [1, 2, 3]})
        [1, 4, 9]
        """
        if not isinstance(ordered, bool):
            raise DefinitionError(f"map {name!r}: ordered must be True or False, got {ordered!r}.")
        made = make_map(name, over, step_or_reactor, as_, batch_size, options, type(self), ordered)
        return self.add(made)

    def switch(
        self,
        name: str,
        on: Source | str,
        cases: Iterable[tuple[Callable[[Any], Any], Step[..., Any] | ReactorLike]],
        default: Step[..., Any] | ReactorLike | None = None,
        **options: Any,
    ) -> Step[..., Any]:
        """Add a step that runs the first case whose predicate is truthy for `on`'s value.

        Each case is ``(predicate, step_or_reactor)``; their parameters are wired by name
        from this reactor. With no match, `default` runs, or the result is None.

        >>> import reactorpy as rp
        >>> r = rp.Reactor("sign", inputs=["n"], returns="sign")
        >>> _ = r.switch("sign", "n", [(lambda n: n < 0, rp.step(lambda n: "-", name="neg"))],
        ...              default=rp.step(lambda n: "+", name="pos"))
        >>> r.run_sync({"n": -5}), r.run_sync({"n": 5})
        ('-', '+')
        """
        return self.add(make_switch(name, on, cases, default, options, type(self)))
