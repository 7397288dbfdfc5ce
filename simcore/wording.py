"""Counts and powers as people read them (no pint: cheap to import from the CLI's light modules)."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """A count with its noun agreeing: ``1 step``, ``2 steps`` (``many`` for an irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def format_power(watts: float, digits: int = 4) -> str:
    """Power for people: kW up to 10,000 kW, then MW, then GW past 10,000 MW (never ``6.321e+04 kW``)."""
    for limit, scale, unit in ((1e10, 1e9, "GW"), (1e7, 1e6, "MW")):
        if abs(watts) >= limit:
            return f"{watts / scale:.{digits}g} {unit}"
    return f"{watts / 1e3:.{digits}g} kW"
