"""Step-level metrics from the activity table: where each GPU's time went.

For every rank class and step window: compute busy time is the union of its compute intervals;
exposed communication is communication time not hidden under compute; the rest is idle (pipeline
bubble and waits). Fractions are averaged over classes weighted by how many GPUs each stands for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simcore.activity import GROUPS, KIND_COMPUTE


def merge_intervals(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals as sorted disjoint (start, end) arrays."""
    if len(starts) == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    run_end = np.maximum.accumulate(e)
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > run_end[:-1]
    idx = np.flatnonzero(new)
    return s[idx], np.append(run_end[idx[1:] - 1], run_end[-1])


def union_length(starts: np.ndarray, ends: np.ndarray, lo: float, hi: float) -> float:
    s, e = merge_intervals(np.clip(starts, lo, hi), np.clip(ends, lo, hi))
    return float(np.sum(e - s))


def _coverage(starts: np.ndarray, ends: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Length of the disjoint sorted intervals (starts, ends) that lies below each point x."""
    cum = np.concatenate(([0.0], np.cumsum(ends - starts)))
    idx = np.searchsorted(ends, x, side="right")  # intervals wholly before x
    partial = np.zeros_like(x)
    inside = idx < len(starts)
    partial[inside] = np.clip(x[inside] - starts[idx[inside]], 0.0, None)
    return cum[idx] + partial


def intersection_length(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Total overlap of two disjoint sorted interval sets (vectorised via coverage differences)."""
    (as_, ae), (bs, be) = a, b
    if len(as_) == 0 or len(bs) == 0:
        return 0.0
    return float(np.sum(_coverage(bs, be, ae) - _coverage(bs, be, as_)))


@dataclass(frozen=True)
class Breakdown:
    """Share of a step window per activity, for one class (or averaged)."""

    compute: float
    exposed_comm: float
    idle: float
    exposed_by_group: dict[str, float]


def class_breakdown(events: np.ndarray, rank_class: int, lo: float, hi: float) -> Breakdown:
    """Compute / exposed communication (by group) / idle fractions of [lo, hi] for one class."""
    window = hi - lo
    ev = events[(events["rank_class"] == rank_class) & (events["t_end"] > lo) & (events["t_start"] < hi)]
    comp = ev[ev["kind"] == KIND_COMPUTE]
    comm = ev[ev["kind"] != KIND_COMPUTE]
    comp_u = merge_intervals(np.clip(comp["t_start"], lo, hi), np.clip(comp["t_end"], lo, hi))
    comm_u = merge_intervals(np.clip(comm["t_start"], lo, hi), np.clip(comm["t_end"], lo, hi))
    compute_t = float(np.sum(comp_u[1] - comp_u[0]))
    comm_t = float(np.sum(comm_u[1] - comm_u[0]))
    exposed = comm_t - intersection_length(comp_u, comm_u)
    by_group: dict[str, float] = {}
    for gid in np.unique(comm["group"]):
        sub = comm[comm["group"] == gid]
        gu = merge_intervals(np.clip(sub["t_start"], lo, hi), np.clip(sub["t_end"], lo, hi))
        g_total = float(np.sum(gu[1] - gu[0]))
        by_group[GROUPS[int(gid)]] = (g_total - intersection_length(comp_u, gu)) / window
    idle = max(0.0, window - compute_t - exposed)
    return Breakdown(compute_t / window, exposed / window, idle / window, by_group)


def step_breakdown(
    events: np.ndarray, weights: np.ndarray, step_bounds: list[tuple[float, float]]
) -> Breakdown:
    """Multiplicity-weighted average breakdown over classes and steps."""
    total_w = float(np.sum(weights))
    comp = exp = idle = 0.0
    groups: dict[str, float] = {}
    n = 0
    for lo, hi in step_bounds:
        for c, w in enumerate(weights):
            b = class_breakdown(events, c, lo, hi)
            f = w / total_w
            comp += f * b.compute
            exp += f * b.exposed_comm
            idle += f * b.idle
            for g, v in b.exposed_by_group.items():
                groups[g] = groups.get(g, 0.0) + f * v
        n += 1
    n = max(n, 1)
    return Breakdown(comp / n, exp / n, idle / n, {g: v / n for g, v in groups.items()})
