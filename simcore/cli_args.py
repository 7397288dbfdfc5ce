"""Command-line options shared by several subcommands (one definition, one help text style)."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (the standard for every racksim error), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_set_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--set KEY.PATH=VALUE`` (repeatable), collected into ``args.sets``."""
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE", help=help_text
    )


def nonnegative_seed(text: str) -> int:
    """``--seed``: a whole number >= 0 (numpy's generators take no negative seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a whole number >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"got {value}; expected a whole number >= 0")
    return value
