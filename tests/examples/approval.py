"""An approval workflow that halts until its document is approved (used across processes)."""

import reactorpy as rp

APPROVED: set[str] = set()

reactor = rp.Reactor("approval", inputs=["doc"], returns="publish")


@reactor.step
async def review(doc: str) -> str:
    return f"{doc} (reviewed)"


@reactor.step
async def approval(doc: str) -> bool:
    if doc not in APPROVED:
        raise rp.Halt(f"waiting for approval of {doc!r}")
    return True


@reactor.step
def publish(review: str, approval: bool) -> str:
    return f"published {review}"
