"""The seed tutorial, "Building Async Workflows", ported to reactorpy.

Owns: the ``user_data`` reactor (three independent fetches and an aggregation) and `demo`,
which runs it concurrently and one step at a time and prints both wall times.
Must not import: the engine's private modules; this is user code, written against ``reactorpy``.

The three fetches depend only on the input, so they run at once and a run takes as long as
the slowest one (0.30 s) plus the aggregation; with ``async_=False`` the steps run one after
another and the run takes their sum (0.65 s).

>>> import asyncio
>>> result = asyncio.run(user_data.run({"user_id": 123}))
>>> result["summary"]
'User 123 has 42 logins'
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any, TextIO

import reactorpy as rp

__all__ = ["demo", "main", "user_data"]

user_data = rp.Reactor("async_user_data", inputs=["user_id"], returns="aggregate_data")


@user_data.step
async def fetch_profile(user_id: int) -> dict[str, Any]:
    """Fetch the user's profile (a 0.20 s call)."""
    await asyncio.sleep(0.20)
    return {"id": user_id, "name": f"User {user_id}", "email": f"user{user_id}@example.com"}


@user_data.step
async def fetch_preferences(user_id: int) -> dict[str, Any]:
    """Fetch the user's preferences (a 0.15 s call)."""
    await asyncio.sleep(0.15)
    return {"user_id": user_id, "theme": "light", "language": "en"}


@user_data.step
async def fetch_activity(user_id: int) -> dict[str, Any]:
    """Fetch the user's recent activity (a 0.30 s call)."""
    await asyncio.sleep(0.30)
    return {
        "user_id": user_id,
        "last_login": datetime.datetime.now(datetime.UTC).isoformat(),
        "login_count": 42,
    }


@user_data.step
def aggregate_data(
    fetch_profile: dict[str, Any],
    fetch_preferences: dict[str, Any],
    fetch_activity: dict[str, Any],
) -> dict[str, Any]:
    """Combine the three fetches; a plain def, so it runs on the event-loop thread."""
    return {
        "profile": fetch_profile,
        "preferences": fetch_preferences,
        "activity": fetch_activity,
        "summary": f"User {fetch_profile['id']} has {fetch_activity['login_count']} logins",
    }


async def demo(user_id: int = 123, *, out: TextIO | None = None) -> dict[str, Any]:
    """Run ``user_data`` concurrently, then one step at a time, printing both wall times.

    Times are read from the event loop's clock, so under
    `reactorpy.testing.VirtualClockLoop` they are exact (0.30 s and 0.65 s).

    Args:
        user_id: the input of both runs.
        out: where to print (default: ``sys.stdout`` at call time).

    Returns:
        The aggregated result of the concurrent run.
    """
    loop = asyncio.get_running_loop()

    def say(line: str) -> None:
        print(line, file=out)

    user_data.plan()  # validate and compile once, as run() would, outside the timing
    start = loop.time()
    result: dict[str, Any] = await user_data.run({"user_id": user_id})
    concurrent = loop.time() - start
    say(f"concurrent run:                {concurrent:.2f} s  (the slowest fetch: 0.30 s)")

    start = loop.time()
    await user_data.run({"user_id": user_id}, async_=False)
    sequential = loop.time() - start
    say(f"sequential run (async_=False): {sequential:.2f} s  (the sum: 0.20 + 0.15 + 0.30 s)")

    say(f"summary: {result['summary']}")
    say(json.dumps(result, indent=2))
    return result


def main() -> None:
    """Run `demo` in a fresh event loop (what ``python -m reactorpy demo`` does)."""
    asyncio.run(demo())


if __name__ == "__main__":
    main()
