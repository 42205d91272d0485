"""``python -m reactorpy``: the command line (see `reactorpy.cli`).

Owns: nothing but the entry point.
Must not import: anything but `reactorpy.cli`.
"""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
