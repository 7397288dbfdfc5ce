"""Command-line options shared by several subcommands (one definition, one help text style)."""

from __future__ import annotations

import argparse


def add_set_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--set KEY.PATH=VALUE`` (repeatable), collected into ``args.sets``."""
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE", help=help_text
    )
