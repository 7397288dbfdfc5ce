"""JSON Schema of sweep files (``racksim schema --kind sweep``), for editor autocompletion.

``simcore.sweep.load_sweep`` reads a sweep file by hand; this table describes each key it accepts
(``SWEEP_KEYS``) and building the schema fails when the two name different keys, so a new key cannot be
forgotten here. Allowed values come from the loader's own constants: the metrics a summary can hold
(``SUMMARY_FIELDS``), the default metrics, the simulated-steps limit.
"""

from __future__ import annotations

import re
from typing import Any

from simcore.sweep import DEFAULT_METRICS, SUMMARY_FIELDS, SWEEP_KEYS


def _one_or_list(
    item: dict[str, Any], description: str, *, null: bool = True, **extra: Any
) -> dict[str, Any]:
    """A list field that also takes a single entry written bare (``profiles: gen2.yaml``); ``null`` (or
    an empty value) where the loader reads it as absent. The item's string checks and the list's ``items``
    apply to their own type only, so a mistake is reported as itself, not as "not valid under any of"."""
    own = item["type"] if isinstance(item["type"], list) else [item["type"]]
    types = [*own, "array", *(["null"] if null and "null" not in own else [])]
    return {**item, "type": types, "items": item, "minItems": 1, "description": description, **extra}


def _fields() -> dict[str, dict[str, Any]]:
    from workloads.spec import MAX_SIMULATED_STEPS

    metrics = sorted(SUMMARY_FIELDS)
    metric = {  # a summary key, or a dotted path into one (workload.parallelism.tp), checked by its first key
        "type": "string",
        "if": {"pattern": r"\."},
        "then": {"pattern": "^(" + "|".join(map(re.escape, metrics)) + r")\."},
        "else": {"enum": metrics},
    }
    return {
        "name": {"type": ["string", "null"], "description": "name of the sweep (default: the file name)"},
        "profiles": _one_or_list(
            {"type": "string", "minLength": 1},
            "hardware profiles: names resolve like --profile, or files next to this file",
            null=False,
        ),
        "workloads": _one_or_list(
            {"type": ["string", "null"], "minLength": 1},
            "model presets or workload spec files (next to this file); null: the run default "
            "(llama3-70b, laid out for the profile)",
        ),
        "set": _one_or_list(
            {"type": "string", "pattern": r"^[^=]+="},
            'fixed --set overrides for every point, "key.path=value"',
        ),
        "grid": {
            "type": ["object", "null"],
            "description": "every combination of these --set values, keyed by field path (the last key "
            "varies fastest)",
            "propertyNames": {"pattern": r"^\s*[^=\s][^=]*$"},
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "description": "the values of this field path (a list, even of one value)",
            },
        },
        "racks": {"type": ["integer", "null"], "minimum": 1, "description": "--racks for every point"},
        "steps": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": MAX_SIMULATED_STEPS,
            "description": "--steps for every training point (serving points run their request stream)",
        },
        "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "--seed for every point"},
        "trace": {
            "type": "boolean",
            "default": False,
            "description": "write each point's trace.h5 (default: summaries only)",
        },
        "metrics": _one_or_list(
            metric,
            "table and CSV columns: summary.json keys, or dotted paths into them",
            default=list(DEFAULT_METRICS),
        ),
    }


def sweep_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a sweep file (docs/sweep.md)."""
    fields = _fields()
    if set(fields) != set(SWEEP_KEYS):
        raise RuntimeError(f"sweep schema and SWEEP_KEYS differ: {sorted(set(fields) ^ set(SWEEP_KEYS))}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "racksim sweep file",
        "description": "profiles x workloads x grid, one run per point (docs/sweep.md)",
        "type": "object",
        "properties": {key: fields[key] for key in SWEEP_KEYS},
        "additionalProperties": False,
        "required": ["profiles"],
    }
