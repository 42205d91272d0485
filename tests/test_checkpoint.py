"""Checkpoints: what a halted or finished run keeps, and how it is read back."""

from __future__ import annotations

import json
import pickle

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual


def halted() -> tuple[rp.Reactor, rp.Checkpoint]:
    r = rp.Reactor("r", inputs=["x"], returns="last")

    @r.step
    def first(x):
        return x + 1

    @r.step
    def last(first):
        if first < 10:
            raise rp.Halt("wait")
        return first

    with pytest.raises(rp.Halted) as info:
        run_virtual(r.run({"x": 1}))
    return r, info.value.checkpoint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": 1', "not valid JSON"),
        ("123", "should be a JSON object, got int 123"),
        ("[]", "should be a JSON object, got list"),
        ('{"format": 1}', "has no field"),
        ('{"format": 7}', "Unknown checkpoint format 7"),
    ],
)
def test_from_json_of_what_is_not_a_checkpoint_is_a_resume_error(text, message):
    """Truncated JSON, JSON of another shape: a ResumeError saying what is wrong."""
    with pytest.raises(rp.ResumeError, match=message):
        rp.Checkpoint.from_json(text)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reactor", 5, "checkpoint.reactor should be str, got int 5"),
        ("completed", "first", "checkpoint.completed should be list"),
        ("completed", [1], "checkpoint.completed should be a list of step names"),
        ("attempts", {"first": "1"}, "counts 'first' as '1'"),
        ("undo_stack", [["a"]], r"undo_stack\[0\] should be \[step, value, arguments"),
        ("finished", "no", "checkpoint.finished should be bool"),
        ("inner", {"sub": 3}, r"checkpoint.inner\['sub'\] should be a JSON object"),
    ],
)
def test_from_json_names_the_field_of_the_wrong_type(field, value, message):
    """A field of the wrong type is a ResumeError naming the field."""
    _, checkpoint = halted()
    data = json.loads(checkpoint.to_json())
    data[field] = value
    with pytest.raises(rp.ResumeError, match=message):
        rp.Checkpoint.from_json(json.dumps(data))


def test_from_json_missing_a_field_names_it():
    """A field left out is a ResumeError naming it."""
    _, checkpoint = halted()
    data = json.loads(checkpoint.to_json())
    del data["inputs"]
    with pytest.raises(rp.ResumeError, match="has no field 'inputs'"):
        rp.Checkpoint.from_json(json.dumps(data))


def test_a_checkpoint_naming_an_unknown_step_is_refused_before_anything_runs():
    """JSON edited to name a step the reactor lacks: ResumeError at resume, no step run."""
    r, checkpoint = halted()
    data = json.loads(checkpoint.to_json())
    data["completed"].append("ghost")
    with pytest.raises(rp.ResumeError, match="names steps that reactor 'r' does not have: 'ghost'"):
        run_virtual(r.resume(rp.Checkpoint.from_json(json.dumps(data))))


def test_a_checkpoint_round_trips_through_json_and_resumes():
    """to_json then from_json gives a checkpoint that resumes like the original."""
    r, checkpoint = halted()
    again = rp.Checkpoint.from_json(checkpoint.to_json())
    assert again == checkpoint
    with pytest.raises(rp.Halted):  # `last` halts again: first's result came back
        run_virtual(r.resume(again))


@pytest.mark.parametrize("through", ["pickle", "json"])
async def test_idempotency_keys_stay_the_same_across_a_resume_and_an_undo(through: str) -> None:
    """A step that halts and runs again on resume, and the undo of a resumed run, see the
    key the first run gave (the checkpoint carries the run's id)."""
    keys: list[tuple[str, str]] = []
    approved = {"now": False}
    r = rp.Reactor("keys", inputs=["x"], returns="pay")

    @r.step
    async def hold(x: int, ctx: rp.Context) -> int:
        keys.append(("hold", ctx.idempotency_key))
        return x

    @hold.undo
    async def unhold(value: int, ctx: rp.Context) -> None:
        keys.append(("unhold", ctx.idempotency_key))

    @r.step
    async def pay(hold: int, ctx: rp.Context) -> int:
        keys.append(("pay", ctx.idempotency_key))
        if not approved["now"]:
            raise rp.Halt("approval")
        return hold

    def again(cp: rp.Checkpoint) -> rp.Checkpoint:
        if through == "json":
            return rp.Checkpoint.from_json(cp.to_json())
        return pickle.loads(pickle.dumps(cp))

    with pytest.raises(rp.Halted) as halted:
        await r.run({"x": 1})
    approved["now"] = True
    done = await r.resume(again(halted.value.checkpoint))
    assert done == 1
    approved["now"] = False
    with pytest.raises(rp.Halted) as second:
        await r.run({"x": 2})
    await r.undo(again(second.value.checkpoint))
    first_id = keys[0][1].split(":")[0]
    second_id = keys[3][1].split(":")[0]
    assert first_id != second_id
    assert keys == [
        ("hold", f"{first_id}:hold"),
        ("pay", f"{first_id}:pay"),
        ("pay", f"{first_id}:pay"),
        ("hold", f"{second_id}:hold"),
        ("pay", f"{second_id}:pay"),
        ("unhold", f"{second_id}:hold"),
    ]
