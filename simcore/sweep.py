"""``racksim sweep``: a design-space sweep, every combination of profiles, workloads and overrides.

    python run_sim.py sweep SWEEP.yaml [--out DIR] [--jobs N] [--scheduler tcp://host:8786]

A sweep file (docs/sweep.md) lists profiles, workloads, fixed ``--set`` overrides and a ``grid`` of
override values; the sweep runs the cartesian product, one ordinary run (``simcore.runner.run``) per
point, in parallel: a local process pool by default, a Dask cluster when ``--scheduler`` names one (the
``dask`` extra). Points that cannot run (the model does not fit, a parallel size does not divide) are
results with their one-line reason, not failures. Outputs: ``sweep.json`` (every point: its parameters,
status and summary numbers) and ``sweep.csv`` (one row per point), written atomically, plus each point's
``summary.json`` under ``points/<label>/``.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import itertools
import json
import math
import os
import re
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from simcore import interrupts
from simcore.atomic import atomic_path, discard_if_empty, output_dir, write_json
from simcore.errors import ConfigError, RacksimError
from simcore.wording import plural

# Table columns when the sweep file names none: the DESIGN.md summary keys a co-design question asks first.
DEFAULT_METRICS = (
    "step_time_s",
    "tokens_per_s_per_gpu",
    "mfu",
    "exposed_comm_fraction",
    "peak_hbm_bytes",
    "avg_it_power_w",
    "energy_per_token_j",
    "pue",
)
# Every top-level key a run's summary.json can hold (training, serving, the power model, the multi-day
# job replay): a sweep's metrics are checked against it before anything runs. tests/test_sweep.py runs a
# training, a serving and a multi-day job and fails when a summary gains a key this lacks, or this names one
# none of them writes.
SUMMARY_FIELDS = frozenset(
    {
        "avg_it_power_w",
        "bubble_fraction",
        "collective_algorithms",
        "compute_fraction",
        "conversion_loss_energy_j",
        "cooling_energy_j",
        "e2e_s_p50",
        "e2e_s_p99",
        "energy_convention",
        "energy_per_token_j",
        "events",
        "exposed_comm_by_group",
        "exposed_comm_fraction",
        "fabric_energy_j",
        "fabric_power_w",
        "facility_energy_j",
        "facility_power_w",
        "flops_convention",
        "full_rack_it_power_w",
        "goodput",
        "gpu_energy_j",
        "gpus",
        "hardware_tflops_per_gpu",
        "host_wait_fraction",
        "idle_fraction",
        "input_tokens_per_s",
        "inputs",
        "it_energy_j",
        "iterations",
        "job_checkpoint_every_steps",
        "job_checkpoint_s",
        "job_checkpoint_total_s",
        "job_checkpoints",
        "job_days",
        "job_down_s",
        "job_energy_j",
        "job_energy_lost_j",
        "job_energy_per_token_j",
        "job_failures",
        "job_goodput_first_order",
        "job_idle_facility_power_w",
        "job_lost_work_s",
        "job_mtbf_s",
        "job_step_time_max_s",
        "job_step_time_min_s",
        "job_steps",
        "job_wall_s",
        "kv_cache_capacity_bytes",
        "kv_cache_peak_bytes",
        "makespan_s",
        "max_coolant_out_c",
        "max_junction_temp_c",
        "max_ramp_mitigated_w_per_s",
        "max_ramp_w_per_s",
        "mfu",
        "min_clock_factor",
        "model_tflops_per_gpu",
        "not_modelled",
        "overhead_energy_j",
        "overrides",
        "peak_hbm_bytes",
        "peak_it_power_w",
        "power_swing_mitigated_w",
        "power_swing_w",
        "profile",
        "pue",
        "rack_power_w",
        "requests_completed",
        "requests_per_s",
        "seed",
        "slowdown_temp_c",
        "smoothing_energy_j",
        "step_time_s",
        "step_times_s",
        "storage",
        "swing_band_energy_fraction",
        "swing_band_energy_fraction_mitigated",
        "thermal_units",
        "throttle_cause",
        "throttle_power_cap_fraction",
        "throttle_rack_power_fraction",
        "throttle_straggler_fraction",
        "throttle_thermal_fraction",
        "throttle_time_fraction",
        "tokens_per_s",
        "tokens_per_s_per_gpu",
        "tpot_s_p50",
        "tpot_s_p99",
        "ttft_s_p50",
        "ttft_s_p99",
        "wall_time_s",
        "workload",
    }
)
SWEEP_KEYS = ("name", "profiles", "workloads", "set", "grid", "racks", "steps", "seed", "trace", "metrics")
MAX_POINTS = 10_000  # a grid beyond this is almost certainly a typo (a list where a scalar was meant)
SAVE_EVERY_S = 10.0  # a running sweep rewrites its outputs this often (an interrupted one keeps its points)
POINT_DIR = re.compile(r"p\d{3,}")  # a point's directory under OUT/points (expand's labels)


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep: what it varies (``params``) and everything the run needs."""

    index: int
    label: str
    profile: str
    workload: str | None
    sets: tuple[str, ...]
    params: dict[str, Any]
    racks: int | None = None
    steps: int | None = None
    seed: int = 0
    out_dir: str | None = None
    write_trace: bool = False
    # A file the sweep creates when it stops: a point finishing after that (a Dask task cannot be cancelled
    # once it started) removes its outputs, which sweep.json does not list. A point that cannot see the
    # file (another mount) keeps its outputs: the safe side.
    stop_file: str | None = None


@dataclass
class SweepSpec:
    """A validated sweep file."""

    file: str
    name: str
    profiles: list[str]
    workloads: list[str | None]
    sets: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    racks: int | None = None
    steps: int | None = None
    seed: int = 0
    trace: bool = False
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))

    @property
    def size(self) -> int:
        return len(self.profiles) * len(self.workloads) * math.prod(len(v) for v in self.grid.values())


# ------------------------------------------------------------------------------------------ the file
def _one_or_list(value: Any) -> list[Any]:
    """A list field's entries: every list of a sweep file (profiles, workloads, set, metrics) also takes a
    single entry written bare, as ``profiles: gen2.yaml``. Grid values are the exception: a grid key needs a
    list, since a value can itself be a list."""
    return [] if value is None else value if isinstance(value, list) else [value]


def _as_list(data: Mapping[str, Any], key: str, file: str, *, allow_none: bool = False) -> list[Any]:
    value = data.get(key)
    items = value if isinstance(value, list) else [value]
    if not items or (not allow_none and any(v is None for v in items)):
        raise ConfigError(
            "needs at least one entry", file=file, path=key, value=value, expected="a name or a list of names"
        )
    return items


def _near(name: str, base: Path) -> str:
    """A relative file name that exists next to the sweep file, made absolute; anything else as given."""
    candidate = base / name
    for path in (candidate, candidate.with_suffix(".yaml")):
        if not Path(name).is_absolute() and path.is_file():
            return str(path.resolve())
    return name


def _set_value(value: Any) -> str:
    """A grid value as the text of a ``--set`` option (JSON is YAML: numbers, strings, lists survive)."""
    return json.dumps(value)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; every mistake is one line naming the file, the field and the value."""
    from simcore.profile import parse_set_option, read_yaml

    path = Path(path)
    file = str(path)
    if not path.exists():  # a directory is read_yaml's to name
        raise ConfigError("sweep file not found", file=file, expected="a YAML sweep file (docs/sweep.md)")
    data = read_yaml(path, expected="a sweep: profiles:, workloads:, grid: ... (docs/sweep.md)")
    if not isinstance(data, Mapping):
        raise ConfigError("a sweep file must be a mapping", file=file, value=type(data).__name__,
                          expected="profiles:, workloads:, grid: ... (docs/sweep.md)")  # fmt: skip
    for key in data:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(str(key), SWEEP_KEYS, n=1)
            raise ConfigError("unknown key", file=file, path=str(key), expected=", ".join(SWEEP_KEYS),
                              hint=f"did you mean {close[0]}?" if close else None)  # fmt: skip
    if "profiles" not in data:
        raise ConfigError("missing", file=file, path="profiles", expected="one or more hardware profiles")
    base = path.parent
    profiles = [_near(str(p), base) for p in _as_list(data, "profiles", file)]
    workloads = (
        [
            None if w is None else _near(str(w), base)
            for w in _as_list(data, "workloads", file, allow_none=True)
        ]
        if "workloads" in data
        else [None]
    )
    sets = _one_or_list(data.get("set"))
    if not all(isinstance(s, str) for s in sets):
        raise ConfigError(
            "", file=file, path="set", value=data.get("set"), expected='"key.path=value" or a list of them'
        )
    for i, option in enumerate(sets):
        try:
            parse_set_option(option)
        except ConfigError as exc:
            raise ConfigError(
                exc.message, file=file, path=f"set[{i}]", value=option, expected=exc.expected
            ) from None
    grid_raw = data.get("grid") or {}
    if not isinstance(grid_raw, Mapping):
        raise ConfigError(
            "", file=file, path="grid", value=grid_raw, expected="a mapping of key.path: [values]"
        )
    grid: dict[str, list[Any]] = {}
    for key, values in grid_raw.items():
        if not isinstance(key, str) or not key.strip() or "=" in key:
            raise ConfigError(
                "", file=file, path="grid", value=key, expected="a field path like scale_out.nics_per_gpu"
            )
        if not isinstance(values, list) or not values:
            raise ConfigError("needs a non-empty list of values", file=file, path=f"grid.{key}", value=values,
                              expected="e.g. [4, 8]",
                              hint="a value every point shares goes in set:")  # fmt: skip
        try:  # the key's form, as `set` entries are checked (an empty part: scale_out..efficiency)
            parse_set_option(f"{key.strip()}=0")
        except ConfigError as exc:
            raise ConfigError(exc.message, file=file, path="grid", value=key, expected=exc.expected) from None
        if key.strip() in grid:  # "tp" and "tp " are one field: the second would drop the first's values
            raise ConfigError("the same field path twice", file=file, path=f"grid.{key.strip()}",
                              expected="each field path once (join the values in one list)")  # fmt: skip
        grid[key.strip()] = list(values)
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError("", file=file, path="name", value=name, expected="a non-empty text (or no name:)")
    spec = SweepSpec(
        file=file,
        name=name or path.stem,
        profiles=profiles,
        workloads=workloads,
        sets=list(sets),
        grid=grid,
        racks=_positive(data, "racks", file),
        steps=_simulated_steps(data, file),
        seed=_nonnegative(data, "seed", file),
        trace=_bool(data, "trace", file),
        metrics=_metrics(data, file),
    )
    if spec.size > MAX_POINTS:
        raise ConfigError(f"{spec.size:,} points", file=file, path="grid",
                          expected=f"at most {MAX_POINTS:,} (split the sweep)")  # fmt: skip
    _check_metrics(spec)
    _check_names(spec)
    return spec


def _check_metrics(spec: SweepSpec) -> None:
    """A metric no summary can contain is a typo: stop before anything runs, not after every point. A
    dotted metric (``workload.parallelism.tp``) is checked by its first key."""
    for i, metric in enumerate(spec.metrics):
        if any(not part for part in metric.split(".")):
            raise ConfigError(
                "a dotted metric has an empty part",
                file=spec.file,
                path=f"metrics[{i}]",
                value=metric,
                expected="keys joined by single dots, e.g. workload.parallelism.tp",
            )
        head = metric.split(".", 1)[0]
        if head not in SUMMARY_FIELDS:
            close = difflib.get_close_matches(head, sorted(SUMMARY_FIELDS), n=1)
            raise ConfigError(
                "no summary.json has this key",
                file=spec.file,
                path=f"metrics[{i}]",
                value=metric,
                expected="a summary.json key (docs/design.md), e.g. step_time_s, mfu, ttft_s_p50",
                hint=f"did you mean {close[0]!r}?" if close else None,
            )


def _int(data: Mapping[str, Any], key: str, file: str, default: int | None) -> Any:
    value = data.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError("", file=file, path=key, value=value, expected="an integer")
    return value


def _positive(data: Mapping[str, Any], key: str, file: str) -> int | None:
    value = _int(data, key, file, default=None)
    if value is not None and value < 1:
        raise ConfigError("", file=file, path=key, value=value, expected="a positive integer")
    return value


def _simulated_steps(data: Mapping[str, Any], file: str) -> int | None:
    from workloads.spec import check_simulated_steps

    steps = _positive(data, "steps", file)
    if steps is not None:
        check_simulated_steps(steps, file=file)
    return steps


def _nonnegative(data: Mapping[str, Any], key: str, file: str) -> int:
    value = _int(data, key, file, default=0)
    if value is None or value < 0:  # `seed: null` too (it has no "absent" meaning: the default is 0)
        raise ConfigError("", file=file, path=key, value=value, expected="a whole number >= 0")
    return value


def _bool(data: Mapping[str, Any], key: str, file: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError("", file=file, path=key, value=value, expected="true or false")
    return value


def _metrics(data: Mapping[str, Any], file: str) -> list[str]:
    value = data.get("metrics")
    if value is None:
        return list(DEFAULT_METRICS)
    metrics = _one_or_list(value)
    if not metrics or not all(isinstance(v, str) for v in metrics):
        raise ConfigError(
            "", file=file, path="metrics", value=value, expected="a summary.json key or a list of them"
        )
    return metrics


def _check_names(spec: SweepSpec) -> None:
    """Fail before running anything when a profile or workload name is wrong (not 40 points later)."""
    from simcore.profile import resolve_profile_path
    from workloads.model import list_presets
    from workloads.spec import resolve_workload_path

    for i, name in enumerate(spec.profiles):
        try:
            resolve_profile_path(name)
        except ConfigError as exc:
            raise ConfigError(exc.message, file=spec.file, path=f"profiles[{i}]", value=name,
                              expected=exc.expected, hint=exc.hint) from None  # fmt: skip
    presets = list_presets()
    for i, name in enumerate(spec.workloads):
        if name is None:
            continue
        try:
            path = resolve_workload_path(name)
        except ConfigError as exc:  # an empty name: say where in the sweep file, not "--workload"
            raise ConfigError(exc.message, file=spec.file, path=f"workloads[{i}]", value=name,
                              expected=exc.expected) from None  # fmt: skip
        if path is None and name not in presets:
            raise ConfigError("workload not found", file=spec.file, path=f"workloads[{i}]", value=name,
                              expected="a workload spec file (relative to the sweep file) or a model preset")  # fmt: skip
    _check_settings(spec)
    _check_workload_points(spec)


# Messages of errors in a value itself (a misspelt field, a unit that does not parse): those fail every
# point, so they stop the sweep up front, as does any error of the schema's own checks (_field_error).
# Consistency checks between fields are left to each point.
_VALUE_ERRORS = ("unknown field", "unknown unit", "wrong unit", "a unit is required", "not a quantity",
                 "not a number followed by a unit", "not an allowed value", "not a finite number")  # fmt: skip


def _check_settings(spec: SweepSpec) -> None:
    """Fail before running anything when a `set` or grid key is misspelt, or a profile value is wrong in
    itself (does not parse, out of range) on every profile of the sweep (each point would fail alike)."""
    from simcore.profile import load_profile
    from simcore.runner import split_sets

    options = [(f"set[{i}]", option) for i, option in enumerate(spec.sets)]
    options += [
        (f"grid.{key}", f"{key}={_set_value(v)}") for key, values in spec.grid.items() for v in values
    ]
    try:
        fixed = split_sets(spec.sets)[0]  # the profile part of the sweep's own `set` options
    except ConfigError as exc:
        raise ConfigError(exc.message, file=spec.file, path="set", value=exc.value,
                          expected=exc.expected, hint=exc.hint) from None  # fmt: skip
    for where, option in options:
        try:
            profile_sets, _ = split_sets([option])
            errors = []
            value_errors = []
            for profile in spec.profiles if profile_sets else ():
                try:
                    load_profile(profile, [*fixed, *profile_sets])
                except ConfigError as exc:
                    errors.append(exc)
                    if exc.message.startswith(_VALUE_ERRORS) or _field_error(
                        profile, [*fixed, *profile_sets]
                    ):
                        value_errors.append(exc)
            if profile_sets and len(errors) == len(spec.profiles) and value_errors:
                raise value_errors[0]
        except ConfigError as exc:
            raise ConfigError(exc.message, file=spec.file, path=where, value=option,
                              expected=exc.expected, hint=exc.hint) from None  # fmt: skip


def _field_error(profile: str, sets: list[str]) -> bool:
    """Whether the profile with ``sets`` fails on a field's own value (a type, a range, a unit: the schema),
    not on how fields fit together (a power cap below the idle draw: that profile's points report it)."""
    from simcore.profile import Profile, _load_raw, apply_overrides, resolve_profile_path
    from simcore.schema import build

    try:
        path = resolve_profile_path(profile)
        build(Profile, apply_overrides(_load_raw(path, ())[0], sets), file=str(path), path="")
    except ConfigError:
        return True
    return False


def _wrote(key: str, path: str) -> bool:
    """Whether a ``--set`` of ``key`` wrote the field at ``path`` (or a section ``path`` it reached into)."""
    return path == key or path.startswith((key + ".", key + "[")) or key.startswith(path + ".")


def _workload_base(name: str | None, profiles: list[Any]) -> tuple[dict[str, Any], str] | None:
    """A workload's raw mapping as a run starts from it, before the sweep's ``set`` and grid values: a spec
    file as written, a bare model preset as the automatic layout writes it (every field present); None when
    it cannot be read here (each point then reports that itself)."""
    from simcore.runner import DEFAULT_MODEL
    from workloads.model import load_preset
    from workloads.spec import auto_training_spec, load_workload, spec_mapping

    try:
        raw, label, _text = load_workload(DEFAULT_MODEL if name is None else name)
        if set(raw) != {"preset"}:
            return raw, label
        if not profiles:
            return None
        auto = auto_training_spec(load_preset(raw["preset"]), gpus=profiles[0].gpus_per_rack,
                                  domain_size=profiles[0].scale_up.domain_size,
                                  hbm_bytes=profiles[0].accelerator.hbm_capacity, file=label)  # fmt: skip
        return spec_mapping(auto), label
    except RacksimError:
        return None


def _read_workload_fields(raw: dict[str, Any], sets: list[str], label: str) -> None:
    """Read a workload with ``sets`` applied as far as its fields' own values go (known keys, types, ranges,
    units, allowed values, the model), not how they fit together or on the hardware: an error here is in
    the input, whatever the point runs on."""
    from simcore.schema import build
    from workloads.inference import INFERENCE_KEYS, _ServingFields
    from workloads.model import resolve_model_section
    from workloads.spec import WORKLOAD_KEYS, _TrainingFields, apply_workload_overrides

    data = dict(apply_workload_overrides(dict(raw), sets))
    serving = data.get("kind") == "inference"
    keys, fields = (INFERENCE_KEYS, _ServingFields) if serving else (WORKLOAD_KEYS, _TrainingFields)
    for key in data:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            raise ConfigError("unknown field", file=label, path=str(key), expected=f"one of {', '.join(keys)}",
                              hint=f"did you mean {close[0]!r}?" if close else None)  # fmt: skip
    if data.pop("kind", "training") not in ("training", "inference"):
        raise ConfigError("unknown workload kind", file=label, path="kind", value=raw.get("kind"),
                          expected="training or inference")  # fmt: skip
    resolve_model_section(data.pop("model", None), data.pop("preset", None), file=label)
    build(fields, data, file=label, path="")


def _check_workload_points(spec: SweepSpec) -> None:
    """Fail before running anything when a workload value of the sweep is wrong in itself (``tp: "x"``,
    ``batch.micro: 0``, a field no workload of the sweep has, a bad ``set`` or spec file): each such point
    would only report "could not run". A field one workload has and another lacks (``scheduler.*`` in a
    sweep of training and serving) and values that do not fit together or on the hardware (tp not dividing
    the heads, out of HBM, too few racks) stay per-point results."""
    from simcore.profile import load_profile
    from simcore.runner import WORKLOAD_SET_KEYS, split_sets

    keys = [k for k in spec.grid if k.split(".")[0] in WORKLOAD_SET_KEYS]
    fixed_profile, fixed = split_sets(spec.sets)
    profiles = []  # one is enough: a preset's fields are the same on every profile
    for name in spec.profiles:
        try:
            profiles = [load_profile(name, fixed_profile)]
            break
        except RacksimError:
            continue
    # The first point, and from it each grid value in turn: every value is read in a point of the sweep
    # (reading every combination costs ~5 ms each, minutes for a large grid); a value wrong only beside
    # another grid key's value is that point's result.
    first_values = tuple(spec.grid[k][0] for k in keys)
    combos = [first_values] + [
        (*first_values[:i], v, *first_values[i + 1 :]) for i, k in enumerate(keys) for v in spec.grid[k][1:]
    ]
    unknown: dict[str, set[int]] = {}  # where an unknown field was set -> the workloads that lack it
    first: dict[str, ConfigError] = {}
    for w, workload in enumerate(spec.workloads):
        base = _workload_base(workload, profiles)
        if base is None:
            continue
        raw, label = base
        for values in combos:
            grid_sets = [f"{k}={_set_value(v)}" for k, v in zip(keys, values, strict=True)]
            try:
                _read_workload_fields(raw, [*fixed, *grid_sets], label)
            except ConfigError as exc:
                path = exc.path or ""
                blamed = [(k, v) for k, v in zip(keys, values, strict=True) if _wrote(k, path)]
                setting = [i for i, o in enumerate(spec.sets) if _wrote(o.split("=", 1)[0].strip(), path)]
                if blamed:
                    where, value = f"grid.{blamed[-1][0]}", blamed[-1][1]
                elif setting:
                    where, value = f"set[{setting[-1]}]", spec.sets[setting[-1]]
                else:
                    where, value = f"workloads[{w}]", _short(workload) if workload else "(the default)"
                err = ConfigError(f"{exc.message} ({label}: {path or 'the spec'})", file=spec.file, path=where,
                                  value="null" if value is None else value, expected=exc.expected,
                                  hint=exc.hint)  # fmt: skip
                if not exc.message.startswith("unknown field"):
                    raise err from None
                unknown.setdefault(where, set()).add(w)
                first.setdefault(where, err)
    for where, lacking in unknown.items():
        if len(lacking) == len(spec.workloads):
            raise first[where]


def expand(spec: SweepSpec, out: Path | None = None) -> list[SweepPoint]:
    """Every point, in a fixed order: profiles, then workloads, then the grid keys in file order."""
    keys = list(spec.grid)
    points: list[SweepPoint] = []
    width = max(3, len(str(spec.size - 1)))
    combos = itertools.product(spec.profiles, spec.workloads, *(spec.grid[k] for k in keys))
    serving: dict[tuple[Any, ...], bool] = {}
    for i, (profile, workload, *values) in enumerate(combos):
        label = f"p{i:0{width}d}"
        params: dict[str, Any] = {
            "profile": _short(profile),
            "workload": _short(workload) if workload else None,
        }
        params.update(zip(keys, values, strict=True))
        grid_sets = tuple(f"{k}={_set_value(v)}" for k, v in zip(keys, values, strict=True))
        sets = (*spec.sets, *grid_sets)
        points.append(
            SweepPoint(
                index=i,
                label=label,
                profile=profile,
                workload=workload,
                sets=sets,
                params=params,
                racks=spec.racks,
                steps=None if spec.steps is not None and _serves(workload, sets, serving) else spec.steps,
                seed=spec.seed,
                out_dir=str(out / "points" / label) if out is not None else None,
                write_trace=spec.trace,
            )
        )
    return points


def _serves(workload: str | None, sets: tuple[str, ...], memo: dict[tuple[Any, ...], bool]) -> bool:
    """Whether a point runs a serving workload: the sweep's ``steps`` are training steps, and a serving run
    refuses them (it serves its request stream), so its points run without them."""
    from simcore.runner import RunOptions, is_inference

    kind = tuple(o for o in sets if o.split("=", 1)[0].strip() == "kind")  # only `kind` can change it
    key = (workload, kind)
    if key not in memo:
        try:
            memo[key] = is_inference(RunOptions(workload=workload), list(kind))
        except RacksimError:  # an unreadable workload: the point reports that itself
            memo[key] = False
    return memo[key]


def preflight(spec: SweepSpec, points: list[SweepPoint]) -> None:
    """Read the first point of each (profile, workload) pair, with every ``set`` and grid value, without
    simulating. When every pair meets an unknown field, a misspelt ``set`` or grid key would fail every
    point alike, so it stops the sweep here. A field that only some pairs lack (``scheduler.*`` in a sweep of
    training and serving workloads), or a value some points cannot run (tp not dividing heads), stays a
    per-point ``error`` result."""
    from simcore.profile import load_profile
    from simcore.runner import (
        RunOptions,
        build_inference_spec,
        build_training_spec,
        is_inference,
        split_sets,
    )

    firsts = {(p.profile, p.workload): p for p in reversed(points)}  # the first point of each pair
    unknown: list[ConfigError] = []
    for point in firsts.values():
        opts = RunOptions(profile=point.profile, workload=point.workload, racks=point.racks, steps=point.steps,
                          sets=list(point.sets), write_trace=False)  # fmt: skip
        profile_sets, workload_sets = split_sets(opts.sets)
        try:
            profile = load_profile(point.profile, profile_sets)
            build = build_inference_spec if is_inference(opts, workload_sets) else build_training_spec
            build(opts, profile, workload_sets)
        except ConfigError as exc:
            if not exc.message.startswith("unknown field"):
                return  # a pair that reads its fields: the sweep runs, errors stay per point
            unknown.append(exc)
        except RacksimError:
            return
        else:
            return
    if unknown:
        raise ConfigError(f"{unknown[0]} (in every point)", file=spec.file, path="set / grid",
                          expected="field names a profile or workload has") from None  # fmt: skip


def _short(name: str) -> str:
    p = Path(name)
    return p.stem if p.suffix in (".yaml", ".yml") else name


# ------------------------------------------------------------------------------------------ running
def run_point(point: SweepPoint) -> dict[str, Any]:
    """Run one point (in a worker process or on a Dask worker); never raises but for Ctrl-C: the status
    says what happened. ``error``: the configuration cannot run (a result); ``crashed``: a racksim bug."""
    from simcore.runner import RunOptions, run

    t0 = time.perf_counter()
    ctrl_c = interrupts.mark()
    record: dict[str, Any] = {"label": point.label, "index": point.index, "params": point.params}
    try:
        result = run(
            RunOptions(
                profile=point.profile,
                workload=point.workload,
                out=Path(point.out_dir) if point.out_dir else None,
                racks=point.racks,
                steps=point.steps,
                seed=point.seed,
                sets=list(point.sets),
                write_trace=point.write_trace,
            )
        )
    except RacksimError as exc:
        record.update(status="error", error=str(exc))
    except Exception as exc:  # a bug must not cost the other points their results
        if interrupts.requested_since(ctrl_c):  # Ctrl-C surfacing wrapped (numba: SystemError), not a bug
            raise KeyboardInterrupt from exc
        record.update(
            status="crashed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
    else:
        record.update(status="ok", summary=_plain(result.summary))
    record["wall_s"] = time.perf_counter() - t0
    if point.out_dir is not None:
        if point.stop_file is not None and Path(point.stop_file).exists():
            shutil.rmtree(point.out_dir, ignore_errors=True)  # the sweep stopped: sweep.json cannot list it
        elif record["status"] != "ok":
            discard_if_empty(point.out_dir)  # a point that did not run has no directory
    return record


def _plain(value: Any) -> Any:
    """JSON-ready copy of a summary (numpy scalars to Python numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _local_results(points: list[SweepPoint], jobs: int) -> Generator[dict[str, Any], None, None]:
    """Results as they finish, from ``jobs`` worker processes (inline when ``jobs`` is 1). Closing the
    generator early (Ctrl-C) cancels the queued points and ends the running ones."""
    if jobs <= 1 or len(points) <= 1:
        for point in points:
            yield run_point(point)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=min(jobs, len(points)), initializer=interrupts.worker_signals)
    try:
        futures = {pool.submit(run_point, p): p for p in points}
        for fut in as_completed(futures):
            yield _result_or_crash(fut, futures[fut])
    except BaseException:  # Ctrl-C, or the sweep closed this stream
        interrupts.stop_workers(pool)
        raise
    pool.shutdown()


def _result_or_crash(fut: Any, point: SweepPoint) -> dict[str, Any]:
    """A finished future's record; a worker that died (killed, out of memory) is that point's crash."""
    try:
        return fut.result()
    except Exception as exc:
        return {"label": point.label, "index": point.index, "params": point.params, "status": "crashed",
                "error": f"worker lost: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                "wall_s": 0.0}  # fmt: skip


class SchedulerUnreachable(RacksimError):
    """``--scheduler`` cannot be used (no dask extra, no answer): raised before the sweep touches ``--out``."""


def _dask_client(scheduler: str) -> Any:
    """A client of the Dask scheduler at ``scheduler``, connected before the sweep touches ``--out``: without
    the dask extra, or with a scheduler that does not answer, nothing can run, so an earlier sweep's
    results there must stay."""
    try:
        from distributed import Client
    except ImportError:
        raise SchedulerUnreachable(
            "--scheduler needs Dask: pip install -e '.[dask]' (workers need racksim installed too)"
        ) from None
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: not an address (no port, bad scheme)
        raise SchedulerUnreachable(
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc}); expected e.g. tcp://host:8786"
        ) from None


def _dask_results(points: list[SweepPoint], client: Any) -> Generator[dict[str, Any], None, None]:
    """Results as they finish, from the workers of a Dask ``client``'s scheduler. Closing the generator
    early cancels the points not started; a point already running on a worker cannot be stopped (Dask does
    not interrupt a running task): it finishes there and, finding the sweep's stop file, removes its
    outputs (``run_point``)."""
    from distributed import as_completed

    futures: list[Any] = []
    try:
        futures = client.map(run_point, points, pure=False)
        by_key = {f.key: p for f, p in zip(futures, points, strict=True)}
        for fut in as_completed(futures):
            yield _result_or_crash(fut, by_key[fut.key])
    except BaseException:  # Ctrl-C, or the sweep closed this stream: no queued point may start
        if futures:
            client.cancel(futures)
        raise


@dataclass
class SweepResult:
    spec: SweepSpec
    out: Path
    points: list[dict[str, Any]]
    wall_s: float
    total: int = 0  # points in the sweep (more than ``points`` while it runs or when interrupted)

    @property
    def complete(self) -> bool:
        return len(self.points) >= self.total

    @property
    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "error": 0, "crashed": 0}
        for p in self.points:
            out[p["status"]] = out.get(p["status"], 0) + 1
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "file": self.spec.file,
            "grid": self.spec.grid,
            "set": self.spec.sets,
            "metrics": self.spec.metrics,
            "counts": self.counts,
            "points_total": self.total,
            "complete": self.complete,
            "wall_s": self.wall_s,
            "points": self.points,
        }


def run_sweep(
    spec: SweepSpec,
    *,
    out: Path | None = None,
    jobs: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every point and write ``sweep.json`` and ``sweep.csv`` under ``out``. ``progress`` gets a line per
    finished point, ``note`` what the user must hear even without them (point directories it removed).

    Ctrl-C stops the sweep at once (queued points cancelled, running ones ended), removes the directories
    of the points that did not finish and writes the outputs with the finished ones, so sweep.json,
    sweep.csv and ``points/`` agree; then it raises KeyboardInterrupt."""
    jobs = jobs if jobs is not None else max(1, os.cpu_count() or 1)
    if jobs < 1:
        raise RacksimError(f"--jobs: got {jobs}; expected at least 1")
    ctrl_c = interrupts.mark()
    preflight(spec, expand(spec))
    client = _dask_client(scheduler) if scheduler else None
    try:
        return _run_points(spec, out, jobs, scheduler, client, progress, note, ctrl_c)
    finally:
        if client is not None:
            client.close()


def _run_points(
    spec: SweepSpec,
    out: Path | None,
    jobs: int,
    scheduler: str | None,
    client: Any,
    progress: Callable[[str], None] | None,
    note: Callable[[str], None] | None,
    ctrl_c: int,
) -> SweepResult:
    """The body of ``run_sweep`` once the points can run (``client``: on Dask)."""
    with output_dir(out, "sweep-") as out_path:
        if out_path.exists() and not out_path.is_dir():  # say it before the sweep's first line, not after
            raise ConfigError("exists and is not a directory", path="--out", value=str(out_path),
                              expected="a directory for sweep.json, sweep.csv and points/ (new or existing)")  # fmt: skip
        fresh = not out_path.exists()  # a sweep that fails before any result leaves no folder it made
        removed = _clear_earlier_points(out_path)
        if removed and note is not None:
            dirs = plural(len(removed), "point directory", "point directories")
            span = removed[0] if len(removed) == 1 else f"{removed[0]} ... {removed[-1]}"
            note(
                f"note: removed {dirs} ({span}) an earlier sweep left in {out_path / 'points'}: they were "
                "its points, not this one's"
            )
        # Dask only (a local pool's workers are ended): absolute, as the workers' directory may differ
        stop = (out_path / "points" / f".sweep-{uuid.uuid4().hex}.stopped").resolve() if scheduler else None
        points = [replace(p, stop_file=None if stop is None else str(stop)) for p in expand(spec, out_path)]
        say = progress or (lambda _msg: None)
        where = f"Dask scheduler {scheduler}" if scheduler else f"{min(jobs, len(points))} local process(es)"
        say(f"{spec.name}: {len(points)} point(s) on {where}; results in {out_path}")
        t0 = last_save = time.perf_counter()
        results: list[dict[str, Any]] = []
        stream = _dask_results(points, client) if client is not None else _local_results(points, jobs)
        try:
            for record in stream:
                results.append(record)
                say(f"[{len(results)}/{len(points)}] {record['label']} {_describe(record)}")
                interrupts.raise_if_requested(ctrl_c)  # a Ctrl-C swallowed on the way still stops the sweep
                if time.perf_counter() - last_save > SAVE_EVERY_S:  # a long sweep keeps what it has done
                    _save(SweepResult(spec, out_path, results, time.perf_counter() - t0, len(points)))
                    last_save = time.perf_counter()
        except BaseException as exc:
            if stop is not None:
                # first: a point that finishes from now on removes its own outputs
                stop.parent.mkdir(parents=True, exist_ok=True)
                stop.touch()
            stream.close()
            _discard_unfinished(points, results)
            stopped = isinstance(exc, KeyboardInterrupt) or (
                not isinstance(exc, RacksimError) and interrupts.requested_since(ctrl_c)
            )
            if results or stopped or removed:  # never an earlier sweep.json beside no points of its own
                _save(SweepResult(spec, out_path, results, time.perf_counter() - t0, len(points)))
            discard_if_empty(out_path / "points")
            if fresh:
                discard_if_empty(out_path)
            if stopped and not isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt from exc  # a Ctrl-C that surfaced wrapped (numba: SystemError)
            raise
        discard_if_empty(out_path / "points")
        return _save(SweepResult(spec, out_path, results, time.perf_counter() - t0, len(points)))


def _clear_earlier_points(out: Path) -> list[str]:
    """Remove the point directories an earlier sweep into the same ``out`` left; return their labels. A label
    is a position in that sweep's grid: its p008 is no point of this sweep and its p003 another point than
    this one's (an ``error`` point would not overwrite it), and the new sweep.json lists none of them. Only
    ``points/p<digits>`` directories are touched."""
    points = out / "points"
    if not points.is_dir():
        return []
    labels = [
        p.name for p in points.iterdir() if POINT_DIR.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
    ]
    labels.sort(key=lambda name: (len(name), name))
    for name in labels:
        shutil.rmtree(points / name)
    return labels


def _discard_unfinished(points: list[SweepPoint], results: list[dict[str, Any]]) -> None:
    """Remove what the points that did not finish wrote (an empty directory, a partial trace): outputs
    sweep.json does not list must not pass for results."""
    finished = {r["label"] for r in results}
    for point in points:
        if point.out_dir is not None and point.label not in finished:
            shutil.rmtree(point.out_dir, ignore_errors=True)


def _save(result: SweepResult) -> SweepResult:
    """Write sweep.json and sweep.csv (atomically) with the points finished so far, in point order."""
    result.points = sorted(result.points, key=lambda r: r["index"])
    write_json(result.out / "sweep.json", result.as_json())
    with atomic_path(result.out / "sweep.csv") as tmp:
        tmp.write_text(to_csv(result))
    return result


def _describe(record: dict[str, Any]) -> str:
    varied = ", ".join(f"{k}={v}" for k, v in record["params"].items() if v is not None)
    if record["status"] == "ok":
        s = record["summary"]
        return (
            f"{varied}: step {s.get('step_time_s', float('nan')):.4g} s, MFU {100 * s.get('mfu', 0.0):.1f} %"
        )
    return f"{varied}: {record['status']}: {record['error']}"


# ------------------------------------------------------------------------------------------ output
def _param_keys(result: SweepResult) -> list[str]:
    return ["profile", "workload", *result.spec.grid]


_MISSING = object()


def _lookup(record: dict[str, Any], key: str) -> Any:
    """A summary value by key, or by dotted path into a nested entry (``workload.parallelism.tp``);
    ``_MISSING`` when the summary has no such key."""
    value: Any = record.get("summary") or {}
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _metric(record: dict[str, Any], key: str) -> Any:
    value = _lookup(record, key)
    return None if value is _MISSING else value


def _layout(record: dict[str, Any]) -> str | None:
    """The parallel layout a point ran (``tp8 pp1 dp9 ep1``; a serving point's ``tp4 replicas2``): with
    model presets racksim picks it per point, so a sweep over domains or racks shows what it chose."""
    par = _lookup(record, "workload.parallelism")
    if not isinstance(par, Mapping):
        return None
    order = ("tp", "pp", "dp", "cp", "ep", "replicas")
    return " ".join(
        f"{k}{par[k]}" for k in order if isinstance(par.get(k), int) and not (k == "cp" and par[k] == 1)
    )


def _unit_kind(root: type, parts: list[str]) -> str | None:
    """The unit kind (a key of ``simcore.units.SI_UNITS``) of the quantity field at ``parts`` under the
    schema dataclass ``root``, read from the field declarations the loaders build from; None when the
    path ends on anything else (a count, a choice, a section) or names no field."""
    from simcore.schema import _inner_class

    cls, i = root, 0
    while i < len(parts):
        fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("kind")}
        fld = fields.get(parts[i])
        if fld is None:
            return None
        meta, rest = fld.metadata, parts[i + 1 :]
        if meta["kind"] == "quantity":
            return meta["unit_kind"] if not rest else None
        if meta["kind"] == "quantity_map":
            return meta["unit_kind"] if len(rest) == 1 and rest[0] in meta["keys"] else None
        if meta["kind"] == "section":
            i += 1
        elif meta["kind"] == "section_map" and rest and rest[0] in meta["keys"]:
            i += 2
        else:
            return None
        cls = _inner_class(cls, fld.name)
    return None


def _quantity_kind(key: str) -> str | None:
    """The unit kind of the profile or workload field a grid key sets (``scale_out.nic_bandwidth``:
    bandwidth), routed like ``--set`` (simcore.runner.split_sets); None for a field that is no physical
    quantity, or when training and serving specs disagree on it."""
    from simcore.profile import Profile
    from simcore.runner import WORKLOAD_SET_KEYS
    from workloads.inference import _ServingFields
    from workloads.spec import _TrainingFields

    parts = key.split(".")
    roots = (_TrainingFields, _ServingFields) if parts[0] in WORKLOAD_SET_KEYS else (Profile,)
    kinds = {kind for root in roots if (kind := _unit_kind(root, parts)) is not None}
    return kinds.pop() if len(kinds) == 1 else None


def _si_value(value: Any, kind: str) -> float | None:
    """A grid value in SI units, parsed as the loaders parse it; None when it does not parse (that point
    reports its error itself)."""
    from simcore.units import parse_quantity

    try:
        return parse_quantity(value, kind)
    except ConfigError:
        return None


def _csv_param_columns(result: SweepResult) -> list[tuple[str, str, str | None]]:
    """The CSV's parameter columns as (header, grid key, unit kind): each grid key, and right after a key
    whose field is a physical quantity, the same values in SI units (``scale_out.nic_bandwidth [B/s]``)."""
    from simcore.units import SI_UNITS

    columns: list[tuple[str, str, str | None]] = []
    for key in _param_keys(result):
        columns.append((key, key, None))
        kind = _quantity_kind(key) if key in result.spec.grid else None
        if kind is not None:
            columns.append((f"{key} [{SI_UNITS[kind]}]", key, kind))
    return columns


def to_csv(result: SweepResult) -> str:
    """One row per point: label, parameters (a quantity also in SI units), status, the layout it ran, the
    metrics, the error (if any)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = _csv_param_columns(result)
    writer.writerow(["label", *(c[0] for c in columns), "status", "layout", *result.spec.metrics, "error"])
    for r in result.points:
        params = [
            r["params"].get(key) if kind is None else _si_value(r["params"].get(key), kind)
            for _, key, kind in columns
        ]
        row = [r["label"], *params, r["status"], _layout(r)]
        row += [_metric(r, m) for m in result.spec.metrics]
        row.append(r.get("error", ""))
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short_error(text: str, limit: int = 160) -> str:
    """An error cell: whole words, and where it was cut, where the full text is."""
    if len(text) <= limit:
        return text
    return text[: text.rfind(" ", 0, limit - 30) if " " in text[: limit - 30] else limit - 30] + (
        " ... (full text in sweep.json)"
    )


def _unknown_metric_notes(result: SweepResult) -> list[str]:
    """A metric no point that ran has in its summary (a serving key in a training sweep, ``goodput`` without
    a multi-day job, a misspelt nested key): say so, not '-' silently. Unknown top-level keys never get here:
    ``load_sweep`` refuses them."""
    ran = [r for r in result.points if r["status"] == "ok"]
    if not ran:
        return []
    keys = sorted(set().union(*(r.get("summary") or {} for r in ran)))
    notes = []
    for metric in result.spec.metrics:
        if all(_lookup(r, metric) is _MISSING for r in ran):
            close = difflib.get_close_matches(metric, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            notes.append(f"note: metric {metric!r} is in no point's summary.json{hint}")
    return notes


def format_table(result: SweepResult) -> str:
    """The sweep as a text table (parameters that vary, then the metrics; errors in one short column)."""
    keys = [
        k for k in _param_keys(result) if len({json.dumps(r["params"].get(k)) for r in result.points}) > 1
    ]
    layouts = {_layout(r) for r in result.points if r["status"] == "ok"}
    shown = ["layout"] if len(layouts) > 1 else []  # when racksim chose different layouts, say which
    header = ["point", *keys, *shown, *result.spec.metrics]
    rows = []
    for r in result.points:
        cells = [r["label"], *(_cell(r["params"].get(k)) for k in keys)]
        if r["status"] == "ok":
            cells += [_cell(_layout(r)) for _ in shown]
            cells += [_cell(_metric(r, m)) for m in result.spec.metrics]
        else:
            cells += [_short_error(f"{r['status']}: {r['error']}")]
        rows.append(cells)
    full = [c for c in rows if len(c) == len(header)]  # an error row's message runs past the columns
    first_result = 1 + len(keys)  # the layout and metric columns: an error row has its message there
    widths = [
        max(len(h), *(len(c[i]) for c in (rows if i < first_result else full)), 0)
        for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for cells in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip())
    lines += _unknown_metric_notes(result)
    c = result.counts
    lines.append(
        f"{len(result.points)} point(s): {c['ok']} ran, {c['error']} could not run, {c['crashed']} crashed; "
        f"{result.wall_s:.1f} s wall; {result.out / 'sweep.json'}, {result.out / 'sweep.csv'}"
    )
    return "\n".join(lines)
