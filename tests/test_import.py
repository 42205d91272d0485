"""``import reactorpy`` stays cheap: the optional integrations, the CLI and networkx are
imported only when used; networkx by the first ``reactor.graph`` or drawing, not by
planning or running (figures in benchmarks/README.md, "Import time")."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("rich", "opentelemetry", "distributed", "dask", "asyncpg", "networkx", "reactorpy.cli")


def modules_after(code: str) -> set[str]:
    """The top-level and reactorpy modules loaded by a fresh interpreter after `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


def test_import_reactorpy_loads_no_heavy_module() -> None:
    """Neither Rich, OpenTelemetry, dask, asyncpg, networkx nor the CLI on import."""
    modules = modules_after("import reactorpy")
    assert [] == [name for name in HEAVY if loaded(modules, name)]


def test_defining_and_running_a_reactor_loads_no_heavy_module() -> None:
    """Planning and running need no networkx: it waits for the first graph or drawing."""
    modules = modules_after(
        "import reactorpy as rp\n"
        "r = rp.Reactor('r', inputs=['x'], returns='f')\n"
        "r.step(lambda x: x, name='f')\n"
        "assert r.run_sync({'x': 1}) == 1\n"
    )
    assert [] == [name for name in HEAVY if loaded(modules, name)]


@pytest.mark.parametrize(
    ("code", "needed"),
    [
        ("import reactorpy as rp\nrp.Reactor('r').graph", "networkx"),
        ("import reactorpy.otel\nreactorpy.otel.OpenTelemetryMiddleware()", "opentelemetry"),
    ],
)
def test_heavy_modules_load_when_used(code: str, needed: str) -> None:
    """What is deferred still loads when its feature is used."""
    assert loaded(modules_after(code), needed)
