#!/usr/bin/env python3
"""Entry point: ``python run_sim.py --profile gen2.yaml`` (same as the ``racksim`` command)."""

import sys

from simcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
