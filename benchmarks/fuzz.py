"""Fault-injection fuzzing of reactorpy: N random nested reactors with random faults, each
checked against the saga's invariants (see ``tests/fuzzing.py`` for the cases and the
invariants).

    python benchmarks/fuzz.py                      # 10,000 cases from seed 0, one process
    python benchmarks/fuzz.py --cases 10000 --jobs 2 --seed 0
    python benchmarks/fuzz.py --replay 4857        # one case: its reactor, ledger, violations
    python benchmarks/fuzz.py --replay 4857 --shrink

It prints, for each violation kind, the number of cases and the first seeds; then each
case's violations grouped by cause (a known bug whose shape the case has, or "unexplained");
then, for the first seed of each kind, a minimal reproduction: the case shrunk greedily while
the violation stays, printed as a tree. Like the other benchmark scripts it always exits 0;
a clean run prints "0 violations". A case is replayable from its seed alone.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import fuzzing as fz  # noqa: E402

UNEXPLAINED = "unexplained"


def _quiet() -> None:
    # Library tasks that die unretrieved are counted as "lost_error"; keep asyncio quiet.
    logging.disable(logging.CRITICAL)


def causes(report: fz.Report) -> dict[str, list[str]]:
    """The violation kinds of a case by cause (`fz.attribute`): the known bugs whose
    removal makes them go away, or "unexplained"."""
    out: dict[str, list[str]] = defaultdict(list)
    for kind, cause in fz.attribute(report).items():
        out[cause].append(kind)
    return out


def run_one(seed: int) -> tuple[int, list[tuple[str, str]], dict[str, list[str]], float]:
    start = time.perf_counter()
    report = fz.run_seed(seed)
    elapsed = time.perf_counter() - start
    return (
        seed,
        [(v.kind, str(v)) for v in report.violations],
        dict(causes(report)),
        elapsed,
    )


def _init_worker() -> None:
    _quiet()


def run_all(
    seeds: range, jobs: int
) -> list[tuple[int, list[tuple[str, str]], dict[str, list[str]], float]]:
    if jobs <= 1:
        return [run_one(s) for s in seeds]
    with multiprocessing.get_context("spawn").Pool(jobs, initializer=_init_worker) as pool:
        return list(pool.imap_unordered(run_one, seeds, chunksize=50))


def _still(kind: str, cause: str) -> Any:
    """While shrinking: the violation stays, with the same cause."""
    names = [n for n in cause.replace(" / ", "|").replace(" + ", "|").split("|")]
    bugs = [fz.BUGS[n] for n in names if n in fz.BUGS]

    def still(report: fz.Report) -> bool:
        if kind not in report.kinds:
            return False
        if not bugs:  # unexplained: no known bug of the case's shape explains it
            return kind in {v.kind for v in fz.unexplained(report)}
        if not all(b.shape(report.spec) for b in bugs):
            return False
        return kind not in fz.run_case(fz.without(report.spec, *bugs), real_bound=10.0).kinds

    return still


def reproduce(seed: int, kind: str, cause: str, budget: int) -> str:
    spec = fz.spec_from_seed(seed)
    small, tries = fz.shrink(spec, _still(kind, cause), budget=budget)
    report = fz.run_case(small)
    lines = [
        f"--- {kind} ({cause}): seed {seed}, shrunk from {fz.size(spec)} steps to "
        f"{fz.size(small)} in {tries} runs",
        fz.describe(small),
        "violations:",
    ]
    lines += [f"  {v}"[:400] for v in report.violations if v.kind == kind][:3]
    return "\n".join(lines)


def replay(seed: int, shrink: bool) -> None:
    spec = fz.spec_from_seed(seed)
    if shrink:
        first = fz.run_case(spec)
        if first.violations:
            kind = first.violations[0].kind
            cause = next(c for c, kinds in causes(first).items() if kind in kinds)
            spec, tries = fz.shrink(spec, _still(kind, cause))
            print(f"(shrunk while {kind!r} ({cause}) stays, in {tries} runs)")
    print(fz.describe(spec))
    report = fz.run_case(spec)
    print("outcomes:", report.outcomes)
    print("\n".join(report.log))
    print("\n".join(report.ledgers))
    bugs = fz.known_bugs(spec)
    if bugs:
        print("known bugs of this shape:", ", ".join(b.name for b in bugs))
    if not report.violations:
        print("0 violations")
    for v in report.violations:
        print(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--jobs", type=int, default=1, help="processes (2 uses both cores)")
    parser.add_argument("--replay", type=int, default=None, metavar="SEED")
    parser.add_argument("--shrink", action="store_true", help="with --replay: shrink first")
    parser.add_argument("--first", type=int, default=5, help="seeds listed per kind")
    parser.add_argument("--budget", type=int, default=300, help="runs per shrink")
    parser.add_argument("--no-repro", action="store_true", help="skip the reproductions")
    args = parser.parse_args(argv)
    _quiet()
    if args.replay is not None:
        replay(args.replay, args.shrink)
        return 0
    seeds = range(args.seed, args.seed + args.cases)
    start = time.perf_counter()
    results = sorted(run_all(seeds, args.jobs))
    wall = time.perf_counter() - start
    slowest = max(results, key=lambda r: r[3])
    print(
        f"reactorpy fuzz: {args.cases} cases (seeds {seeds.start}..{seeds.stop - 1}), "
        f"{args.jobs} job(s): {wall:.1f} s (slowest case: seed {slowest[0]}, "
        f"{slowest[3] * 1000:.0f} ms)"
    )
    bad = [r for r in results if r[1]]
    if not bad:
        print("0 violations")
        return 0
    by_kind: dict[str, list[int]] = defaultdict(list)
    for seed, violations, _, _ in bad:
        for kind in sorted({k for k, _ in violations}):
            by_kind[kind].append(seed)
    total = sum(len(v) for _, v, _, _ in bad)
    print(f"{total} violations in {len(bad)} of {args.cases} cases, {len(by_kind)} kinds\n")
    print(f"{'kind':24} {'cases':>6}  first seeds")
    for kind, found in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        print(f"{kind:24} {len(found):6}  {', '.join(map(str, found[: args.first]))}")
    by_cause: dict[str, Counter[str]] = defaultdict(Counter)
    cause_seeds: dict[str, list[int]] = defaultdict(list)
    for seed, _, case_causes, _ in bad:
        for cause, kinds in case_causes.items():
            by_cause[cause].update(set(kinds))
            cause_seeds[cause].append(seed)
    reasons = {b.name: b.reason for b in fz.KNOWN_BUGS}
    print("\nBy cause (cases; a case may show several):")
    for cause, kinds in sorted(by_cause.items(), key=lambda kv: -len(cause_seeds[kv[0]])):
        detail = ", ".join(f"{k} {n}" for k, n in kinds.most_common())
        print(f"  {cause}: {len(cause_seeds[cause])} cases ({detail})")
        for name in cause.split(" + "):
            if name in reasons:
                print(f"      {name}: {reasons[name]}")
        print(f"      seeds: {', '.join(map(str, cause_seeds[cause][: args.first]))}")
    if args.no_repro:
        return 0
    print("\nMinimal reproductions (the first case of each kind and cause, shrunk):")
    done: set[tuple[str, str]] = set()
    for seed, _, case_causes, _ in bad:
        for cause, kinds in sorted(case_causes.items()):
            for kind in sorted(set(kinds)):
                if (kind, cause) in done:
                    continue
                done.add((kind, cause))
                print()
                print(reproduce(seed, kind, cause, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
