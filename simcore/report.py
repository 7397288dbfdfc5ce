"""``racksim analyze TRACE``: where each pipeline stage's time went, the slowest collectives, power and heat.

Works on traces far larger than memory: events are read in blocks and reduced per rank class to unions of
intervals (compute, all communication, communication of each parallel group), which are small because
back-to-back ops merge. Step windows are then measured on those unions with a cumulative-coverage
lookup, so nothing loops over events in Python. The fractions are the ones the run's summary reports
(:func:`simcore.analysis.class_breakdown` semantics): exposed communication of a group is the time it
runs with no compute running, idle is the time with neither (pipeline bubble, waits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simcore.activity import GROUPS, KIND_COLLECTIVE, KIND_COMPUTE, KIND_SEND
from simcore.analysis import Breakdown, merge_intervals
from simcore.atomic import write_json
from simcore.trace import Series, Trace
from simcore.wording import plural

REPORT_GROUPS = ("tp", "dp", "pp", "ep", "cp")
THROTTLE_BELOW = 1.0 - 1e-6  # clock factor under this counts as throttled
ANALYZE_FIELDS = ("rank_class", "kind", "group", "op", "name", "step", "t_start", "t_end", "nbytes")


# ---------------------------------------------------------------------------------------------- intervals


def covered_until(starts: np.ndarray, ends: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Covered length of disjoint sorted intervals up to each point (a cumulative-coverage lookup)."""
    points = np.asarray(points, dtype=np.float64)
    if len(starts) == 0:
        return np.zeros_like(points)
    cum = np.concatenate([[0.0], np.cumsum(ends - starts)])
    i = np.searchsorted(starts, points, side="right")  # intervals starting at or before the point
    last = np.maximum(i - 1, 0)
    over = np.where(i > 0, np.maximum(ends[last] - points, 0.0), 0.0)  # part of interval i-1 past it
    return cum[i] - over


def window_lengths(intervals: tuple[np.ndarray, np.ndarray], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Covered length inside each window [lo_k, hi_k]."""
    s, e = intervals
    return covered_until(s, e, hi) - covered_until(s, e, lo)


def _union(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0), np.zeros(0)
    if len(parts) == 1:
        return parts[0]
    return merge_intervals(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


@dataclass
class _ClassAcc:
    """Interval unions of one class, accumulated block by block (each part already merged)."""

    compute: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    comm: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    groups: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def compact(self) -> None:
        """Merge the parts collected so far (keeps the lists short on long traces)."""
        self.compute = [_union(self.compute)] if len(self.compute) > 1 else self.compute
        self.comm = [_union(self.comm)] if len(self.comm) > 1 else self.comm
        for g, parts in self.groups.items():
            if len(parts) > 1:
                self.groups[g] = [_union(parts)]


def _accumulate(block: np.ndarray, accs: dict[int, _ClassAcc]) -> None:
    """Add one block of events to the per-class unions (vectorised per class, no per-event loop)."""
    cls = block["rank_class"]
    # stable sort keeps each class's rows in file order; int16 keys get numpy's radix sort
    key = cls.astype(np.int16) if len(cls) and cls.min() >= 0 and cls.max() < 2**15 else cls
    order = np.argsort(key, kind="stable")
    cls = np.ascontiguousarray(cls)[order]
    ts = np.ascontiguousarray(block["t_start"])[order]
    te = np.ascontiguousarray(block["t_end"])[order]
    kind = np.ascontiguousarray(block["kind"])[order]
    group = np.ascontiguousarray(block["group"])[order]
    is_comp_all = kind == KIND_COMPUTE
    uniq, first = np.unique(cls, return_index=True)
    bounds = np.append(first, len(cls))
    for c, a, b in zip(uniq.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        acc = accs.setdefault(c, _ClassAcc())
        s, e = ts[a:b], te[a:b]
        is_comp = is_comp_all[a:b]
        if is_comp.any():
            acc.compute.append(merge_intervals(s[is_comp], e[is_comp]))
        comm = ~is_comp
        if comm.any():
            cs, ce, cg = s[comm], e[comm], group[a:b][comm]
            acc.comm.append(merge_intervals(cs, ce))
            for g in np.unique(cg).tolist():
                m = cg == g
                acc.groups.setdefault(g, []).append(merge_intervals(cs[m], ce[m]))
        if len(acc.compute) > 64 or len(acc.comm) > 64:
            acc.compact()


# ---------------------------------------------------------------------------------------------- collectives


class _TopCollectives:
    """Running top-N of the longest communication ops, deduplicated across the classes that ran them."""

    def __init__(self, top: int, n_classes: int) -> None:
        self.top = top
        self.keep = max(top, min(200_000, top * max(1, n_classes)))
        self.rows: np.ndarray | None = None

    def add(self, block: np.ndarray) -> None:
        if self.top <= 0:
            return
        kind = block["kind"]
        idx = np.flatnonzero((kind == KIND_COLLECTIVE) | (kind == KIND_SEND))
        if len(idx) == 0:
            return
        if len(idx) > self.keep:  # select on durations first, copy only the winners
            dur = block["t_end"][idx] - block["t_start"][idx]
            idx = idx[np.argpartition(-dur, self.keep - 1)[: self.keep]]
        comm = block[idx]
        if self.rows is not None:
            comm = np.concatenate([self.rows, comm])
        if len(comm) > self.keep:
            dur = comm["t_end"] - comm["t_start"]
            comm = comm[np.argpartition(-dur, self.keep - 1)[: self.keep]]
        self.rows = comm

    def result(self, trace: Trace) -> list[dict[str, Any]]:
        if self.rows is None or len(self.rows) == 0:
            return []
        r = self.rows
        dur = r["t_end"] - r["t_start"]
        order = np.lexsort((r["rank_class"], r["t_start"], -dur))
        out: list[dict[str, Any]] = []
        seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        for i in order.tolist():
            row = r[i]
            key = (
                int(row["name"]),
                int(row["op"]),
                int(row["group"]),
                float(row["t_start"]),
                float(row["t_end"]),
            )
            hit = seen.get(key)
            if hit is not None:
                hit["classes"] += 1
                continue
            if len(out) >= self.top:
                continue
            d = float(row["t_end"] - row["t_start"])
            nbytes = float(row["nbytes"])
            entry = {
                "name": trace.name_of(int(row["name"])),
                "op": _lookup(trace.op_names, int(row["op"])),
                "group": _lookup(trace.group_names, int(row["group"])),
                "kind": _lookup(trace.kind_names, int(row["kind"])),
                "step": int(row["step"]),
                "first_class": trace.class_names[int(row["rank_class"])]
                if int(row["rank_class"]) < len(trace.class_names)
                else str(int(row["rank_class"])),
                "classes": 1,
                "t_start_s": float(row["t_start"]),
                "duration_s": d,
                "nbytes": nbytes,
                "algbw_Bps": nbytes / d if d > 0 else None,
            }
            seen[key] = entry
            out.append(entry)
        return out


def _lookup(names: list[str], i: int) -> str:
    return names[i] if 0 <= i < len(names) else str(i)


# ---------------------------------------------------------------------------------------------- power / heat


def _tw_mean(x: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(x * w) / np.sum(w)) if len(x) and np.sum(w) > 0 else float("nan")


def _swing(p: np.ndarray, time_s: np.ndarray) -> dict[str, float]:
    """Peak-to-trough, fastest ramp and grid-band energy share of one power series."""
    if len(p) < 2:
        return {"swing_w": 0.0, "max_ramp_w_per_s": 0.0}
    dt = float(np.median(np.diff(time_s)))
    try:
        from simcore.kernels.grid import power_swing

        ptt, ramp, band = power_swing(p, dt)
        return {"swing_w": float(ptt), "max_ramp_w_per_s": float(ramp), "band_energy_fraction": float(band)}
    except ImportError:  # pragma: no cover - grid kernels not present in a partial checkout
        return {"swing_w": float(np.ptp(p)), "max_ramp_w_per_s": float(np.max(np.abs(np.diff(p))) / dt)}


def power_stats(power: Series, multiplicity: np.ndarray) -> dict[str, Any]:
    """Average / peak / swing of the power series that exist (W), and energies (J)."""
    w = power.weights_s()
    out: dict[str, Any] = {"duration_s": float(np.sum(w)), "samples": len(power.time_s)}
    for name in ("it_w", "facility_w", "grid_w"):
        p = power.get(name)
        if p is None or p.ndim != 1:
            continue
        key = name[:-2]
        out[f"avg_{key}_w"] = _tw_mean(p, w)
        out[f"peak_{key}_w"] = float(np.max(p)) if len(p) else float("nan")
        out[f"min_{key}_w"] = float(np.min(p)) if len(p) else float("nan")
        out[f"energy_{key}_j"] = float(np.sum(p * w))
        out[f"{key}_swing"] = _swing(p, power.time_s)
    if "avg_it_w" in out and "avg_facility_w" in out and out["avg_it_w"] > 0:
        out["pue"] = out["avg_facility_w"] / out["avg_it_w"]
    gpu = power.get("gpu_w")
    if gpu is not None and gpu.ndim == 2 and gpu.shape[1] == len(multiplicity):
        out["avg_gpu_w_per_class"] = [_tw_mean(gpu[:, k], w) for k in range(gpu.shape[1])]
        out["peak_gpu_w"] = float(np.max(gpu)) if gpu.size else float("nan")
        out["energy_gpu_j"] = float(np.sum((gpu @ multiplicity.astype(np.float64)) * w))
    rack = power.get("rack_w")
    if rack is not None and rack.ndim == 2 and rack.shape[1]:
        out["rack_types"] = int(rack.shape[1])
        n = racks_per_type(power)
        if n is not None:
            out["racks"] = int(n.sum())
            out["avg_rack_w"] = _tw_mean((rack @ n) / n.sum(), w)
        else:
            out["avg_rack_w"] = _tw_mean(rack.mean(axis=1), w)
        out["peak_rack_w"] = float(np.max(rack))
        out["rack_swing_w"] = float(np.max(np.ptp(rack, axis=0))) if len(rack) else 0.0
    return out


def racks_per_type(power: Series) -> np.ndarray | None:
    """How many racks each rack type stands for (``rack_w`` is per rack of a type; ``it_w`` is all racks).

    Read from the ``racks_per_type`` attribute of ``rack_w`` when the writer stored it; otherwise solved
    from ``it_w = rack_w @ n`` (least squares, rounded) and accepted only if that reproduces ``it_w``.
    """
    rack, it = power.get("rack_w"), power.get("it_w")
    if rack is None or it is None or rack.ndim != 2 or rack.shape[1] == 0 or len(it) == 0:
        return None
    n = power.attrs.get("rack_w", {}).get("racks_per_type")
    if n is not None:
        n = np.asarray(n, dtype=np.float64).ravel()
        return n if len(n) == rack.shape[1] else None
    sol, *_ = np.linalg.lstsq(rack, it, rcond=None)
    n = np.round(sol)
    if np.any(n < 0) or not np.any(n > 0):
        return None
    err = np.max(np.abs(rack @ n - it)) / max(float(np.max(np.abs(it))), 1e-300)
    return n if err < 1e-6 else None


def energy_breakdown(
    power: Series, multiplicity: np.ndarray, summary: dict[str, Any] | None = None
) -> dict[str, float] | None:
    """Energy (J): GPUs, rest of IT, power-conversion losses, cooling, other facility overhead.

    The run's own energy bookkeeping wins where the summary has it (``gpu_energy_j``, ``it_energy_j``,
    ``facility_energy_j``, ``conversion_loss_energy_j``, ``cooling_energy_j``, ``overhead_energy_j``);
    the rest is integrated from the series: conversion losses are rack input minus rack IT load
    (``rack_w - rack_it_w``, per rack type times its rack count), cooling is ``cooling_w``, overhead is
    what the facility draws beyond IT and cooling. Without ``cooling_w`` the last two are one bucket.
    """
    summary = summary or {}
    w = power.weights_s()
    it = power.get("it_w")
    gpu = power.get("gpu_w")
    if it is None or gpu is None or gpu.ndim != 2 or gpu.shape[1] != len(multiplicity):
        return None

    def pick(key: str, fallback: Any) -> float | None:
        v = summary.get(key)
        if isinstance(v, (int, float)) and np.isfinite(v):
            return float(v)
        value = fallback() if callable(fallback) else fallback
        return None if value is None else float(value)

    gpu_j = pick("gpu_energy_j", lambda: np.sum((gpu @ multiplicity.astype(np.float64)) * w))
    it_j = pick("it_energy_j", lambda: np.sum(it * w))
    facility = power.get("facility_w")
    facility_j = pick("facility_energy_j", (lambda: np.sum(facility * w)) if facility is not None else None)

    def conversion() -> float | None:
        rack, rack_it, n = power.get("rack_w"), power.get("rack_it_w"), racks_per_type(power)
        if rack is None or rack_it is None or n is None or rack_it.shape != rack.shape:
            return None
        return float(np.sum(((rack - rack_it) @ n) * w))

    conv_j = pick("conversion_loss_energy_j", conversion)
    cooling = power.get("cooling_w")
    cooling_j = pick("cooling_energy_j", (lambda: np.sum(cooling * w)) if cooling is not None else None)
    out = {"gpu_j": max(gpu_j or 0.0, 0.0)}
    rest = (it_j or 0.0) - out["gpu_j"] - (conv_j or 0.0)
    out["other_it_j"] = max(rest, 0.0)
    if conv_j is not None:
        out["conversion_loss_j"] = max(conv_j, 0.0)
    if facility_j is not None:
        beyond_it = max(facility_j - (it_j or 0.0), 0.0)
        if cooling_j is not None:
            out["cooling_j"] = max(cooling_j, 0.0)
            out["overhead_j"] = max(pick("overhead_energy_j", beyond_it - cooling_j) or 0.0, 0.0)
        else:
            out["cooling_and_overhead_j"] = beyond_it
    return out


def thermal_stats(
    thermal: Series, multiplicity: np.ndarray, weights_s: np.ndarray | None = None
) -> dict[str, Any]:
    """Peak temperatures, lowest clock and how long GPUs ran throttled (``weights_s``: the sample widths
    when another group on the same time axis has them; the thermal group does not store its own)."""
    w = weights_s if weights_s is not None and len(weights_s) == len(thermal.time_s) else thermal.weights_s()
    out: dict[str, Any] = {"duration_s": float(np.sum(w))}
    tj = thermal.get("t_junction_c")
    if tj is not None and tj.size:
        out["max_t_junction_c"] = float(np.max(tj))
        out["max_t_junction_c_per_class"] = [float(x) for x in np.max(tj.reshape(len(tj), -1), axis=0)]
    clock = thermal.get("clock_factor")
    if clock is not None and clock.size:
        c2 = clock.reshape(len(clock), -1)
        out["min_clock_factor"] = float(np.min(c2))
        throttled = (c2 < THROTTLE_BELOW).astype(np.float64)
        share = thermal.get("throttled_share")  # a class spanning racks of different heat: its hot GPUs only
        if share is not None and share.shape == throttled.shape:
            throttled = share
        out["throttle_time_fraction"] = float(np.sum((throttled > 0).any(axis=1) * w) / np.sum(w))
        if c2.shape[1] == len(multiplicity) and multiplicity.sum() > 0:
            gw = (throttled @ multiplicity.astype(np.float64)) / float(multiplicity.sum())
            out["throttled_gpu_time_fraction"] = float(np.sum(gw * w) / np.sum(w))
    cool = thermal.get("coolant_out_c")
    if cool is not None and cool.size:
        out["max_coolant_out_c"] = float(np.max(cool))
    return out


# ---------------------------------------------------------------------------------------------- analyze


def analyze(trace_path: str | Path, *, top: int = 10, chunk_rows: int = 1 << 20) -> dict[str, Any]:
    """The full report of one trace as a JSON-ready dict (SI units: s, B, B/s, W, J, degC)."""
    with Trace(trace_path) as tr:
        acc = BreakdownAccumulator()
        tops = _TopCollectives(top, tr.n_classes)
        for block in tr.iter_events(fields=ANALYZE_FIELDS, chunk_rows=chunk_rows):
            acc.add(block)
            tops.add(block)
        if acc.classes:
            tr.ensure_classes(max(acc.classes) + 1)
        bounds = tr.step_bounds or [(0.0, acc.t_max)]
        classes = _class_report(tr, acc, bounds)
        summary = tr.summary() or {}
        report: dict[str, Any] = {
            "trace": str(trace_path),
            "format_version": tr.attrs.get("format_version"),
            "profile": tr.attrs.get("profile_name"),
            "workload": tr.attrs.get("workload_name"),
            "fidelity": tr.attrs.get("fidelity"),
            # a serving run is one window; its idle is the summary's idle_fraction (bubble_fraction is 0)
            "serving": isinstance(summary.get("workload"), dict)
            and summary["workload"].get("kind") == "inference",
            "gpus": tr.attrs.get("gpus"),
            "events": tr.n_events,
            "steps": len(bounds),
            "step_times_s": [hi - lo for lo, hi in bounds],
            "overall": _overall(classes, tr.multiplicity),
            "classes": classes,
            "slowest_collectives": tops.result(tr),
            "power": None,
            "thermal": None,
            "energy": None,
        }
        power = tr.series("power")
        if power is not None:
            report["power"] = power_stats(power, tr.multiplicity)
            report["energy"] = energy_breakdown(power, tr.multiplicity, summary)
            tps = summary.get("tokens_per_s")
            if summary.get("energy_per_token_j") is not None:
                report["power"]["energy_per_token_j"] = float(summary["energy_per_token_j"])
            elif tps and report["power"].get("avg_facility_w") is not None:
                report["power"]["energy_per_token_j"] = report["power"]["avg_facility_w"] / float(tps)
            # the summary's swing and ramp are of the facility power as demanded, before GPU power smoothing
            # (not stored in the trace), and of the grid draw
            for key in (
                "power_swing_w",
                "power_swing_mitigated_w",
                "max_ramp_w_per_s",
                "max_ramp_mitigated_w_per_s",
            ):
                if summary.get(key) is not None:
                    report["power"][f"summary_{key}"] = float(summary[key])
            # The run's own averages win, as its energies do (today the series carry the smoothing surplus
            # and their sample-width integrals are the run's, so both agree; older traces may differ).
            for key, name in (
                ("avg_it_power_w", "avg_it_w"),
                ("facility_power_w", "avg_facility_w"),
                ("pue", "pue"),
            ):
                if isinstance(summary.get(key), (int, float)) and name in report["power"]:
                    report["power"][name] = float(summary[key])
        thermal = tr.series("thermal")
        if thermal is not None:
            same_axis = power is not None and np.array_equal(power.time_s, thermal.time_s)
            report["thermal"] = thermal_stats(
                thermal, tr.multiplicity, power.weights_s() if same_axis and power is not None else None
            )
    return report


@dataclass(frozen=True)
class WindowFractions:
    """Shares of each step window for one class: arrays with one value per window."""

    compute: np.ndarray
    exposed_comm: np.ndarray
    exposed_by_group: dict[str, np.ndarray]
    idle: np.ndarray


class BreakdownAccumulator:
    """Per-class interval unions built block by block.

    ``analyze`` feeds it from the trace; a run can register it as an ``ActivityRecorder`` sink and get the
    summary's breakdown without keeping its events in memory (``step_breakdown`` returns exactly what
    :func:`simcore.analysis.step_breakdown` computes from the full table).
    """

    def __init__(self) -> None:
        self.classes: dict[int, _ClassAcc] = {}
        self.t_max = 0.0

    def add(self, block: np.ndarray) -> None:
        if len(block) == 0:
            return
        _accumulate(block, self.classes)
        self.t_max = max(self.t_max, float(np.max(block["t_end"])))

    __call__ = add

    def window_fractions(self, rank_class: int, bounds: list[tuple[float, float]]) -> WindowFractions:
        lo = np.array([b[0] for b in bounds], dtype=np.float64)
        hi = np.array([b[1] for b in bounds], dtype=np.float64)
        window = np.maximum(hi - lo, 1e-300)
        acc = self.classes.get(rank_class, _ClassAcc())
        comp_u = _union(acc.compute)
        comp_t = window_lengths(comp_u, lo, hi)
        exposed = window_lengths(_union([comp_u, *acc.comm]), lo, hi) - comp_t
        by_group = {g: np.zeros(len(bounds)) for g in REPORT_GROUPS}
        for gid, parts in sorted(acc.groups.items()):
            name = GROUPS[gid] if 0 <= gid < len(GROUPS) else f"group{gid}"
            by_group[name] = window_lengths(_union([comp_u, *parts]), lo, hi) - comp_t
        idle = np.maximum(window - comp_t - exposed, 0.0)
        return WindowFractions(
            comp_t / window, exposed / window, {g: v / window for g, v in by_group.items()}, idle / window
        )

    def step_breakdown(self, bounds: list[tuple[float, float]], weights: np.ndarray) -> Breakdown:
        """GPU-weighted average over classes and steps (``simcore.analysis.step_breakdown`` semantics)."""
        w = np.asarray(weights, dtype=np.float64)
        f = w / w.sum() if w.sum() > 0 else np.zeros_like(w)
        comp = exp = idle = 0.0
        groups: dict[str, float] = {}
        for c, fc in enumerate(f):
            wf = self.window_fractions(c, bounds)
            comp += fc * float(np.mean(wf.compute))
            exp += fc * float(np.mean(wf.exposed_comm))
            idle += fc * float(np.mean(wf.idle))
            acc = self.classes.get(c)
            for gid in sorted(acc.groups) if acc else ():
                name = GROUPS[gid] if 0 <= gid < len(GROUPS) else f"group{gid}"
                groups[name] = groups.get(name, 0.0) + fc * float(np.mean(wf.exposed_by_group[name]))
        return Breakdown(comp, exp, idle, groups)


def _class_report(
    tr: Trace, acc: BreakdownAccumulator, bounds: list[tuple[float, float]]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in range(tr.n_classes):
        wf = acc.window_fractions(c, bounds)
        per_step = [
            {
                "step": i,
                "t_start_s": float(bounds[i][0]),
                "t_end_s": float(bounds[i][1]),
                "compute": float(wf.compute[i]),
                "exposed_comm": float(wf.exposed_comm[i]),
                "exposed_by_group": {g: float(v[i]) for g, v in wf.exposed_by_group.items()},
                "idle": float(wf.idle[i]),
            }
            for i in range(len(bounds))
        ]
        out.append(
            {
                "index": c,
                "name": tr.class_names[c],
                "place": tr.class_places[c],
                "stage": int(tr.stage[c]) if c < len(tr.stage) else c,
                "multiplicity": int(tr.multiplicity[c]) if c < len(tr.multiplicity) else 1,
                "compute": float(np.mean(wf.compute)),
                "exposed_comm": float(np.mean(wf.exposed_comm)),
                "exposed_by_group": {g: float(np.mean(v)) for g, v in wf.exposed_by_group.items()},
                "idle": float(np.mean(wf.idle)),
                "per_step": per_step,
            }
        )
    return out


def _overall(classes: list[dict[str, Any]], multiplicity: np.ndarray) -> dict[str, Any]:
    """GPU-weighted average over classes (the same weighting as the run summary)."""
    if not classes:
        return {"compute": 0.0, "exposed_comm": 0.0, "idle": 0.0, "exposed_by_group": {}}
    w = np.array([c["multiplicity"] for c in classes], dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(classes), 1.0 / len(classes))
    groups = sorted({g for c in classes for g in c["exposed_by_group"]}, key=_group_order)
    return {
        "compute": float(sum(f * c["compute"] for f, c in zip(w, classes, strict=True))),
        "exposed_comm": float(sum(f * c["exposed_comm"] for f, c in zip(w, classes, strict=True))),
        "idle": float(sum(f * c["idle"] for f, c in zip(w, classes, strict=True))),
        "exposed_by_group": {
            g: float(sum(f * c["exposed_by_group"].get(g, 0.0) for f, c in zip(w, classes, strict=True)))
            for g in groups
        },
    }


def _group_order(g: str) -> tuple[int, str]:
    return (REPORT_GROUPS.index(g) if g in REPORT_GROUPS else len(REPORT_GROUPS), g)


# ---------------------------------------------------------------------------------------------- text


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:5.1f}%"


def _si(x: float | None, unit: str) -> str:
    if x is None or x != x:
        return "n/a"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    if unit == "s" and x != 0:
        return f"{x * 1e3:.3g} ms" if abs(x) >= 1e-3 else f"{x * 1e6:.3g} us"
    return f"{x:.3g} {unit}"


def format_report(report: dict[str, Any], max_classes: int = 32) -> str:
    """The human-readable report ``racksim analyze`` prints."""
    lines: list[str] = []
    st = report["step_times_s"]
    serving = bool(report.get("serving"))
    lines.append(
        f"trace {report['trace']}: {report.get('workload')} on {report.get('profile')}, "
        f"{plural(int(report['gpus']), 'GPU') if report.get('gpus') is not None else '? GPUs'}, "
        f"{plural(report['events'], 'event')}, "
        + ("a serving run" if serving else plural(report["steps"], "step"))
    )
    if st and serving:
        lines.append(f"serving run: {_si(float(np.sum(st)), 's')}")
    elif st:
        lines.append(f"step time: mean {_si(float(np.mean(st)), 's')}, max {_si(float(np.max(st)), 's')}")
    ov = report["overall"]
    groups = list(ov["exposed_by_group"])
    head = (
        f"{'class':<12} {'place':<26} {'GPUs':>6} {'compute':>8} {'exposed':>8} "
        + " ".join(f"{g.upper():>7}" for g in groups)
        + f" {'idle':>7}"
    )
    lines += [
        "",
        "time over the serving run (GPU-weighted; exposed = communication not under compute; "
        "idle = waiting for requests or the host)"
        if serving
        else "time per step window (GPU-weighted over steps; exposed = communication not under compute)",
        head,
    ]

    def row(name: str, place: str, gpus: Any, d: dict[str, Any]) -> str:
        return (
            f"{name:<12} {place:<26} {gpus!s:>6} {_pct(d['compute']):>8} {_pct(d['exposed_comm']):>8} "
            + " ".join(f"{_pct(d['exposed_by_group'].get(g, 0.0)):>7}" for g in groups)
            + f" {_pct(d['idle']):>7}"
        )

    classes = report["classes"]
    shown = (
        classes if len(classes) <= max_classes else classes[: max_classes // 2] + classes[-max_classes // 2 :]
    )
    for i, c in enumerate(shown):
        if len(classes) > max_classes and i == max_classes // 2:
            lines.append(f"... {len(classes) - max_classes} more classes ...")
        lines.append(row(c["name"][:12], c["place"][:26], c["multiplicity"], c))
    lines.append(row("all", "(GPU-weighted)", report.get("gpus") or "", ov))
    tops = report["slowest_collectives"]
    if tops:
        lines += ["", f"slowest communication ops (top {len(tops)})"]
        lines.append(
            f"{'duration':>10} {'op':<14} {'group':<5} {'bytes':>10} {'algbw':>12} {'step':>4}  "
            f"{'class (+more)':<16} name"
        )
        for t in tops:
            more = f" (+{t['classes'] - 1})" if t["classes"] > 1 else ""
            lines.append(
                f"{_si(t['duration_s'], 's'):>10} {t['op']:<14} {t['group']:<5} {_si(t['nbytes'], 'B'):>10} "
                f"{_si(t['algbw_Bps'], 'B/s'):>12} {t['step']:>4}  {t['first_class'] + more:<16} {t['name']}"
            )
    p = report.get("power")
    if p:
        lines += [
            "",
            "power (the trace's series: IT and facility as drawn, smoothing burn included; grid after smoothing "
            "and storage)",
        ]
        for key, label in (("it", "IT"), ("facility", "facility"), ("grid", "grid")):
            if f"avg_{key}_w" in p:
                sw = p.get(f"{key}_swing", {})
                lines.append(
                    f"  {label:<9} avg {_si(p[f'avg_{key}_w'], 'W'):>9}  peak {_si(p[f'peak_{key}_w'], 'W'):>9}  "
                    f"swing {_si(sw.get('swing_w'), 'W'):>9}  max ramp {_si(sw.get('max_ramp_w_per_s'), 'W/s')}"
                )
        demanded = p.get("summary_max_ramp_w_per_s")
        drawn = p.get("facility_swing", {}).get("max_ramp_w_per_s")
        if demanded is not None and drawn is not None and not math.isclose(demanded, drawn, rel_tol=5e-3):
            lines.append(
                f"  facility as demanded, before GPU power smoothing (the summary's max_ramp_w_per_s; not in the "
                f"trace): max ramp {_si(demanded, 'W/s')}"
            )
        if "pue" in p:
            lines.append(f"  PUE {p['pue']:.3f}")
        if "peak_rack_w" in p:
            lines.append(
                f"  rack      avg {_si(p['avg_rack_w'], 'W'):>9}  peak {_si(p['peak_rack_w'], 'W'):>9}"
            )
        if "peak_gpu_w" in p:
            lines.append(f"  GPU       peak {_si(p['peak_gpu_w'], 'W')}")
        if "energy_per_token_j" in p:
            lines.append(f"  energy per token {p['energy_per_token_j']:.4g} J (facility)")
    e = report.get("energy")
    if e:
        total = sum(e.values())
        lines.append(
            "  energy: "
            + ", ".join(
                f"{k[:-2].replace('_', ' ')} {_si(v, 'J')} ({_pct(v / total if total else 0)})"
                for k, v in e.items()
            )
        )
    t = report.get("thermal")
    if t:
        lines += ["", "thermal"]
        if "max_t_junction_c" in t:
            lines.append(f"  max junction temperature {t['max_t_junction_c']:.1f} degC")
        if "max_coolant_out_c" in t:
            lines.append(f"  max coolant return {t['max_coolant_out_c']:.1f} degC")
        if "min_clock_factor" in t:
            lines.append(
                f"  min clock factor {t['min_clock_factor']:.3f}; throttled {_pct(t['throttle_time_fraction'])} of the time"
                + (
                    f" ({_pct(t['throttled_gpu_time_fraction'])} of GPU-time)"
                    if "throttled_gpu_time_fraction" in t
                    else ""
                )
            )
    if not p and not t:
        lines += ["", "power / thermal: not in this trace"]
    return "\n".join(lines)


def run_analyze(
    trace_path: str | Path, json_path: str | Path | None = None, *, top: int = 10
) -> dict[str, Any]:
    """CLI body: analyze, print, and write the JSON atomically when asked."""
    report = analyze(trace_path, top=top)
    print(format_report(report))
    if json_path is not None:
        write_json(json_path, report)
    return report
