"""The same reactors on this checkout's reactorpy and on an older revision's, in one process.

A redesign keeps the ratios it found: this runs each workload on both, alternately, and
prints per-step figures and new/old. The old revision is extracted with ``git archive``
into a temporary folder and imported under another name (``reactorpy_<rev>``; the package
imports itself relatively, so the copy is self-contained).

    python benchmarks/bench_ab.py 307b167          # fan-out, chain, random DAG, undo
    python benchmarks/bench_ab.py 307b167 chain    # one workload

Workloads (no-op async steps): ``fan`` a root and 10,000 leaves; ``chain`` 1,000 in a
row; ``random`` a seeded 5,000-step DAG with up to 3 parents among the last 200;
``undo`` a seeded 2,000-step DAG whose every step has an undo. Best of 21 runs each.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import reactorpy  # noqa: E402


def old_package(rev: str, folder: Path) -> ModuleType:
    """reactorpy as it was at `rev`, imported as ``reactorpy_<rev>``."""
    name = f"reactorpy_{rev.replace('-', '_').replace('.', '_')}"
    archive = folder / "old.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev, "reactorpy"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (folder / "reactorpy").rename(folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def build(rp: Any, kind: str) -> tuple[Any, int]:
    """The reactor of workload `kind` in package `rp`, and its number of steps."""

    async def noop(*args: Any) -> int:
        return 1

    r = rp.Reactor(kind)
    if kind == "fan":
        r.add(rp.step(noop, name="root"))
        for k in range(10_000):
            r.add(rp.step(noop, name=f"l{k}", wait_for=["root"]))
        return r, 10_001
    if kind == "chain":
        r.add(rp.step(noop, name="c0"))
        for k in range(1, 1_000):
            r.add(rp.step(noop, name=f"c{k}", wait_for=[f"c{k - 1}"]))
        return r, 1_000
    rnd = random.Random(7)
    n, window = (5_000, 200) if kind == "random" else (2_000, 50)
    names: list[str] = []
    for k in range(n):
        recent = names[-window:]
        parents = rnd.sample(recent, min(len(recent), rnd.randint(0, 3)))
        s = rp.step(noop, name=f"s{k}", wait_for=parents)
        if kind == "undo":
            s.undo(lambda value: None)
        r.add(s)
        names.append(f"s{k}")
    return r, n


async def compare(old: ModuleType, kinds: list[str]) -> None:
    for kind in kinds:
        (ro, n), (rn, _) = build(old, kind), build(reactorpy, kind)
        ro.plan()
        rn.plan()
        best = {"old": float("inf"), "new": float("inf")}
        gc.collect()
        for _ in range(21):
            for name, r in (("old", ro), ("new", rn)):
                start = time.perf_counter()
                await r.run()
                best[name] = min(best[name], time.perf_counter() - start)
        print(
            f"{kind:7s} old {best['old'] / n * 1e6:6.2f} us/step   "
            f"new {best['new'] / n * 1e6:6.2f} us/step   new/old {best['new'] / best['old']:.2f}"
        )


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    rev, kinds = argv[0], argv[1:] or ["fan", "chain", "random", "undo"]
    with tempfile.TemporaryDirectory() as folder:
        old = old_package(rev, Path(folder))
        print(f"python {sys.version.split()[0]}: this checkout against {rev}, best of 21")
        asyncio.run(compare(old, kinds))


if __name__ == "__main__":
    main(sys.argv[1:])
