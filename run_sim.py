#!/usr/bin/env python3
"""Entry point: ``python run_sim.py --profile gen2.yaml`` (same as the ``racksim`` command)."""

import importlib.util
import sys

# What racksim needs installed (pyproject.toml); checked up front so a checkout run before
# `pip install -e .` gets one line saying so, not a traceback from deep inside a command.
DEPENDENCIES = ("simpy", "numba", "numpy", "h5py", "matplotlib", "yaml", "pint")

if __name__ == "__main__":
    missing = [name for name in DEPENDENCIES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"racksim: error: not installed: {', '.join(missing)}; install racksim first "
            "(README: python3 -m venv .venv && . .venv/bin/activate && pip install -e .)",
            file=sys.stderr,
        )
        sys.exit(2)
    from simcore.cli import main

    sys.exit(main())
