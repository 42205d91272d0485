"""Crash trials for durable runs: many runs of ``tests/crashing.py``'s trial, each a saga
run in a process killed with SIGKILL at a random moment and recovered in other processes
(some killed too), then held to the invariants of design section 1.8.

Prints a line per trial that broke an invariant (with the story of its runs), then the
totals: trials, violations, where the kills landed, how the runs ended, and the orphaned
effects (see ``tests/crashing.py``). Exits 1 if any invariant broke.

Run from the repository's root::

    python benchmarks/crash.py --trials 1000 --backend sqlite --jobs 4
    bash .ci/postgres.sh python benchmarks/crash.py --trials 200 --backend postgres --jobs 4

Seeds are ``--seed`` .. ``--seed + trials - 1``; a trial is rerun alone with
``--trials 1 --seed N`` (its timing, hence what it meets, varies from run to run).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.crashing import Backend, TrialReport, run_trial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="trials at once")
    parser.add_argument("--seed", type=int, default=0, help="the first trial's seed")
    parser.add_argument(
        "--kill-after",
        type=float,
        default=None,
        help="the worker is killed after a random delay up to this many seconds "
        "(default 0.25 on SQLite, 0.4 on PostgreSQL, whose runs take longer to start)",
    )
    args = parser.parse_args(argv)
    dsn = os.environ.get("REACTORPY_TEST_POSTGRES_DSN")
    if args.backend == "postgres" and not dsn:
        parser.error("--backend postgres needs REACTORPY_TEST_POSTGRES_DSN (.ci/postgres.sh)")
    backend = Backend(args.backend, dsn)
    kill_after = args.kill_after or (0.25 if args.backend == "sqlite" else 0.4)
    started = time.monotonic()
    reports: list[TrialReport] = []
    # Threads are enough: a trial mostly waits for its processes.
    with ThreadPoolExecutor(args.jobs) as pool:
        seeds = range(args.seed, args.seed + args.trials)
        trials = pool.map(lambda seed: run_trial(seed, backend, kill_after=kill_after), seeds)
        for report in trials:
            reports.append(report)
            if report.violations:
                print(f"trial {report.seed}: {len(report.violations)} violation(s)")
                for v in report.violations:
                    print(f"  - {v}")
                print("  " + report.details.replace("\n", "\n  "), flush=True)
    summarize(reports, args.backend, time.monotonic() - started)
    return 1 if any(r.violations for r in reports) else 0


def summarize(reports: list[TrialReport], backend: str, seconds: float) -> None:
    landings = collections.Counter(x for r in reports for x in r.landings)
    statuses: collections.Counter[str] = collections.Counter()
    for r in reports:
        statuses.update(r.statuses)
    violations = sum(len(r.violations) for r in reports)
    broken = sum(1 for r in reports if r.violations)
    orphans = [o for r in reports for o in r.orphans]
    print(f"backend {backend}: {len(reports)} trials in {seconds:.0f} s")
    print(f"violations: {violations} (in {broken} trials)")
    print("kills landed: " + ", ".join(f"{k} {n}" for k, n in landings.most_common()))
    print("runs ended: " + ", ".join(f"{k} {n}" for k, n in statuses.most_common()))
    print(
        f"orphaned effects (a step in flight at a kill, in a run then undone): {len(orphans)}"
        f" in {sum(1 for r in reports if r.orphans)} trials"
    )


if __name__ == "__main__":
    sys.exit(main())
