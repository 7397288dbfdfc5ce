"""Counts, powers and energies as people read them (no pint: cheap to import from the CLI's light modules)."""

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


_ENERGY_UNITS = ((1e18, "EJ"), (1e15, "PJ"), (1e12, "TJ"), (1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ"))


def energy_unit(joules: float, digits: int = 3) -> tuple[float, str]:
    """The SI prefix an energy reads best in, as (joules per unit, unit): the largest that leaves at least 1,
    judged after rounding to ``digits`` figures (999.97 kJ is 1 MJ, not ``1e+03 kJ``)."""
    rounded = abs(float(f"{joules:.{digits}g}"))
    for scale, unit in _ENERGY_UNITS:
        if rounded >= scale:
            return scale, unit
    return 1.0, "J"


def format_energy(joules: float, digits: int = 3) -> str:
    """Energy for people, in J, kJ, MJ, GJ ... (``4.55 MJ``, never ``4.55e+03 kJ``)."""
    scale, unit = energy_unit(joules, digits)
    return f"{joules / scale:.{digits}g} {unit}"


_DURATION_UNITS = ((365.25 * 86400.0, "years"), (86400.0, "days"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))


def format_duration(seconds: float, digits: int = 3) -> str:
    """A time span for people: ``5 ms``, ``2.5 s``, ``27.8 h``, ``4.1 days`` (the largest unit that leaves at
    least 1; milliseconds below a second)."""
    for scale, unit in _DURATION_UNITS:
        if abs(seconds) >= scale:
            return f"{seconds / scale:.{digits}g} {unit}"
    return f"{seconds * 1e3:.{digits}g} ms"
