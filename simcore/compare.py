"""``racksim compare``: the same workload on several rack generations, side by side (the co-design table).

Each profile is one ordinary run (``simcore.runner.run``) into ``OUT/<profile>/``; the table normalises
per GPU and per rack and sizes a fleet for a target throughput:

    racks_needed = ceil(target_tokens_per_s / (tokens_per_s / racks_used))
    MW_needed    = racks_needed * (full_rack_it_power_w + fabric_power_per_rack_w) * pue / 1e6

where ``racks_used = gpus / gpus_per_rack`` of that run and ``full_rack_it_power_w`` (from the run's
summary) is one rack whose every GPU draws the job's mean GPU power, plus the rack's static load and
conversion loss; ``fabric_power_per_rack_w = fabric_power_w / gpus * gpus_per_rack`` is a rack's share of
the scale-out switches and their transceivers. The run itself powers whole racks (idle GPUs included), so
a job smaller than a rack would otherwise be charged a whole rack's idle draw. This assumes the throughput and power per GPU of the
run hold at fleet scale (data-parallel weak scaling, racks filled). A workload with a ``job:`` section is
sized on what its job delivers through failures, checkpoints and restarts, ``tokens_per_s * goodput``
(the simulated job's goodput; a larger job has more nodes to fail), and the table adds the job's goodput,
wall time, failures, lost work and energy per token (its whole wall time's facility energy over its useful
tokens). A workload with ``stragglers`` keeps their slowdown at fleet scale: in one synchronous job a
single straggler holds back every replica, so the run's per-GPU throughput holds however many the fleet
has (the assumption line says so). The default target is
``max(1e7, 10 ** ceil(log10(best tokens/s of the runs)))`` tokens/s, a round fleet-size question the
best profile cannot already answer with the simulated racks.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from simcore import interrupts
from simcore.atomic import discard_if_empty, output_dir, write_json
from simcore.errors import Interrupted, RacksimError

DEFAULT_MIN_TARGET = 1e7
TARGET_FORMULA = "max(1e7, 10**ceil(log10(best tokens_per_s)))"
RACKS_FORMULA = "racks_needed = ceil(target / (tokens_per_s / racks_used)); racks_used = gpus / gpus_per_rack"
# a workload with a job: section is sized on what the job delivers through its failures and checkpoints
RACKS_FORMULA_JOB = (
    "racks_needed = ceil(target / (tokens_per_s * goodput / racks_used)); racks_used = gpus / gpus_per_rack; "
    "goodput from the job: section's replay (failures, checkpoints, restarts)"
)
JOB_ASSUMPTION = "; goodput is the simulated job's (a larger job has more nodes to fail, so lower goodput)"
# A workload with stragglers: the run's per-GPU throughput already carries their slowdown, and it holds for
# the fleet under the weak-scaling assumption, however many stragglers the fleet has (docs/trace-format.md).
STRAGGLER_ASSUMPTION = (
    "; the workload's stragglers slow every job-sized block of the fleet as they slow the run: in one "
    "synchronous data-parallel job every replica waits for the slowest GPU at the gradient reduction, so "
    "one straggler in the whole fleet costs as much as one per block (a fleet of separate jobs, only one of "
    "them with the stragglers, would need fewer racks)"
)
MW_FORMULA = "MW_needed = racks_needed * (full_rack_it_power_w + fabric_power_per_rack_w) * pue / 1e6"

# (key, label, unit, scale, format) of the table rows, in order
ROWS = (
    ("step_time_s", "step time", "s", 1.0, "{:.4g}"),
    ("tokens_per_s", "tokens/s", "", 1.0, "{:.4g}"),
    ("tokens_per_s_per_gpu", "tokens/s per GPU", "", 1.0, "{:.4g}"),
    ("tokens_per_s_per_rack", "tokens/s per rack", "", 1.0, "{:.4g}"),
    ("mfu", "MFU", "%", 100.0, "{:.1f}"),
    ("gpus", "GPUs simulated", "", 1.0, "{:.0f}"),
    ("racks_used", "racks used", "", 1.0, "{:.3g}"),
    ("racks_needed", "racks for target", "", 1.0, "{:.0f}"),
    ("mw_needed", "facility power for target", "MW", 1.0, "{:.4g}"),
    ("energy_per_token_j", "energy per token", "J", 1.0, "{:.4g}"),
    ("rack_kw", "rack IT power (avg, full rack)", "kW", 1.0, "{:.4g}"),
    ("pue", "PUE", "", 1.0, "{:.3f}"),
    # MW like the target's facility power, but the simulated job's swing, not the fleet's
    ("power_swing_w", "facility power swing (run)", "MW", 1e-6, "{:.4g}"),
    ("max_junction_temp_c", "max junction temperature", "degC", 1.0, "{:.1f}"),
)
# rows of a workload with a job: section, shown after "tokens/s per rack"
JOB_ROWS = (
    ("goodput", "job goodput", "%", 100.0, "{:.1f}"),
    ("goodput_tokens_per_s", "tokens/s x goodput", "", 1.0, "{:.4g}"),
    ("job_days", "job wall time", "days", 1.0, "{:.4g}"),
    ("job_failures", "job failures", "", 1.0, "{:.0f}"),
    ("job_lost_work_s", "work lost to failures", "h", 1 / 3600, "{:.3g}"),
    ("job_energy_per_token_j", "job energy per token", "J", 1.0, "{:.4g}"),
)
# throttle_cause (summary) -> its short name in the table's throttle line
THROTTLE_SHORT = {"thermal": "heat", "rack power limit": "rack", "power cap": "cap", "straggler": "slow"}
THROTTLE_LEGEND = (
    "throttled: share of GPU-time below full clock and what held it there (heat = junction past "
    "accelerator.slowdown_temp, rack = rack.power_limit, cap = accelerator.power_cap, slow = the workload's stragglers)"
)


@dataclass
class CompareOptions:
    """What ``racksim compare`` was asked for."""

    profiles: list[str]
    workload: str | None
    out: Path | None = None
    racks: int | None = None
    steps: int | None = None
    seed: int = 0
    sets: list[str] | None = None
    target_tokens_per_s: float | None = None
    write_trace: bool = True
    progress: Callable[[str], None] | None = None


def _label(profile: str, used: set[str]) -> str:
    base = Path(profile).name
    for suffix in (".yaml", ".yml"):
        base = base.removesuffix(suffix)
    label, k = base, 2
    while label in used:
        label, k = f"{base}-{k}", k + 1
    used.add(label)
    return label


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


def _swing_from_trace(trace: Path) -> float | None:
    """Facility power peak-to-trough from the trace's power series, when the summary has no swing."""
    from simcore.report import power_stats
    from simcore.trace import Trace

    if not trace.is_file():
        return None
    try:
        with Trace(trace) as tr:
            power = tr.series("power")
            if power is None:
                return None
            stats = power_stats(power, tr.multiplicity)
    except RacksimError:
        return None
    return _num(stats.get("facility_swing", {}).get("swing_w"))


def row_metrics(summary: dict[str, Any], out_dir: Path | None) -> dict[str, Any]:
    """The per-profile numbers of the table (None where the run did not model it)."""
    gpus = _num(summary.get("gpus"))
    per_rack = _num((summary.get("profile") or {}).get("gpus_per_rack"))
    racks_used = gpus / per_rack if gpus and per_rack else None
    tps = _num(summary.get("tokens_per_s"))
    it_w = _num(summary.get("avg_it_power_w"))
    facility_w = _num(summary.get("facility_power_w"))
    pue = _num(summary.get("pue"))
    full_rack_w = _num(summary.get("full_rack_it_power_w"))
    if full_rack_w is None and it_w is not None and gpus and per_rack:  # a summary from before the key
        full_rack_w = it_w / math.ceil(gpus / per_rack)
    fabric_w = _num(summary.get("fabric_power_w")) or 0.0  # 0 in a summary from before the key
    fabric_per_rack_w = fabric_w / gpus * per_rack if gpus and per_rack else 0.0
    goodput = _num(summary.get("goodput"))  # a workload with a job: section
    swing = _num(summary.get("power_swing_w"))
    if swing is None and out_dir is not None:
        swing = _swing_from_trace(Path(out_dir) / "trace.h5")
    return {
        "step_time_s": _num(summary.get("step_time_s")),
        "tokens_per_s": tps,
        "tokens_per_s_per_gpu": _num(summary.get("tokens_per_s_per_gpu")),
        "tokens_per_s_per_rack": tps / racks_used if tps and racks_used else None,
        "mfu": _num(summary.get("mfu")),
        "gpus": gpus,
        "racks_used": racks_used,
        "energy_per_token_j": _num(summary.get("energy_per_token_j")),
        "rack_kw": full_rack_w / 1e3 if full_rack_w is not None else None,
        "full_rack_it_power_w": full_rack_w,
        "fabric_power_per_rack_w": fabric_per_rack_w,
        "avg_it_power_w": it_w,
        "facility_power_w": facility_w,
        "pue": pue,
        "power_swing_w": swing,
        "goodput": goodput,
        "goodput_tokens_per_s": tps * goodput if tps is not None and goodput is not None else None,
        "job_days": _num(summary.get("job_days")),
        "job_failures": _num(summary.get("job_failures")),
        "job_lost_work_s": _num(summary.get("job_lost_work_s")),
        "job_energy_per_token_j": _num(summary.get("job_energy_per_token_j")),
        "max_junction_temp_c": _num(summary.get("max_junction_temp_c")),
        "throttle_time_fraction": _num(summary.get("throttle_time_fraction")),
        "throttle_cause": summary.get("throttle_cause"),
    }


def default_target(rows: list[dict[str, Any]]) -> float:
    """``max(1e7, next power of ten above the best throughput)`` tokens/s."""
    best = max((r["metrics"]["tokens_per_s"] or 0.0 for r in rows if r.get("metrics")), default=0.0)
    return max(DEFAULT_MIN_TARGET, 10.0 ** math.ceil(math.log10(best))) if best > 0 else DEFAULT_MIN_TARGET


def size_fleet(metrics: dict[str, Any], target: float) -> None:
    """Racks and facility MW for ``target`` tokens/s (see the module docstring for the formulas); a job's
    racks deliver their throughput times its goodput."""
    per_rack = metrics.get("tokens_per_s_per_rack")
    if per_rack and metrics.get("goodput") is not None:
        per_rack *= metrics["goodput"]
    metrics["racks_needed"] = math.ceil(target / per_rack) if per_rack else None
    rack_w, pue = metrics.get("full_rack_it_power_w"), metrics.get("pue")
    fabric_w = metrics.get("fabric_power_per_rack_w") or 0.0
    metrics["mw_needed"] = (
        metrics["racks_needed"] * (rack_w + fabric_w) * pue / 1e6
        if metrics["racks_needed"] and rack_w is not None and pue is not None
        else None
    )


def _interrupted(
    out: Path, done: list[dict[str, Any]], total: int, write_trace: bool, since: int
) -> Interrupted:
    """What Ctrl-C (or a SIGTERM counted after ``mark()`` returned ``since``) left behind: the finished
    profiles' run directories stay complete, the table does not."""
    ran = [r for r in done if r.get("metrics") is not None]
    files = "summary.json and trace.h5" if write_trace else "summary.json"
    if ran:
        kept = f"complete runs kept: {', '.join(r['out_dir'] for r in ran)} ({files} each)"
    else:
        kept = "no profile's run finished"
    msg = f"compare {interrupts.reason(since)}; {kept}"
    if len(done) < total:
        msg += f"; {total - len(done)} of {total} profile(s) did not run or finish"
    missing = [name for name in ("compare.json", "compare.png") if not (out / name).is_file()]
    if missing:
        msg += f"; {' and '.join(missing)} {'was' if len(missing) == 1 else 'were'} not written"
    return Interrupted(msg, interrupts.exit_code(since))


def run_compare(opts: CompareOptions) -> dict[str, Any]:
    """Run every profile, fill the table, write compare.json and compare.png; returns the table.

    Ctrl-C raises ``Interrupted`` naming the run directories that are complete (every run is atomic: the
    one that was stopped leaves no output) and saying that the table was not written.
    """
    from simcore.profile import load_profile
    from simcore.runner import split_sets

    if len(opts.profiles) < 1:
        raise RacksimError("--profiles: give at least one hardware profile")
    profile_sets, _ = split_sets(list(opts.sets or []))
    # A missing or malformed profile is a typo: stop before any run, as a sweep file does.
    profiles = [(profile, load_profile(profile, profile_sets)) for profile in opts.profiles]
    _check_workload(opts, profiles)
    ctrl_c = interrupts.mark()
    with output_dir(opts.out, "compare-") as out:  # a compare that runs nothing leaves no empty folder
        rows: list[dict[str, Any]] = []
        running: list[Path] = []  # the run directory of the profile in progress
        try:
            return _run_all(opts, out, rows, running)
        except BaseException as exc:
            # a Ctrl-C can also surface wrapped (numba's SystemError) after the counting handler saw it
            if not isinstance(exc, KeyboardInterrupt) and (
                isinstance(exc, RacksimError) or not interrupts.requested_since(ctrl_c)
            ):
                raise
            if running:
                discard_if_empty(running[0])  # the stopped run wrote nothing; do not leave its folder
            raise _interrupted(out, rows, len(opts.profiles), opts.write_trace, ctrl_c) from exc


def _check_workload(opts: CompareOptions, profiles: list[tuple[str, Any]]) -> None:
    """A workload that cannot be read (no such file or preset, bad YAML, a --set that does not parse) is one
    mistake: raise it before any run, as for a profile, not once per profile and again at the end. One that
    every profile rejects with the same error (a misspelt field) is raised once too, as the compare's error.
    Errors that differ between profiles (the model does not fit one generation's HBM) stay results in the
    table."""
    from simcore.runner import (
        DEFAULT_MODEL,
        RunOptions,
        build_inference_spec,
        build_training_spec,
        is_inference,
        split_sets,
    )
    from workloads.spec import load_workload

    sets = list(opts.sets or [])
    _, workload_sets = split_sets(sets)
    load_workload(DEFAULT_MODEL if opts.workload is None else opts.workload, workload_sets)
    first: RacksimError | None = None
    for name, profile in profiles:
        run_opts = RunOptions(profile=name, workload=opts.workload, racks=opts.racks, steps=opts.steps,
                              seed=opts.seed, sets=sets, write_trace=False)  # fmt: skip
        try:
            build = build_inference_spec if is_inference(run_opts, workload_sets) else build_training_spec
            build(run_opts, profile, workload_sets)
        except RacksimError as exc:
            if first is None:
                first = exc
            elif str(exc) != str(first):
                return
        else:
            return
    if first is not None:
        raise RacksimError(f"compare: no profile could run the workload: {first}") from first


def _run_all(
    opts: CompareOptions, out: Path, rows: list[dict[str, Any]], running: list[Path]
) -> dict[str, Any]:
    """The body of ``run_compare``: ``rows`` grows as profiles finish and ``running`` holds the run directory
    in progress, so an interrupt can say what is complete."""
    from simcore.runner import RunOptions, run

    say = opts.progress or (lambda _msg: None)
    used: set[str] = set()
    for i, profile in enumerate(opts.profiles, 1):
        label = _label(profile, used)
        run_dir = out / label
        say(f"[{i}/{len(opts.profiles)}] {label}: running {opts.workload or 'the default workload'}")
        row: dict[str, Any] = {"label": label, "profile": profile, "out_dir": str(run_dir)}
        running[:] = [run_dir]
        try:
            result = run(
                RunOptions(
                    profile=profile,
                    workload=opts.workload,
                    out=run_dir,
                    racks=opts.racks,
                    steps=opts.steps,
                    seed=opts.seed,
                    sets=list(opts.sets or []),
                    write_trace=opts.write_trace,
                )
            )
        except RacksimError as exc:  # e.g. the model does not fit this generation's HBM: say so in the table
            row["error"] = str(exc)
            row["metrics"] = None
            same = next((r["label"] for r in rows if r.get("error") == row["error"]), None)
            say(f"[{i}/{len(opts.profiles)}] {label}: {f'the same error as {same}' if same else exc}")
            rows.append(row)
            running.clear()
            continue
        row["metrics"] = row_metrics(result.summary, run_dir if opts.write_trace else None)
        row["workload"] = result.summary.get("workload")
        row["hardware"] = result.summary.get("profile")
        rows.append(row)
        running.clear()
    if all(r["metrics"] is None for r in rows):
        errors = {r["error"] for r in rows}
        raise RacksimError(
            "compare: no profile could run the workload: "
            + (
                rows[0]["error"]
                if len(errors) == 1
                else "; ".join(f"{r['label']}: {r['error']}" for r in rows)
            )
        )
    target = opts.target_tokens_per_s or default_target(rows)
    job = _has_job(rows)
    stragglers = _has_stragglers(opts)
    for r in rows:
        if r["metrics"] is not None:
            size_fleet(r["metrics"], target)
    table = {
        "workload": opts.workload,
        "target_tokens_per_s": target,
        "target_formula": "given on the command line" if opts.target_tokens_per_s else TARGET_FORMULA,
        "racks_formula": RACKS_FORMULA_JOB if job else RACKS_FORMULA,
        "mw_formula": MW_FORMULA,
        "assumption": (
            "throughput and power per GPU of the simulated run hold at fleet scale, racks filled "
            "(data-parallel weak scaling)"
            + (JOB_ASSUMPTION if job else "")
            + (STRAGGLER_ASSUMPTION if stragglers else "")
        ),
        "profiles": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", table)
    from simcore.plots import save_figure

    save_figure(compare_figure(table), out / "compare.png")
    table["outputs"] = [str(out / "compare.json"), str(out / "compare.png")]
    return table


def _has_stragglers(opts: CompareOptions) -> bool:
    """Whether the workload (with its --set options) lists stragglers: the fleet sizing then says how it
    scales them."""
    from simcore.runner import DEFAULT_MODEL, split_sets
    from workloads.spec import apply_workload_overrides, load_workload

    _, workload_sets = split_sets(list(opts.sets or []))
    raw = load_workload(DEFAULT_MODEL if opts.workload is None else opts.workload)[0]
    return bool(apply_workload_overrides(raw, workload_sets).get("stragglers"))


def _has_job(rows: list[dict[str, Any]]) -> bool:
    """Whether the workload had a job: section (its runs report goodput)."""
    return any(r.get("metrics") and r["metrics"].get("goodput") is not None for r in rows)


def _fmt(value: Any, scale: float, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value * scale)


def _throttle_cells(rows: list[dict[str, Any]]) -> list[str] | None:
    """The throttle line's cells (share of GPU-time and its main cause), or None when no profile throttled:
    a slower generation that is only hot or power-limited should say so next to its step time."""
    metrics = [r.get("metrics") for r in rows]
    if not any(m and (m.get("throttle_time_fraction") or 0.0) > 0.0 for m in metrics):
        return None
    cells = []
    for m in metrics:
        share = None if m is None else m.get("throttle_time_fraction")
        if m is None:
            cells.append("error")
        elif share is None:
            cells.append("n/a")
        elif share <= 0.0:
            cells.append("0")
        else:
            cause = THROTTLE_SHORT.get(m.get("throttle_cause") or "", "?")
            cells.append(f"{100 * share:.3g} {cause}")
    return cells


def format_table(table: dict[str, Any]) -> str:
    """Profiles as columns, metrics as rows (easy to read for a handful of generations)."""
    rows = table["profiles"]
    labels = [r["label"] for r in rows]
    width = max(10, *(len(x) for x in labels))
    shown = list(ROWS)
    if _has_job(rows):
        at = next(i for i, row in enumerate(shown) if row[0] == "tokens_per_s_per_rack") + 1
        shown[at:at] = JOB_ROWS
    head_w = max(len(f"{label} ({unit})") if unit else len(label) for _k, label, unit, _s, _f in shown) + 2
    lines = [f"{'':<{head_w}}" + "".join(f"{x:>{width + 2}}" for x in labels)]
    for key, label, unit, scale, fmt in shown:
        name = f"{label} ({unit})" if unit else label
        cells = []
        for r in rows:
            m = r.get("metrics")
            cells.append("error" if m is None else _fmt(m.get(key), scale, fmt))
        lines.append(f"{name:<{head_w}}" + "".join(f"{c:>{width + 2}}" for c in cells))
    throttle = _throttle_cells(rows)
    if throttle is not None:
        lines.append(f"{'throttled (%, cause)':<{head_w}}" + "".join(f"{c:>{width + 2}}" for c in throttle))
    lines.append("")
    lines.append(f"target: {table['target_tokens_per_s']:.4g} tokens/s ({table['target_formula']})")
    lines.append(f"  {table['racks_formula']}")
    lines.append(f"  {table['mw_formula']}")
    lines.append(f"  assumes {table['assumption']}")
    if throttle is not None:
        lines.append(THROTTLE_LEGEND)
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['label']}: {r['error']}")
    return "\n".join(lines)


def compare_figure(table: dict[str, Any]) -> Figure:
    """Bar charts of the table's main rows, one panel per metric ("n/a" where not modelled)."""
    panels = (
        ("step_time_s", "step time (s)", 1.0),
        ("tokens_per_s_per_gpu", "tokens/s per GPU", 1.0),
        ("mfu", "MFU (%)", 100.0),
        ("racks_needed", "racks for target", 1.0),
        ("mw_needed", "facility MW for target", 1.0),
        ("energy_per_token_j", "energy per token (J)", 1.0),
        ("rack_kw", "rack IT power (kW)", 1.0),
        ("pue", "PUE", 1.0),
        ("power_swing_w", "facility power swing (MW)", 1e-6),
    )
    rows = table["profiles"]
    labels = [r["label"] for r in rows]
    fig = Figure(figsize=(13, 9), dpi=120)
    axes = fig.subplots(3, 3).ravel()
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    for ax, (key, title, scale) in zip(axes, panels, strict=True):
        vals = [None if r.get("metrics") is None else r["metrics"].get(key) for r in rows]
        heights = [0.0 if v is None else v * scale for v in vals]
        bars = ax.bar(labels, heights, color=[colors[i % len(colors)] for i in range(len(labels))])
        top = max(heights) if heights and max(heights) > 0 else 1.0
        for bar, v, h in zip(bars, vals, heights, strict=True):
            text = "n/a" if v is None else f"{h:.3g}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, h), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, top * 1.2)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(title, fontsize=8)
        ax.set_xlabel("profile", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"Generation comparison — {table.get('workload') or 'default workload'}; fleet sized for "
        f"{table['target_tokens_per_s']:.3g} tokens/s"
    )
    fig.tight_layout()
    return fig


def main_compare(opts: CompareOptions) -> dict[str, Any]:
    """CLI body: run, print the table and where the outputs went."""
    if opts.progress is None:
        opts.progress = lambda msg: print(f"racksim: {msg}", file=sys.stderr)
    table = run_compare(opts)
    print(format_table(table))
    print(f"\nwrote {', '.join(table['outputs'])}")
    return table


__all__ = [
    "CompareOptions",
    "compare_figure",
    "default_target",
    "format_table",
    "main_compare",
    "row_metrics",
    "run_compare",
    "size_fleet",
]
