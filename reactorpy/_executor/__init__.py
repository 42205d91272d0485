"""Execution: one run of a compiled `Plan`, its scheduling, retries, undo, halt and cancel.

Owns: `Run` and everything it is made of. A definition never changes while it runs: each
run has its own state (`state.RunState`), undo stack (`saga.UndoLedger`) and dispatch
table (`modes.Modes`, derived once per plan and kind of run).
Must not import: the composites (they reach a run through `scope.ChildScope`), the reactor
module, the CLI.

The scheduling loop, in the graphlib style (counters prepared at plan time):

1. Check the inputs (transforms, paths, what composites need of them); seed the value
   array with inputs and constants (`run.Run.execute`, `Run._check_inputs`).
2. Start the ready steps, most critical first (`scheduler.dispatch`), each by its mode in
   the dispatch table (`modes.modes_of`):
   a. a plain ``def`` with no options runs at once, where it became ready, and what its
      completion makes ready is dispatched in turn (`scheduler.run_inline`);
   b. a step that takes a slot takes one, or waits in the limiter's queue, critical path
      first (`scheduler.take_slot`);
   c. the rest go onto a worker's stack: the calling worker's, or one new worker for
      those made ready together.
3. A worker (`scheduler.worker`) starts the steps of its stack one after another, each in
   its own copy of the context: called directly (`scheduler.run_fast`), or through its
   attempts (`attempts.attempts`: guard, retries, backoff, timeout, compensation). One that
   suspends keeps the worker; the rest of the stack moves to a new worker
   (`scheduler.suspended`, with `inline.start` and `inline.InContext`).
4. A step that completes (`scheduler.finish`) is recorded once (`scheduler.record`: its
   result stored, its undo pushed onto the ledger, results no remaining step reads
   released, its dependents counted down); what became ready is dispatched (step 2) onto
   the worker's own stack, and its slot goes to the best waiting step.
5. When every step is done, the run returns the value of ``returns`` (`Run._finish`).
6. When an error stands (`scheduler.fail`), a step halts (`scheduler.halt`) or the
   timeout passes, nothing new starts (`scheduler.stop`): running steps get ``grace``
   seconds, then are cancelled (`Run._drain`). On failure every completed step with an
   undo is undone, newest first (`saga.Undoer`, `Run._failed`) and `RunFailed` is raised;
   on halt `Halted` carries a checkpoint (`resume.make_checkpoint`). Cancellation of
   ``run()`` cancels running steps at once, undoes, and re-raises (`Run._cancelled`).

Composite steps run child runs through `scope.ChildScope` (`Run.child`); a resumed run
starts from `resume.restore`.
"""

from .run import NewStepsRunner, Run
from .scope import ChildRun, ChildScope

__all__ = ["ChildRun", "ChildScope", "NewStepsRunner", "Run"]
