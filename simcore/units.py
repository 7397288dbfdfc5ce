"""Parse quantities written with units ("900 GB/s", "400 Gb/s", "45 degC") into SI floats.

pint does the arithmetic; this module fixes the spellings hardware people use that pint reads
differently by default ("Gb" is a gigabit here, not a gigagilbert; "Tb" a terabit, not a terabarn)
and adds FLOP as a countable unit. Bytes and bits are dimensionless in pint, so a bare number is
rejected separately: a field that needs a unit must be written with one.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import pint

from simcore.errors import ConfigError

_NUMBER_THEN_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")

# Canonical SI unit (as a pint expression) for each kind of quantity a profile may hold.
SI_UNITS: dict[str, str] = {
    "bytes": "B",
    "bandwidth": "B/s",
    "flops_rate": "FLOP/s",
    "time": "s",
    "power": "W",
    "energy": "J",
    "temperature": "degC",
    "temperature_delta": "K",
    "voltage": "V",
    "frequency": "Hz",
    "thermal_resistance": "K/W",
    "heat_capacity": "J/K",
    "flow_per_power": "m^3/s/W",
    "power_rate": "W/s",
    "resistance": "ohm",
    "mass_flow": "kg/s",
}

# A readable unit for messages and docs, per kind.
DISPLAY_UNITS: dict[str, str] = {
    "bytes": "GB",
    "bandwidth": "GB/s",
    "flops_rate": "TFLOP/s",
    "time": "us",
    "power": "W",
    "energy": "kJ",
    "temperature": "degC",
    "temperature_delta": "K",
    "voltage": "V",
    "frequency": "GHz",
    "thermal_resistance": "K/W",
    "heat_capacity": "J/K",
    "flow_per_power": "L/min/kW",
    "power_rate": "W/s",
    "resistance": "mohm",
    "mass_flow": "kg/s",
}


@functools.lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    """The one unit registry racksim uses, with hardware spellings added (built once per process)."""
    ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    for prefix, factor in (
        ("k", "1e3"),
        ("K", "1e3"),
        ("M", "1e6"),
        ("G", "1e9"),
        ("T", "1e12"),
        ("P", "1e15"),
    ):
        ureg.define(f"{prefix}b = {factor} * bit")
        ureg.define(f"{prefix}bps = {factor} * bit / second")
    ureg.define("FLOP = [] = flop = FLOPs")
    return ureg


# What a quantity of each kind is called in error messages ("wrong unit for a bandwidth").
KIND_NOUNS: dict[str, str] = {
    "bytes": "a size in bytes",
    "bandwidth": "a bandwidth",
    "flops_rate": "a FLOP rate",
    "time": "a time",
    "power": "a power",
    "energy": "an energy",
    "temperature": "a temperature",
    "temperature_delta": "a temperature difference",
    "voltage": "a voltage",
    "frequency": "a frequency",
    "thermal_resistance": "a thermal resistance",
    "heat_capacity": "a heat capacity",
    "flow_per_power": "a coolant flow per power",
    "power_rate": "a power ramp rate",
    "resistance": "an electrical resistance",
    "mass_flow": "a mass flow",
}

# Offset temperature units read as differences where a temperature difference is expected: "8 degC" of
# approach means 8 K, not 281.15 K.
_DELTA_UNITS = {"degree_Celsius": "delta_degree_Celsius", "degree_Fahrenheit": "delta_degree_Fahrenheit"}


def parse_quantity(
    value: Any,
    kind: str,
    *,
    file: str | None = None,
    path: str | None = None,
    example: str | None = None,
) -> float:
    """Convert ``value`` (a string with a unit) to the SI float for ``kind``.

    Raises ConfigError naming the file and field when the value has no unit, the wrong dimension,
    is not finite, or cannot be parsed; ``example`` is the field's own example value, if the kind's would
    not fit it.
    """
    si = SI_UNITS[kind]
    if example is not None:
        example = f'a string with a unit, e.g. "{example}"'
    else:
        example = f'a string with a unit, e.g. "{_example(kind)}"' + (
            ' (bytes) or "400 Gb/s" (bits)' if kind == "bandwidth" else ""
        )
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError("not a quantity", file=file, path=path, value=value, expected=example)
    if isinstance(value, (int, float)):
        raise ConfigError(
            "a unit is required",
            file=file,
            path=path,
            value=value,
            expected=example,
            hint="a bare number is ambiguous; write the unit",
        )
    match = _NUMBER_THEN_UNIT.match(value)
    if not match:
        raise ConfigError(
            "not a number followed by a unit", file=file, path=path, value=value, expected=example
        )
    if not match.group(2):
        raise ConfigError(
            "a unit is required",
            file=file,
            path=path,
            value=value,
            expected=example,
            hint="a bare number is ambiguous; write the unit",
        )
    number, unit = float(match.group(1)), match.group(2)
    if not math.isfinite(number):
        raise ConfigError("not a finite number", file=file, path=path, value=value, expected=example)
    ureg = registry()
    try:
        quantity = ureg.Quantity(number, unit)
        if kind == "temperature_delta" and str(quantity.units) in _DELTA_UNITS:
            quantity = ureg.Quantity(number, _DELTA_UNITS[str(quantity.units)])
        target = ureg.Quantity(1.0, si)
    except (
        pint.errors.UndefinedUnitError,
        pint.errors.DefinitionSyntaxError,
        AttributeError,
        TypeError,
        ValueError,
        AssertionError,
    ) as exc:
        raise ConfigError(
            f"unknown unit {unit!r}",
            file=file,
            path=path,
            value=value,
            expected=example,
            hint=_spelling_hint(match.group(1), unit, ureg.Quantity(1.0, si)),
        ) from exc
    if not _same_kind(quantity, target):
        raise ConfigError(
            f"wrong unit for {KIND_NOUNS.get(kind, kind)}",
            file=file,
            path=path,
            value=value,
            expected=example,
            hint=_dimension_hint(match.group(1), unit, quantity, target),
        )
    result = float(quantity.to(si).magnitude)
    if not math.isfinite(result):
        raise ConfigError("not a finite number", file=file, path=path, value=value, expected=example)
    return result


def _spelling_hint(number: str, unit: str, target: pint.Quantity) -> str | None:
    """'did you mean ...' for a unit pint does not know but a re-spelling does: the case ('w', 'gb/s'),
    'FLOPS' for FLOP/s."""
    ureg = registry()
    flops = re.sub("flops", "FLOP/s", unit, flags=re.IGNORECASE)
    guesses = [*_rate_spellings(unit)[:1], flops, unit.upper(), unit.lower(), unit[:1].upper() + unit[1:]]
    guesses += [unit[:1] + unit[1:].upper()]
    guesses += [re.sub("^([a-z]?)b/s$", lambda m: m.group(1).upper() + "B/s", unit)]  # gb/s: bytes or bits
    found: list[str] = []
    for guess in dict.fromkeys(g for g in guesses if g != unit):
        try:
            if _same_kind(ureg.Quantity(1.0, guess), target):
                found.append(f"'{number} {guess}'")
        except Exception:  # any spelling pint rejects is simply not a guess
            continue
    return f"did you mean {' or '.join(sorted(found)[:2])}?" if found else None


# A time factor written into a unit: "kWh", "W*s", "W s" (multiplied) or "GB/s", "W/h" (divided).
_TIMES_TIME = re.compile(r"(.+?)\s*[*·]?\s*(?:h|hr|hours?|min|s|sec|seconds?)")
_PER_TIME = re.compile(r"(.+?)\s*/\s*(?:h|hr|hours?|min|s|sec|seconds?)")


def _dimension_hint(number: str, unit: str, quantity: pint.Quantity, target: pint.Quantity) -> str | None:
    """'did you mean ...' for a unit of the wrong kind one time factor away from the right one. Dropping the
    time factor comes first: '2 kWh' for a power is '2 kW' (an energy was written), '80 GB/s' for a size
    is '80 GB'; else a missing one: '900 GB' for a bandwidth is '900 GB/s'."""
    ureg = registry()
    dropped = [m.group(1) for m in (_TIMES_TIME.fullmatch(unit), _PER_TIME.fullmatch(unit)) if m]
    for guesses, why in (
        (dropped, "drop the time factor"),
        (_rate_spellings(unit), "a rate needs a time unit"),
    ):
        for guess in guesses:
            try:
                if _same_kind(ureg.Quantity(1.0, guess), target):
                    given = _kind_of(quantity)
                    noun = "a size" if given == "bytes" else KIND_NOUNS.get(given or "")  # bits are sizes too
                    what = f"'{number} {unit}' is {noun}; " if noun else ""
                    return f"{what}{why}: did you mean '{number} {guess}'?"
            except Exception:  # any spelling pint rejects is simply not a guess
                continue
    return None


def _kind_of(quantity: pint.Quantity) -> str | None:
    """The kind of quantity a value is ('energy' for kWh), for saying what was written instead."""
    ureg = registry()
    for kind, si in SI_UNITS.items():
        if kind not in ("temperature", "temperature_delta") and _same_kind(quantity, ureg.Quantity(1.0, si)):
            return kind
    return None


def _rate_spellings(unit: str) -> list[str]:
    """Ways a rate may have been meant: "Gbs" / "TFLOPs" (a trailing s for "per second") -> "Gb/s" /
    "TFLOP/s", else the unit per second."""
    flops = re.fullmatch(r"([a-zA-Z]?)flops?", unit, flags=re.IGNORECASE)
    if flops:  # "pflops": P, not pico (a lower-case prefix is a fraction only for m, u, n, p, f, a)
        prefix = flops.group(1)
        return [(prefix if prefix == "k" else prefix.upper()) + "FLOP/s"]
    guesses = [unit[:-1] + "/s"] if unit.endswith("s") and not unit.endswith("/s") and len(unit) > 1 else []
    return [*guesses, unit + "/s"]


def _same_kind(quantity: pint.Quantity, target: pint.Quantity) -> bool:
    return quantity.dimensionality == target.dimensionality and _counted(quantity) == _counted(target)


def _counted(quantity: pint.Quantity) -> tuple[float, float]:
    """Exponents of bit and FLOP: pint treats both as dimensionless, racksim must not mix them up."""
    items = dict(quantity.to_root_units().unit_items())
    return items.get("bit", 0.0), items.get("FLOP", 0.0)


def _example(kind: str) -> str:
    return {
        "bytes": "80 GB",
        "bandwidth": "900 GB/s",
        "flops_rate": "989 TFLOP/s",
        "time": "5 us",
        "power": "700 W",
        "energy": "50 kJ",
        "temperature": "45 degC",
        "temperature_delta": "10 K",
        "voltage": "54 V",
        "frequency": "1.98 GHz",
        "thermal_resistance": "0.03 K/W",
        "heat_capacity": "400 J/K",
        "flow_per_power": "1.5 L/min/kW",
        "power_rate": "2000 W/s",
        "resistance": "0.2 mohm",
        "mass_flow": "0.5 kg/s",
    }[kind]


def format_quantity(value_si: float, kind: str, digits: int = 4) -> str:
    """Render an SI float back in the display unit for ``kind`` (for docs, tables and messages)."""
    ureg = registry()
    display = DISPLAY_UNITS[kind]
    magnitude = ureg.Quantity(value_si, SI_UNITS[kind]).to(display).magnitude
    return f"{magnitude:.{digits}g} {display}"
