"""Declarative field specs for YAML-backed frozen dataclasses.

A dataclass field declared with ``quantity(...)``, ``number(...)``, ``choice(...)`` etc. carries its
unit, documentation, default (as the user would write it in YAML) and constraints in its metadata.
``build`` turns a YAML mapping into the dataclass (SI floats, clear errors with field paths),
``json_schema`` and ``markdown_table`` render the same metadata for editors and docs, so the three
can never disagree.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from simcore.errors import ConfigError
from simcore.units import SI_UNITS, _example, format_quantity, parse_quantity

MISSING = dataclasses.MISSING
_REQUIRED = object()

# Ceilings (SI) for quantities whose field sets no ``maximum``: orders of magnitude past any hardware or job,
# so only a typo or a unit slip reaches them, and a value left past one overflows what follows it (a
# "1e300 V" bus voltage squared) or fills a summary with 1e299 W.
PLAUSIBLE_MAXIMUM: dict[str, float] = {
    "bytes": 1e18,  # 1 EB
    "bandwidth": 1e16,  # 10 PB/s
    "flops_rate": 1e19,  # 10 EFLOP/s per GPU
    "time": 1e9,  # ~32 years
    "power": 1e9,  # 1 GW
    "energy": 1e13,  # ~2.8 GWh
    "temperature": 1000.0,  # degC
    "temperature_delta": 1000.0,  # K
    "voltage": 1e6,
    "frequency": 1e11,  # 100 GHz
    "thermal_resistance": 1e3,  # K/W
    "heat_capacity": 1e9,  # J/K
    "flow_per_power": 1e-3,  # m^3/s/W (60,000 L/min/kW)
    "power_rate": 1e12,  # W/s
    "resistance": 1e6,  # ohm
    "mass_flow": 1e6,  # kg/s
}
# Whole-number fields without their own maximum (GPUs per tray, racks, layers, ...): a count past this is a
# typo, and one past 2^63 cannot even be held in the numpy arrays it indexes.
MAX_COUNT = 2**31 - 1


def _meta(kind: str, doc: str, default: Any, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "doc": doc, "default": default, **extra}


def quantity(
    unit_kind: str,
    doc: str,
    default: Any = _REQUIRED,
    *,
    positive: bool | None = None,
    allow_zero: bool = False,
    optional: bool = False,
    maximum: float | None = None,
    minimum: float | None = None,
    example: str | None = None,
) -> Any:
    """A physical quantity written with a unit; stored as an SI float (``maximum``, in SI units, catches unit
    slips such as "35 s" for a per-kernel time, which would otherwise run for hours; ``minimum`` the other
    way, such as "1 MB/s" for a link, whose collectives then last hours of simulated time).

    ``positive`` (default: true for every kind but ``temperature``, whose Celsius values may be zero or
    negative) rejects values <= 0; with ``allow_zero`` only values < 0 are rejected (a fan power that may
    be absent). ``positive=False`` turns the sign check off. ``example`` is what errors and docs show for
    this field when the kind's example would not fit it (a failure detection time is minutes, not the
    microseconds of a latency).
    """
    if unit_kind not in SI_UNITS:
        raise ValueError(f"unknown unit kind {unit_kind}")
    if positive is None:
        positive = unit_kind != "temperature"
    return dataclasses.field(
        metadata=_meta(
            "quantity",
            doc,
            default,
            unit_kind=unit_kind,
            positive=positive,
            allow_zero=allow_zero,
            optional=optional,
            maximum=maximum,
            minimum=minimum,
            example=example,
        )
    )


def _example_of(meta: Mapping[str, Any]) -> str:
    """The example value of a quantity field: its own, else its kind's."""
    return meta.get("example") or _example(meta["unit_kind"])


def number(
    doc: str,
    default: Any = _REQUIRED,
    *,
    integer: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    optional: bool = False,
) -> Any:
    """A plain (dimensionless) number: a count, a fraction, an exponent."""
    return dataclasses.field(
        metadata=_meta(
            "number",
            doc,
            default,
            integer=integer,
            minimum=minimum,
            maximum=maximum,
            exclusive_minimum=exclusive_minimum,
            optional=optional,
        )
    )


def choice(doc: str, options: tuple[str, ...], default: Any = _REQUIRED) -> Any:
    """One of a fixed set of strings."""
    return dataclasses.field(metadata=_meta("choice", doc, default, options=options))


def text(doc: str, default: Any = _REQUIRED, *, optional: bool = False) -> Any:
    """Free text (names, notes, sources); ``optional`` also takes null (absent)."""
    return dataclasses.field(metadata=_meta("text", doc, default, optional=optional))


def flag(doc: str, default: Any = _REQUIRED) -> Any:
    """A yes/no switch."""
    return dataclasses.field(metadata=_meta("flag", doc, default))


def section(doc: str, default: Any = _REQUIRED, *, optional: bool = False) -> Any:
    """A nested mapping described by another dataclass (or None when optional and absent)."""
    return dataclasses.field(metadata=_meta("section", doc, default, optional=optional))


def section_list(doc: str, default: Any = _REQUIRED) -> Any:
    """A list of nested mappings, each described by the same dataclass."""
    return dataclasses.field(metadata=_meta("section_list", doc, default))


def quantity_map(
    unit_kind: str, doc: str, keys: tuple[str, ...], default: Any = _REQUIRED, *, minimum: float | None = None
) -> Any:
    """A mapping from a fixed key set (e.g. dtypes) to quantities (``minimum``, in SI units, as for
    ``quantity``: a unit slip that would run for hours of simulated time)."""
    return dataclasses.field(
        metadata=_meta("quantity_map", doc, default, unit_kind=unit_kind, keys=keys, minimum=minimum)
    )


def section_map(doc: str, keys: tuple[str, ...], default: Any = _REQUIRED) -> Any:
    """A mapping from a fixed key set to nested sections of one dataclass."""
    return dataclasses.field(metadata=_meta("section_map", doc, default, keys=keys))


def curve(
    doc: str,
    default: Any = _REQUIRED,
    *,
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] = (0.0, 1.0),
) -> Any:
    """A piecewise-linear curve as a list of [x, y] points with increasing x."""
    return dataclasses.field(metadata=_meta("curve", doc, default, x_range=x_range, y_range=y_range))


def text_list(doc: str, default: Any = _REQUIRED) -> Any:
    """A list of strings (sources, notes)."""
    return dataclasses.field(metadata=_meta("text_list", doc, default))


def int_list(doc: str, default: Any = _REQUIRED, *, minimum: int = 0, optional: bool = False) -> Any:
    """A non-empty list of whole numbers >= ``minimum`` (e.g. layers per pipeline chunk)."""
    return dataclasses.field(metadata=_meta("int_list", doc, default, minimum=minimum, optional=optional))


# ----------------------------------------------------------------------------------------------------
# Building dataclasses from YAML data


def _inner_class(cls: type, name: str) -> type:
    """The dataclass type a section/section_list/section_map field holds."""
    hint = typing.get_type_hints(cls)[name]
    for _ in range(3):
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        elif origin in (list, tuple):
            hint = typing.get_args(hint)[0]
        elif origin is not None and issubclass(origin, Mapping):
            hint = typing.get_args(hint)[-1]
        else:
            break
    if hint is Ellipsis:
        raise TypeError(f"{cls.__name__}.{name}: cannot find inner dataclass")
    return hint


def build(cls: type, data: Any, *, file: str | None, path: str) -> Any:
    """Validate ``data`` (a YAML mapping) against ``cls`` and return the frozen dataclass."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            "must be a mapping of fields",
            file=file,
            path=path or "(top level)",
            value=_short(data),
            expected=f"fields of {cls.__name__}",
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("kind")}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            raise ConfigError(
                "unknown field",
                file=file,
                path=_join(path, str(key)),
                expected=f"one of {', '.join(sorted(fields))}",
                hint=f"did you mean {close[0]!r}?" if close else None,
            )
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        meta = fld.metadata
        fpath = _join(path, name)
        if name in data:
            raw = data[name]
        elif meta["default"] is _REQUIRED:
            raise ConfigError(
                "missing required field", file=file, path=fpath, expected=_expectation(cls, name, meta)
            )
        else:
            raw = meta["default"]
        values[name] = _convert(cls, name, meta, raw, file=file, path=fpath)
    return cls(**values)


def _convert(cls: type, name: str, meta: Mapping[str, Any], raw: Any, *, file: str | None, path: str) -> Any:
    kind = meta["kind"]
    if raw is None and (meta.get("optional") or (kind in ("section",) and meta.get("optional"))):
        return None
    if kind == "quantity":
        if raw is None:
            raise ConfigError(
                "missing value",
                file=file,
                path=path,
                expected=f'a quantity like "{_example_of(meta)}"',
            )
        value = parse_quantity(raw, meta["unit_kind"], file=file, path=path, example=meta.get("example"))
        if meta["positive"] and meta.get("allow_zero") and value < 0:
            raise ConfigError(
                "must not be negative",
                file=file,
                path=path,
                value=raw,
                expected=f'zero or more, e.g. "{_example_of(meta)}"',
            )
        if meta["positive"] and not meta.get("allow_zero") and value <= 0:
            raise ConfigError(
                "must be positive",
                file=file,
                path=path,
                value=raw,
                expected=f'a value above zero, e.g. "{_example_of(meta)}"',
            )
        if meta["unit_kind"] == "temperature" and value < -273.15:
            raise ConfigError(
                "below absolute zero", file=file, path=path, value=raw, expected="above -273.15 degC"
            )
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise ConfigError(
                "implausibly large (a unit slip?)",
                file=file,
                path=path,
                value=raw,
                expected=f"at most {format_quantity(meta['maximum'], meta['unit_kind'])}",
                hint=_microseconds_hint(meta, raw),
            )
        _check_ceiling(meta, value, raw, file=file, path=path)
        _check_plausibly_large(meta, value, raw, file=file, path=path)
        return value
    if kind == "number":
        return _check_number(meta, raw, file=file, path=path)
    if kind == "choice":
        if raw not in meta["options"]:
            same_case = [o for o in meta["options"] if str(o).lower() == str(raw).lower()]
            close = same_case or difflib.get_close_matches(str(raw), meta["options"], n=1)
            raise ConfigError(
                "not an allowed value",
                file=file,
                path=path,
                value=raw,
                expected=f"one of {', '.join(meta['options'])}",
                hint=f"did you mean {close[0]!r}?" if close else None,
            )
        return raw
    if kind == "text":
        if not isinstance(raw, str):
            raise ConfigError("must be text", file=file, path=path, value=raw, expected="a string")
        return raw
    if kind == "flag":
        if not isinstance(raw, bool):
            raise ConfigError(
                "must be true or false", file=file, path=path, value=raw, expected="true or false"
            )
        return raw
    if kind == "text_list":
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(
                "must be a list of strings",
                file=file,
                path=path,
                value=_short(raw),
                expected="a list of strings",
                hint=f"write [{raw}]" if isinstance(raw, str) else None,
            )
        return tuple(raw)
    if kind == "int_list":
        lo = meta["minimum"]
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= lo for x in raw)
        ):
            raise ConfigError(
                "must be a non-empty list of whole numbers",
                file=file,
                path=path,
                value=_short(raw),
                expected=f"a list like [4, 5, 5, 4] of whole numbers >= {lo}",
            )
        return tuple(raw)
    if kind == "section":
        return build(_inner_class(cls, name), raw, file=file, path=path)
    if kind == "section_list":
        optional = meta["default"] == ()
        # An optional list may be empty, or left blank in YAML (`stragglers:` with its entries commented out)
        if optional and (raw is None or (isinstance(raw, (list, tuple)) and not raw)):
            return ()
        if not isinstance(raw, list) or not raw:
            raise ConfigError(
                "must be a list" if optional else "must be a non-empty list",
                file=file,
                path=path,
                value=_short(raw),
                expected="a list of mappings (or [] for none)" if optional else "a list of mappings",
            )
        inner = _inner_class(cls, name)
        return tuple(build(inner, item, file=file, path=f"{path}[{i}]") for i, item in enumerate(raw))
    if kind in ("quantity_map", "section_map"):
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError(
                "must be a non-empty mapping",
                file=file,
                path=path,
                value=_short(raw),
                expected=f"keys among {', '.join(meta['keys'])}",
            )
        out: dict[str, Any] = {}
        for key, item in raw.items():
            if key not in meta["keys"]:
                close = difflib.get_close_matches(str(key), meta["keys"], n=1)
                raise ConfigError(
                    "unknown key",
                    file=file,
                    path=_join(path, str(key)),
                    expected=f"one of {', '.join(meta['keys'])}",
                    hint=f"did you mean {close[0]!r}?" if close else None,
                )
            if kind == "quantity_map":
                value = parse_quantity(item, meta["unit_kind"], file=file, path=_join(path, str(key)))
                if value <= 0:
                    raise ConfigError(
                        "must be positive",
                        file=file,
                        path=_join(path, str(key)),
                        value=item,
                        expected="a value above zero",
                    )
                _check_ceiling(meta, value, item, file=file, path=_join(path, str(key)))
                _check_plausibly_large(meta, value, item, file=file, path=_join(path, str(key)))
                out[key] = value
            else:
                out[key] = build(_inner_class(cls, name), item, file=file, path=_join(path, str(key)))
        return types.MappingProxyType(out)
    if kind == "curve":
        return _check_curve(meta, raw, file=file, path=path)
    raise TypeError(f"unknown field kind {kind}")


def _microseconds_hint(meta: Mapping[str, Any], raw: Any) -> str | None:
    """For a latency or launch time capped below a second: the number as microseconds, what was most
    likely meant ("2 s" or a bare "2" read as seconds for "2 us")."""
    if meta["unit_kind"] != "time" or meta["maximum"] >= 1.0:
        return None
    number = re.match(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", str(raw))
    if number is None or float(number[1]) * 1e-6 > meta["maximum"]:
        return "times here are microseconds"
    return f"microseconds were probably meant: {number[1]} us"


def _check_ceiling(meta: Mapping[str, Any], value: float, raw: Any, *, file: str | None, path: str) -> None:
    """A quantity past its kind's ``PLAUSIBLE_MAXIMUM`` (fields with a ``maximum`` of their own check that)."""
    ceiling = PLAUSIBLE_MAXIMUM.get(meta["unit_kind"])
    if meta.get("maximum") is None and ceiling is not None and value > ceiling:
        # times display in us, which would make this 1e+15 us
        shown = (
            f"{ceiling:g} s" if meta["unit_kind"] == "time" else format_quantity(ceiling, meta["unit_kind"])
        )
        raise ConfigError(
            "implausibly large (a unit slip?)",
            file=file,
            path=path,
            value=raw,
            expected=f"at most {shown}",
        )


def _check_plausibly_large(
    meta: Mapping[str, Any], value: float, raw: Any, *, file: str | None, path: str
) -> None:
    """A quantity below its field's ``minimum`` is a unit slip (zero is the sign check's business, except for
    a Celsius temperature, where zero and below are values like any other)."""
    floor = meta.get("minimum")
    if floor is not None and value < floor and (value > 0 or meta["unit_kind"] == "temperature"):
        raise ConfigError(
            "implausibly small (a unit slip?)",
            file=file,
            path=path,
            value=raw,
            expected=f"at least {format_quantity(meta['minimum'], meta['unit_kind'])}",
        )


def _check_number(meta: Mapping[str, Any], raw: Any, *, file: str | None, path: str) -> float | int:
    if raw is None and meta.get("optional"):
        return None  # type: ignore[return-value]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ConfigError("must be a number", file=file, path=path, value=raw, expected=_number_range(meta))
    if not math.isfinite(raw):
        raise ConfigError(
            "must be a finite number", file=file, path=path, value=raw, expected=_number_range(meta)
        )
    if meta["integer"] and (not float(raw).is_integer()):
        raise ConfigError(
            "must be a whole number", file=file, path=path, value=raw, expected=_number_range(meta)
        )
    lo, hi = meta["minimum"], meta["maximum"]
    if lo is not None and (raw < lo or (meta["exclusive_minimum"] and raw == lo)):
        raise ConfigError("out of range", file=file, path=path, value=raw, expected=_number_range(meta))
    if hi is not None and raw > hi:
        raise ConfigError("out of range", file=file, path=path, value=raw, expected=_number_range(meta))
    if meta["integer"] and hi is None and raw > MAX_COUNT:
        raise ConfigError(
            "implausibly large", file=file, path=path, value=raw, expected=f"a whole number up to {MAX_COUNT}"
        )
    return int(raw) if meta["integer"] else float(raw)


def _check_curve(meta: Mapping[str, Any], raw: Any, *, file: str | None, path: str) -> tuple:
    expected = "a list of [x, y] pairs with increasing x"
    if not isinstance(raw, list) or len(raw) < 2:
        raise ConfigError(
            "must be a curve of at least two points",
            file=file,
            path=path,
            value=_short(raw),
            expected=expected,
        )
    points = []
    (xlo, xhi), (ylo, yhi) = meta["x_range"], meta["y_range"]
    for i, item in enumerate(raw):
        ok = (
            isinstance(item, (list, tuple))
            and len(item) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
        )
        if not ok:
            raise ConfigError(
                "not an [x, y] pair", file=file, path=f"{path}[{i}]", value=item, expected=expected
            )
        x, y = float(item[0]), float(item[1])
        if not (math.isfinite(x) and math.isfinite(y)) or not (xlo <= x <= xhi) or not (ylo < y <= yhi):
            raise ConfigError(
                "point out of range",
                file=file,
                path=f"{path}[{i}]",
                value=item,
                expected=f"x in [{xlo}, {xhi}] and y in ({ylo}, {yhi}]",
            )
        if points and x <= points[-1][0]:
            raise ConfigError(
                "x must increase", file=file, path=f"{path}[{i}]", value=item, expected=expected
            )
        points.append((x, y))
    return tuple(points)


def _number_range(meta: Mapping[str, Any]) -> str:
    what = "a whole number" if meta["integer"] else "a number"
    lo, hi = meta["minimum"], meta["maximum"]
    if lo is not None and hi is not None:
        return f"{what} in {'(' if meta['exclusive_minimum'] else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{what} {'>' if meta['exclusive_minimum'] else '>='} {lo}"
    return what


def _expectation(cls: type, name: str, meta: Mapping[str, Any]) -> str:
    kind = meta["kind"]
    if kind == "quantity":
        return f'a quantity like "{_example_of(meta)}" ({meta["doc"]})'
    if kind == "number":
        return f"{_number_range(meta)} ({meta['doc']})"
    if kind == "choice":
        return f"one of {', '.join(meta['options'])}"
    if kind in ("section", "section_list"):
        return f"a {_inner_class(cls, name).__name__} mapping ({meta['doc']})"
    return meta["doc"]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short(value: Any) -> Any:
    text_value = repr(value)
    return text_value if len(text_value) <= 60 else text_value[:57] + "..."


# ----------------------------------------------------------------------------------------------------
# Rendering the schema for editors (JSON Schema) and people (Markdown)

_QUANTITY_PATTERN = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*\S.*$"


def json_schema(cls: type, title: str | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for YAML files of ``cls``, for editor autocompletion."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for fld in dataclasses.fields(cls):
        meta = fld.metadata
        if not meta.get("kind"):
            continue
        props[fld.name] = _field_schema(cls, fld.name, meta)
        if meta["default"] is _REQUIRED:
            required.append(fld.name)
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    if title:
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **schema}
    return schema


def _field_schema(cls: type, name: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    kind, doc = meta["kind"], meta["doc"]
    out: dict[str, Any]
    if kind == "quantity":
        out = {
            "type": "string",
            "pattern": _QUANTITY_PATTERN,
            "description": f'{doc} [unit: {SI_UNITS[meta["unit_kind"]]}, e.g. "{_example_of(meta)}"]',
        }
    elif kind == "number":
        out = {"type": "integer" if meta["integer"] else "number", "description": doc}
        if meta["minimum"] is not None:
            out["exclusiveMinimum" if meta["exclusive_minimum"] else "minimum"] = meta["minimum"]
        if meta["maximum"] is not None:
            out["maximum"] = meta["maximum"]
    elif kind == "choice":
        out = {"enum": list(meta["options"]), "description": doc}
    elif kind == "text":
        out = {"type": "string", "description": doc}
    elif kind == "flag":
        out = {"type": "boolean", "description": doc}
    elif kind == "text_list":
        out = {"type": "array", "items": {"type": "string"}, "description": doc}
    elif kind == "int_list":
        out = {
            "type": "array",
            "items": {"type": "integer", "minimum": meta["minimum"]},
            "minItems": 1,
            "description": doc,
        }
    elif kind == "section":
        out = {**json_schema(_inner_class(cls, name)), "description": doc}
    elif kind == "section_list":
        out = {"type": "array", "items": json_schema(_inner_class(cls, name)), "description": doc}
        if meta["default"] == ():  # optional: may be empty or left blank, as the loader takes it
            out["type"] = ["array", "null"]
        else:
            out["minItems"] = 1
    elif kind == "quantity_map":
        out = {
            "type": "object",
            "description": doc,
            "additionalProperties": False,
            "properties": {k: {"type": "string", "pattern": _QUANTITY_PATTERN} for k in meta["keys"]},
        }
    elif kind == "section_map":
        inner = json_schema(_inner_class(cls, name))
        out = {
            "type": "object",
            "description": doc,
            "additionalProperties": False,
            "properties": {k: inner for k in meta["keys"]},
        }
    elif kind == "curve":
        out = {
            "type": "array",
            "description": doc,
            "minItems": 2,
            "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        }
    else:
        raise TypeError(kind)
    if meta.get("optional") and isinstance(out.get("type"), str):
        # null beside the type, not anyOf [it, null]: a mistake inside an optional section is then reported
        # as itself, not as "not valid under any of the given schemas"
        out["type"] = [out["type"], "null"]
    elif meta.get("optional"):
        out = {"anyOf": [out, {"type": "null"}], "description": doc}
    if meta["default"] is not _REQUIRED and meta["default"] is not None:
        default = meta["default"]
        out["default"] = list(default) if isinstance(default, tuple) else default  # JSON has arrays
    return out


def without_required(node: Any) -> Any:
    """A deep copy of a JSON Schema without its ``required`` lists (for partial files: a profile with
    ``extends:``, a model that starts from a preset)."""
    if isinstance(node, dict):
        return {
            k: without_required(v) for k, v in node.items() if not (k == "required" and isinstance(v, list))
        }
    if isinstance(node, list):
        return [without_required(v) for v in node]
    return node


def required_only(node: Any) -> dict[str, Any]:
    """The ``required`` lists of a JSON Schema and the ``properties`` / ``items`` that lead to them, nothing
    else: what a conditional branch adds to the partial schema of ``without_required`` to make it strict.

    The branch must not repeat the field checks the partial schema already makes, or a validator reports
    every unknown key and wrong value twice, once per copy.
    """
    if not isinstance(node, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(node.get("required"), list):
        out["required"] = list(node["required"])
    props = {k: sub for k, v in node.get("properties", {}).items() if (sub := required_only(v))}
    if props:
        out["properties"] = props
    if items := required_only(node.get("items")):
        out["items"] = items
    # an optional section is anyOf [its mapping, null]: `required` only applies to the mapping
    branches = [sub for v in node.get("anyOf", ()) if (sub := required_only(v))]
    if len(branches) > 1:
        raise TypeError("required_only: more than one anyOf branch with required fields")
    if branches:
        for key, value in branches[0].items():
            if key in out:
                raise TypeError(f"required_only: {key} both beside and inside anyOf")
            out[key] = value
    return out


def markdown_table(cls: type, prefix: str = "") -> list[str]:
    """Markdown rows documenting every field of ``cls`` (recursing into sections)."""
    rows: list[str] = []
    nested: list[tuple[str, type]] = []
    for fld in dataclasses.fields(cls):
        meta = fld.metadata
        if not meta.get("kind"):
            continue
        kind = meta["kind"]
        path = _join(prefix, fld.name)
        if kind == "quantity":
            type_text = f"quantity [{SI_UNITS[meta['unit_kind']]}], e.g. `{_example_of(meta)}`"
        elif kind == "number":
            type_text = _number_range(meta)
        elif kind == "choice":
            type_text = " \\| ".join(meta["options"])
        elif kind == "quantity_map":
            type_text = f"map {{{', '.join(meta['keys'])}}} -> quantity [{SI_UNITS[meta['unit_kind']]}]"
        elif kind in ("section", "section_list", "section_map"):
            inner = _inner_class(cls, fld.name)
            suffix = "[]" if kind == "section_list" else (".<key>" if kind == "section_map" else "")
            if kind == "section_map":
                type_text = f"map {{{', '.join(meta['keys'])}}} -> {inner.__name__}"
            else:
                type_text = f"{inner.__name__}{' list' if kind == 'section_list' else ''}"
            nested.append((path + suffix, inner))
        elif kind == "curve":
            type_text = "list of [x, y]"
        elif kind == "int_list":
            type_text = f"list of whole numbers >= {meta['minimum']}"
        else:
            type_text = kind.replace("_", " ")
        default = meta["default"]
        if default is _REQUIRED:
            default_text = "**required**"
        elif default is None:
            default_text = "none"
        elif isinstance(default, bool):
            default_text = f"`{str(default).lower()}`"
        elif default == "":
            default_text = '`""`'
        else:
            default_text = f"`{default}`"
        rows.append(f"| `{path}` | {type_text} | {default_text} | {meta['doc']} |")
    for path, inner in nested:
        rows.extend(markdown_table(inner, path))
    return rows
