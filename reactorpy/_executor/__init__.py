"""Execution: one run of a compiled `Plan`, its scheduling, retries, undo, halt and cancel.

Owns: `Run` and everything it is made of. A definition never changes while it runs: each
run has its own state (`state.RunState`), undo stack (`saga.UndoLedger`) and dispatch
table (`modes.Modes`, derived once per plan and kind of run).
Must not import: the composites (they reach a run through `scope.ChildScope`), the reactor
module, the CLI.

The scheduling loop, in the graphlib style (counters prepared at plan time):

1. Check the inputs (transforms, paths, what composites need of them) and seed the value
   array with inputs and constants (`run.Run.execute`, `inputs.check_inputs`).
2. Start the ready steps, most critical first (`dispatch.dispatch`), each by its mode in
   the dispatch table (`modes.modes_of`):
   a. a plain ``def`` with no options runs at once, where it became ready, and what its
      completion makes ready is dispatched in turn (`dispatch.run_inline`);
   b. a step that takes a slot takes one, or waits in the limiter's queue, critical path
      first (`endings.take_slot`, woken by `endings.Waiting`), and then starts in a
      worker of its own;
   c. the rest go onto a worker's stack: the calling worker's, or one new worker for
      those made ready together (`scheduler.spawn`).
3. A worker (`scheduler.worker`) starts the steps of its stack one after another, each in
   its own copy of the context: called directly (`scheduler.run_fast`), or through its
   attempts (`scheduler.run_one`, `attempts.attempts`: guard, retries, backoff, timeout,
   compensation). One that suspends keeps the worker and the rest of the stack moves to a
   new worker (`scheduler.suspended`, with `inline.start` and `inline.InContext`).
4. A step that completes (`scheduler.finish`) is recorded once (`endings.record`: its
   result stored, its undo pushed onto the ledger (`saga.UndoLedger`), results no remaining
   step reads released, its dependents counted down); what became ready is dispatched
   (step 2) onto the worker's own stack, and its slot goes to the best waiting step
   (`endings.end_slot`). In a journaled run the completion is appended to the journal
   first (`endings.record_durably`, `durable.Durable.write`: a worker's pass in one
   request, one append of a run in flight at a time), and what it made ready is
   dispatched once it is durable, by the worker that waits for the write if it has
   nothing else to start (`durable.Durable.wait_for_write`).
5. When every step is done, the run returns the value of ``returns`` (`Run._finish`).
6. When an error stands (`endings.fail`), a step halts (`endings.halt`) or the timeout
   passes, nothing new starts (`endings.stop`): running steps get ``grace`` seconds, then
   are cancelled (`endings.drain`); a journaled run then waits for its completions to be
   durable (`endings.recorded`). On failure every completed step with an undo is undone,
   newest first (`saga.Undoer`, `Run._failed`) and `RunFailed` is raised; on halt `Halted`
   carries a checkpoint (`resume.make_checkpoint`); a halt reaches the child runs of new
   steps, which halt too (`endings.halts_instead`) and continue on resume
   (`scheduler.resume_inside`, `inflight`). Cancellation of ``run()`` cancels running
   steps at once, undoes, and re-raises (`Run._cancelled`).

Composite steps run child runs through `scope.ChildScope` (`Run.child`); a resumed run
starts from `resume.restore`; `Reactor.undo` is `resume.revert`. Events of steps called
directly are delivered by `observe`; steps run through their attempts report their own.
"""

from .attempts import shielded
from .durable import Durable, undo_from_journal
from .run import NewStepsRunner, Run
from .scope import ChildRun, ChildScope, halted_child

__all__ = [
    "ChildRun",
    "ChildScope",
    "Durable",
    "NewStepsRunner",
    "Run",
    "halted_child",
    "shielded",
    "undo_from_journal",
]
