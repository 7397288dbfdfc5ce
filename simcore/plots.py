"""``racksim plot TRACE``: PNG figures of one trace — timeline, step breakdown, power, temperatures, energy.

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot, so no global figure state and no
display needed: the Agg canvas renders them) and returned, so tests can check titles and axis labels
before anything is saved. Plots that need power or thermal series are skipped when the trace has none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from simcore import interrupts
from simcore.activity import KIND_COMPUTE
from simcore.atomic import atomic_path, atomic_paths, discard_if_empty
from simcore.report import REPORT_GROUPS, analyze
from simcore.trace import Series, Trace
from simcore.wording import energy_unit, format_energy

COLORS = {
    "compute": "#4C72B0",
    "tp": "#DD8452",
    "dp": "#55A868",
    "pp": "#C44E52",
    "ep": "#8172B3",
    "cp": "#937860",
    "other": "#DA8BC3",
    "none": "#8C8C8C",
    "idle": "#E5E5E5",
}
MAX_LINES = 8  # per-class / per-rack lines drawn before switching to min / mean / max bands
DPI = 120


def _time_unit(span_s: float) -> tuple[float, str]:
    """Scale and label so the time axis reads in round numbers."""
    if span_s < 1e-3:
        return 1e6, "us"
    if span_s < 2.0:
        return 1e3, "ms"
    return 1.0, "s"


def _power_unit(peak_w: float) -> tuple[float, str]:
    if peak_w >= 2e6:
        return 1e-6, "MW"
    if peak_w >= 2e3:
        return 1e-3, "kW"
    return 1.0, "W"


def _pick(n: int, limit: int) -> list[int]:
    """Up to ``limit`` indices spread over 0..n-1, always with the first and last."""
    if n <= limit:
        return list(range(n))
    return sorted({round(float(x)) for x in np.linspace(0, n - 1, limit)})


def _subtitle(tr: Trace) -> str:
    return f"{tr.attrs.get('workload_name', '?')} on {tr.attrs.get('profile_name', '?')}, {tr.attrs.get('gpus', '?')} GPUs"


# ---------------------------------------------------------------------------------------------- timeline


def _duration_label(seconds: float) -> str:
    scale, unit = _time_unit(seconds)
    return f"{seconds * scale:.3g} {unit}"


def _timeline_events(
    tr: Trace, t_lo: float, t_hi: float, classes: list[int], fields: list[str], max_events: int
) -> tuple[np.ndarray, float | None]:
    """The ops of ``classes`` overlapping ``[t_lo, t_hi)``, at most ``max_events`` of them, and the time the
    window must end at for what was read to be all of it (None when nothing was left out). Rows are nearly
    in start order, so the cut is the earliest start among the rows left out of the last block read and the
    next one: every op starting before it was read."""
    blocks: list[np.ndarray] = []
    total, cut = 0, None
    rows = tr.iter_events(
        t_lo=t_lo, t_hi=t_hi, classes=classes, fields=fields, chunk_rows=max(1, min(1 << 20, max_events))
    )
    with contextlib.closing(rows):
        for block in rows:
            room = max_events - total
            if len(block) <= room:
                blocks.append(block)
                total += len(block)
                continue
            blocks.append(block[:room])
            left_out = [block[room:]]
            following = next(rows, None)
            if following is not None:
                left_out.append(following)
            cut = min(float(np.min(b["t_start"])) for b in left_out)
            break
    ev = np.concatenate(blocks) if blocks else np.zeros(0, dtype=[(f, "f8") for f in fields])
    if cut is not None:
        if cut <= t_lo:  # an op left out began before the window: end it where the ops read end
            cut = max(float(np.max(ev["t_end"])) if len(ev) else t_lo, np.nextafter(t_lo, np.inf))
        ev = ev[ev["t_start"] < cut]
    return ev, cut


def timeline_figure(tr: Trace, *, steps: int = 2, max_classes: int = 8, max_events: int = 300_000) -> Figure:
    """Gantt chart: one row per (stage, stream), bars coloured by compute or communication group."""
    bounds = tr.step_bounds
    if bounds:
        k = max(1, min(steps, len(bounds)))
        t_lo, t_hi = bounds[0][0], bounds[k - 1][1]
        span_label = f"step{'s' if k > 1 else ''} 0{f'-{k - 1}' if k > 1 else ''}"
    else:
        t_lo, t_hi, span_label = 0.0, np.inf, "all steps"
    classes = _pick(tr.n_classes, max_classes)
    fields = ["rank_class", "stream", "kind", "group", "t_start", "t_end"]
    ev, cut = _timeline_events(tr, t_lo, t_hi, classes, fields, max_events)
    if cut is not None:  # more ops than the figure draws: show the part of the window that is complete
        t_hi = cut
        span_label += (
            f", their first {_duration_label(cut - t_lo)} (a timeline draws at most {max_events:,} ops)"
        )
    if not np.isfinite(t_hi):
        t_hi = float(ev["t_end"].max()) if len(ev) else 1.0
    scale, unit = _time_unit(t_hi - t_lo)
    min_width = (t_hi - t_lo) * scale / 1500.0
    rows = sorted({(int(c), int(s)) for c, s in zip(ev["rank_class"], ev["stream"], strict=True)})
    row_of = {r: i for i, r in enumerate(rows)}
    height = max(3.0, 0.28 * len(rows) + 1.6)
    fig = Figure(figsize=(13, height), dpi=DPI)
    ax = fig.add_subplot()
    cat = np.where(ev["kind"] == KIND_COMPUTE, -1, ev["group"]).astype(int)
    used: list[str] = []
    row_idx = np.array(
        [row_of[(int(c), int(s))] for c, s in zip(ev["rank_class"], ev["stream"], strict=True)]
    )
    for code in sorted(set(cat.tolist())):
        label = "compute" if code < 0 else (tr.group_names[code] if code < len(tr.group_names) else "other")
        color = COLORS.get(label, COLORS["other"])
        m = cat == code
        starts = (np.maximum(ev["t_start"][m], t_lo) - t_lo) * scale
        widths = (np.minimum(ev["t_end"][m], t_hi) - np.maximum(ev["t_start"][m], t_lo)) * scale
        widths = np.maximum(widths, min_width)  # sub-pixel ops still show as a hairline
        for r in np.unique(row_idx[m]).tolist():
            sel = row_idx[m] == r
            ax.broken_barh(
                list(zip(starts[sel], widths[sel], strict=True)),
                (r - 0.4, 0.8),
                facecolors=color,
                linewidth=0,
            )
        used.append(label)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{tr.class_names[c]} · {tr.stream_name(s)}" for c, s in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, (t_hi - t_lo) * scale)
    ax.set_xlabel(f"time since step start ({unit})")
    ax.set_ylabel("stage · stream")
    shown = "" if len(classes) == tr.n_classes else f", {len(classes)} of {tr.n_classes} stages"
    ax.set_title(f"Pipeline timeline, {span_label}{shown} — {_subtitle(tr)}")
    order = [x for x in ("compute", *REPORT_GROUPS, "other", "none") if x in used]
    names = {"compute": "compute", "none": "communication (no group)"}
    ax.legend(
        handles=[
            Patch(color=COLORS.get(x, COLORS["other"]), label=names.get(x, f"{x.upper()} communication"))
            for x in order
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.6 / height - 0.02),
        fontsize=8,
        ncol=max(1, len(order)),
        frameon=False,
    )
    for lo, _hi in bounds[1:]:
        if t_lo < lo < t_hi:
            ax.axvline((lo - t_lo) * scale, color="black", linewidth=0.8, linestyle="--")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- breakdown


def breakdown_figure(report: dict[str, Any], max_classes: int = 48) -> Figure:
    """Stacked bars per stage: compute, exposed communication by group, idle — in seconds per step."""
    classes = report["classes"]
    picked = [classes[i] for i in _pick(len(classes), max_classes)]
    step_s = float(np.mean(report["step_times_s"])) if report["step_times_s"] else 1.0
    scale, unit = _time_unit(step_s)
    groups = [
        g
        for g in (*REPORT_GROUPS, "other", "none")
        if any(c["exposed_by_group"].get(g, 0) > 0 for c in classes)
    ]
    fig = Figure(figsize=(11, max(3.0, 0.32 * len(picked) + 1.8)), dpi=DPI)
    ax = fig.add_subplot()
    y = np.arange(len(picked))
    left = np.zeros(len(picked))
    parts = [("compute", "compute", [c["compute"] for c in picked])]
    parts += [
        (g, f"exposed {g.upper()}", [c["exposed_by_group"].get(g, 0.0) for c in picked]) for g in groups
    ]
    # exposed communication of two groups at once is counted in each group: rescale so bars add up
    for i, c in enumerate(picked):
        total_groups = sum(p[2][i] for p in parts[1:])
        if total_groups > 0 and total_groups > c["exposed_comm"] + 1e-12:
            f = c["exposed_comm"] / total_groups
            for p in parts[1:]:
                p[2][i] *= f
    parts.append(("idle", "idle / bubble", [c["idle"] for c in picked]))
    for key, label, frac in parts:
        width = np.array(frac) * step_s * scale
        ax.barh(y, width, left=left, color=COLORS.get(key, COLORS["other"]), label=label, height=0.7)
        left += width
    ax.set_yticks(y)
    ax.set_yticklabels([f"{c['name']} (x{c['multiplicity']})" for c in picked], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"time per step ({unit})")
    ax.set_ylabel("pipeline stage (GPUs)")
    ax.set_title(
        f"Step-time breakdown per stage — {report.get('workload')} on {report.get('profile')}, "
        f"mean step {step_s * scale:.3g} {unit}"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- power


def _lines(ax: Any, t: np.ndarray, data: np.ndarray, names: list[str], scale: float) -> None:
    """A line per column, or min / mean / max when there are too many columns to read."""
    if data.shape[1] <= MAX_LINES:
        for k in range(data.shape[1]):
            ax.plot(t, data[:, k] * scale, linewidth=0.9, label=names[k] if k < len(names) else str(k))
    else:
        ax.fill_between(t, data.min(axis=1) * scale, data.max(axis=1) * scale, alpha=0.3, label="min-max")
        ax.plot(t, data.mean(axis=1) * scale, linewidth=1.0, label=f"mean of {data.shape[1]}")
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.grid(alpha=0.3)


def power_figure(tr: Trace, power: Series) -> Figure | None:
    """GPU power per class, rack power, and IT / facility / grid power with the swing marked."""
    panels = [k for k in ("gpu_w", "rack_w") if (x := power.get(k)) is not None and x.ndim == 2]
    totals = [k for k in ("it_w", "facility_w", "grid_w") if (x := power.get(k)) is not None and x.ndim == 1]
    if not panels and not totals:
        return None
    n = len(panels) + (1 if totals else 0)
    fig = Figure(figsize=(12, 2.9 * n + 0.8), dpi=DPI)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    t = power.time_s
    i = 0
    if "gpu_w" in panels:
        ax = axes[i]
        _lines(ax, t, power.data["gpu_w"], tr.class_names, 1.0)
        ax.set_ylabel("power per GPU (W)")
        ax.set_title("GPU power per stage")
        i += 1
    if "rack_w" in panels:
        ax = axes[i]
        rack = power.data["rack_w"]
        s, u = _power_unit(float(np.max(rack)) if rack.size else 0.0)
        _lines(ax, t, rack, [f"rack type {r}" for r in range(rack.shape[1])], s)
        ax.set_ylabel(f"rack input power ({u})")
        ax.set_title("Power of one rack of each rack type")
        i += 1
    if totals:
        ax = axes[i]
        peak = max(float(np.max(power.data[k])) for k in totals)
        s, u = _power_unit(peak)
        labels = {"it_w": "IT", "facility_w": "facility", "grid_w": "grid"}
        for k in totals:
            ax.plot(t, power.data[k] * s, linewidth=1.0, label=labels[k])
        ref = power.data["it_w"] if "it_w" in totals else power.data[totals[0]]
        lo_i, hi_i = int(np.argmin(ref)), int(np.argmax(ref))
        swing = float(ref[hi_i] - ref[lo_i])
        ax.axhspan(ref[lo_i] * s, ref[hi_i] * s, color="grey", alpha=0.12)
        x_mark = t[hi_i]
        ax.annotate(
            "",
            xy=(x_mark, ref[hi_i] * s),
            xytext=(x_mark, ref[lo_i] * s),
            arrowprops={"arrowstyle": "<->", "color": "black"},
        )
        pct = 100 * swing / ref[hi_i] if ref[hi_i] > 0 else 0.0
        ax.text(
            0.01,
            0.95,
            f"{labels.get('it_w' if 'it_w' in totals else totals[0])} swing {swing * s:.3g} {u} ({pct:.0f}% of peak)",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
        ax.set_ylabel(f"power ({u})")
        ax.set_title("Cluster power: IT, facility (with cooling), grid")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"Power over time — {_subtitle(tr)}")
    fig.tight_layout()
    return fig


def thermal_figure(tr: Trace, thermal: Series) -> Figure | None:
    """Junction temperature and clock factor per stage, coolant return per rack."""
    keys = [
        k
        for k in ("t_junction_c", "coolant_out_c", "clock_factor")
        if (x := thermal.get(k)) is not None and x.ndim == 2
    ]
    if not keys:
        return None
    fig = Figure(figsize=(12, 2.8 * len(keys) + 0.8), dpi=DPI)
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    t = thermal.time_s
    spec = {
        "t_junction_c": ("junction temperature (°C)", "GPU junction temperature per stage", tr.class_names),
        "coolant_out_c": ("coolant outlet (°C)", "Coolant (or exhaust air) outlet per rack type", None),
        "clock_factor": (
            "clock factor f/f_max (1)",
            "Clock factor per stage (below 1 = throttled)",
            tr.class_names,
        ),
    }
    for ax, key in zip(axes, keys, strict=True):
        data = thermal.data[key]
        ylabel, title, names = spec[key]
        _lines(ax, t, data, names or [f"rack type {r}" for r in range(data.shape[1])], 1.0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if key == "clock_factor":
            ax.set_ylim(min(0.5, float(np.min(data)) - 0.05), 1.05)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"Temperatures and clocks — {_subtitle(tr)}")
    fig.tight_layout()
    return fig


def energy_figure(report: dict[str, Any]) -> Figure | None:
    """Where the energy went: GPUs, the rest of IT, conversion losses, cooling and facility overhead."""
    energy = report.get("energy")
    if not energy:
        return None
    labels = {
        "gpu_j": "GPUs",
        "other_it_j": "rest of IT",
        "conversion_loss_j": "conversion losses",
        "cooling_j": "cooling",
        "overhead_j": "other overhead",
        "cooling_and_overhead_j": "cooling + overhead",
    }
    keys = [k for k in labels if k in energy]
    values_j = np.array([energy[k] for k in keys], dtype=np.float64)
    total_j = float(values_j.sum())
    div, unit = energy_unit(float(values_j.max()) if len(values_j) else 0.0)  # the tallest bar reads 1 to 999
    values = values_j / div
    fig = Figure(figsize=(8, 4.5), dpi=DPI)
    ax = fig.add_subplot()
    colors = ["#4C72B0", "#55A868", "#C44E52", "#8172B3", "#937860", "#8172B3"]
    bars = ax.bar([labels[k] for k in keys], values, color=colors[: len(keys)])
    for bar, v, v_j in zip(bars, values, values_j, strict=True):
        pct = 100 * v_j / total_j if total_j > 0 else 0.0
        ax.annotate(
            f"{format_energy(float(v_j))}\n{pct:.1f}%",
            (bar.get_x() + bar.get_width() / 2, v),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylabel(f"energy ({unit})")
    ax.set_xlabel("consumer")
    duration = (report.get("power") or {}).get("duration_s")
    span = f" over {duration:.3g} s" if duration else ""
    ax.set_title(f"Energy breakdown{span} — {report.get('workload')} on {report.get('profile')}")
    ax.set_ylim(0, max(values.max() * 1.25, 1e-12) if len(values) else 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- all


def build_figures(
    trace_path: str | Path, *, steps: int = 2, report: dict[str, Any] | None = None
) -> dict[str, Figure]:
    """Every figure that applies to this trace, by file stem."""
    report = report if report is not None else analyze(trace_path, top=0)
    figs: dict[str, Figure] = {}
    with Trace(trace_path) as tr:
        figs["timeline"] = timeline_figure(tr, steps=steps)
        figs["breakdown"] = breakdown_figure(report)
        power = tr.series("power")
        if power is not None and (fig := power_figure(tr, power)) is not None:
            figs["power"] = fig
        thermal = tr.series("thermal")
        if thermal is not None and (fig := thermal_figure(tr, thermal)) is not None:
            figs["thermal"] = fig
    if (fig := energy_figure(report)) is not None:
        figs["energy"] = fig
    return figs


def save_figure(fig: Figure, path: Path) -> Path:
    """Render to PNG atomically (a reader never sees half an image)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


FIGURES = ("timeline", "breakdown", "power", "thermal", "energy")  # every PNG ``plot`` can write


def make_plots(
    trace_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    steps: int = 2,
    note: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write the PNGs (default: ``<trace dir>/plots/``) and return their paths. All or none: each is rendered
    to a temporary file and they are renamed into place together, so Ctrl-C keeps none of this plot's (an
    earlier plot's PNGs stay as they were) and the CLI's "no partial outputs were kept" holds.

    A figure this trace has no data for (``power.png``, ``thermal.png``, ``energy.png`` of a trace without
    series) that an earlier plot left in the directory is removed as the new ones land, and ``note`` says
    so: beside this trace's timeline it would read as this run's. Only the names in ``FIGURES`` are touched.
    """
    ctrl_c = interrupts.mark()
    trace_path = Path(trace_path)
    out = Path(out_dir) if out_dir is not None else trace_path.parent / "plots"
    fresh = not out.exists()
    try:
        figs = build_figures(trace_path, steps=steps)
        paths = [out / f"{name}.png" for name in figs]
        stale = [
            out / f"{name}.png" for name in FIGURES if name not in figs and (out / f"{name}.png").is_file()
        ]
        with atomic_paths(paths, remove=stale) as tmps:
            for fig, tmp in zip(figs.values(), tmps, strict=True):
                fig.savefig(tmp, format="png", dpi=DPI)
            interrupts.raise_if_requested(ctrl_c)  # a Ctrl-C swallowed while drawing still keeps none
    except BaseException:
        if fresh:
            discard_if_empty(out)
        raise
    if stale and note is not None:
        names = ", ".join(p.name for p in stale)
        note(f"note: removed {names} that an earlier plot left in {out}: this trace has no data for them")
    return paths
