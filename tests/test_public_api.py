"""The public surface: __all__ matches what reactorpy exports, and reprs read reactorpy.X."""

from __future__ import annotations

import reactorpy as rp


def test_all_matches_exports():
    """Every name in __all__ exists, and every public attribute is in __all__."""
    public = {n for n in dir(rp) if not n.startswith("_")} - {"testing", "examples", "otel", "cli"}
    assert sorted(public) == sorted(n for n in rp.__all__ if not n.startswith("__"))


def test_public_classes_live_in_reactorpy():
    """Public classes present themselves as reactorpy.X in reprs and tracebacks."""
    for name in (
        "Reactor",
        "Step",
        "RunFailed",
        "Trace",
        "Limiter",
        "Checkpoint",
        "SQLiteJournal",
        "PostgresJournal",
        "RunRecord",
        "RunStatus",
        "OwnershipError",
    ):
        assert "reactorpy" == getattr(rp, name).__module__


def test_exceptions_subclass_matching_builtins():
    """Generic handlers still work: InputError is a ValueError, DefinitionError a TypeError."""
    assert issubclass(rp.InputError, ValueError)
    assert issubclass(rp.DefinitionError, TypeError)
    assert issubclass(rp.RunFailed, ExceptionGroup)
    assert issubclass(rp.CycleError, rp.DefinitionError)
    assert issubclass(rp.ResumeError, rp.ReactorError)
