"""An approval workflow that halts until a person approves, then resumes from a file.

``python -m reactorpy.examples.approval start report.pdf`` halts and writes a checkpoint;
``python -m reactorpy.examples.approval approve report.pdf`` resumes it in a new process.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from pathlib import Path

import reactorpy as rp

STATE = Path("approval.checkpoint")
APPROVALS = Path("approvals.txt")

publishing = rp.Reactor("publishing", inputs=["document"], returns="publish")


@publishing.step
async def render(document: str) -> str:
    """Render the document (expensive: it is not redone on resume)."""
    await asyncio.sleep(0.01)
    return f"{document} (rendered)"


@publishing.step
def approval(document: str) -> str:
    """Halt until someone has approved the document."""
    approved = APPROVALS.read_text().split() if APPROVALS.exists() else []
    if document not in approved:
        raise rp.Halt(f"waiting for approval of {document}")
    return "approved"


@publishing.step
async def publish(render: str, approval: str) -> str:
    return f"published {render}, {approval}"


def main(argv: list[str]) -> int:
    """``start DOC`` runs until the approval halts; ``approve DOC`` approves and resumes."""
    command, document = argv
    if command == "start":
        try:
            print(asyncio.run(publishing.run({"document": document})))
        except rp.Halted as halted:
            STATE.write_bytes(pickle.dumps(halted.checkpoint))
            print(f"halted: {halted.reason}; checkpoint in {STATE}")
        return 0
    with APPROVALS.open("a") as f:
        f.write(document + "\n")
    checkpoint = pickle.loads(STATE.read_bytes())
    print(asyncio.run(publishing.resume(checkpoint)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
