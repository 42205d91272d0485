"""What a run checks of its inputs before any step runs.

Owns: `check_inputs`: the reactor's input transforms (once per run), the paths into inputs
that steps use, and what composites need of the inputs they are wired to (a map: something
to iterate). Each problem is an `InputError` naming the input, raised before any step.
Must not import: the rest of the executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._arguments import dig
from .._errors import InputError

if TYPE_CHECKING:
    from .run import Run

__all__ = ["check_inputs"]


def check_inputs(run: Run) -> None:
    """Before any step: the reactor's input transforms, the paths into inputs, and what
    composites require of inputs (map: something to iterate). `InputError` otherwise."""
    plan = run.plan
    n = run.n
    vals = run.st.vals
    transforms = run.reactor.input_transforms
    for k, name in enumerate(plan.inputs):
        transform = transforms.get(name) if transforms else None
        if transform is None:
            continue
        try:
            vals[n + k] = transform(vals[n + k])
        except Exception as exc:
            raise InputError(
                f"Input {name!r} of reactor {plan.reactor!r}: its transform raised "
                f"{type(exc).__name__}: {exc}",
                reactor=plan.reactor,
                available=plan.inputs,
            ) from exc
    for step_name, param, source in plan.input_paths:
        slot = n + plan.inputs.index(source.name)
        try:
            dig(vals[slot], source.path, step_name, param, source)
        except LookupError as exc:
            raise InputError(
                f"Step {step_name!r}, argument {param!r}: input {source.name!r} has no "
                f"item {getattr(exc, 'at', '?')!r} along the path {source.path!r}.",
                reactor=plan.reactor,
                available=plan.inputs,
                step=step_name,
                argument=param,
                path=source.path,
            ) from None
    inputs = range(n, n + len(plan.inputs))
    for i in plan.input_checks:
        checks = plan.steps[i].input_checks
        for a in plan.argv[i]:
            check = checks.get(a.param)
            if check is None or a.slot not in inputs:
                continue  # a result: the step checks it when it runs
            value: Any = vals[a.slot]
            try:
                if a.path:
                    value = dig(value, a.path, plan.order[i], a.param, a.source)
                if a.transform is not None:
                    value = a.transform(value)
            except Exception:
                continue
            problem = check(value)
            if problem:
                name = plan.inputs[a.slot - n]
                raise InputError(
                    f"Step {plan.order[i]!r}: input {name!r} {problem}",
                    reactor=plan.reactor,
                    available=plan.inputs,
                    step=plan.order[i],
                    argument=a.param,
                )
