"""Scaling out: the seed's user data for many users, plus a CPU-heavy score per user.

Owns: ``scoring`` (a map over user ids of ``per_user``: the seed's ``user_data`` composed with
a CPU-bound ``score`` step) and `main`, which sends the scores to a process pool, or to a dask
cluster when ``--dask`` is given and ``reactorpy[dask]`` is installed.
Must not import: the engine's private modules; this is user code.

``python -m reactorpy.examples.scoring [--users N] [--dask]``

The fetches are I/O and stay on the event loop; ``score`` is CPU-bound, so ``run(executor=...)``
sends it (a plain ``def`` without its own executor) to the pool, where it runs in parallel
with the other users' scores instead of blocking the loop. ``max_concurrency`` bounds how many
steps run at once across every user.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import reactorpy as rp
from reactorpy.examples.seed import user_data

__all__ = ["cpu_score", "main", "per_user", "scoring"]


def cpu_score(aggregate: dict[str, Any], rounds: int = 200_000) -> int:
    """A deliberately CPU-bound score: a pure-Python loop seeded by the user's data."""
    seed = aggregate["profile"]["id"] + aggregate["activity"]["login_count"]
    total = 0
    for k in range(rounds):
        total = (total * 31 + seed + k) % 1_000_003
    return total


per_user = rp.Reactor("per_user", inputs=["user_id"], returns="score")
per_user.compose("profile", user_data)
per_user.add(rp.step(cpu_score), name="score", args={"aggregate": rp.Result("profile")})

scoring = rp.Reactor("scoring", inputs=["user_ids"], returns="scores")
scoring.map("scores", "user_ids", per_user)


async def score_users(user_ids: list[int], executor: Any, max_concurrency: int = 32) -> Any:
    """Score every user, CPU work on `executor`, at most `max_concurrency` steps at once."""
    return await scoring.run(
        {"user_ids": user_ids}, executor=executor, max_concurrency=max_concurrency
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--dask", action="store_true", help="use a local dask cluster")
    args = parser.parse_args(argv)
    ids = list(range(1, args.users + 1))
    started = time.perf_counter()
    if args.dask:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, processes=True, dashboard_address=":0")  # type: ignore[no-untyped-call]
        with cluster:
            with Client(cluster) as client:  # type: ignore[no-untyped-call]
                scores = asyncio.run(score_users(ids, client))
    else:
        with ProcessPoolExecutor(2) as pool:
            scores = asyncio.run(score_users(ids, pool))
    print(f"{len(scores)} users scored in {time.perf_counter() - started:.2f} s: {scores}")


if __name__ == "__main__":
    main()
