"""One simulation run: profile + workload -> cluster -> engine -> activity -> power -> summary + trace.

This is the only module that joins ``simcore`` and ``workloads``; it knows the order of things, not
the physics of any of them.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from simcore import interrupts
from simcore.activity import ActivityRecorder
from simcore.atomic import discard_if_empty, new_run_dir, write_json
from simcore.cluster import Cluster
from simcore.contention import FabricDriver
from simcore.engine import Machine
from simcore.errors import ConfigError
from simcore.power_model import (
    SERIES_BUDGET_BYTES,
    PowerController,
    PowerResult,
    PowerSettings,
    settle_thermal_start,
)
from simcore.profile import Profile, blaming_overrides, load_profile, profile_summary
from simcore.reliability import DAY_S, MAX_EVENTS, JobPlan, day_mean_step_s, min_replay_events, replay_job
from simcore.report import BreakdownAccumulator
from simcore.trace import TraceWriter
from simcore.wording import format_duration, format_energy, format_power, plural
from workloads.inference import INFERENCE_KEYS
from workloads.spec import WORKLOAD_KEYS

DEFAULT_MODEL = "llama3-70b"
SUMMARY_KEYS = (
    "step_time_s",
    "tokens_per_s",
    "tokens_per_s_per_gpu",
    "model_tflops_per_gpu",
    "mfu",
    "gpus",
    "exposed_comm_fraction",
    "bubble_fraction",
    "peak_hbm_bytes",
    "avg_it_power_w",
    "peak_it_power_w",
    "facility_power_w",
    "pue",
    "energy_per_token_j",
)
# --set keys that go to the workload spec (training and serving fields); the rest go to the profile.
WORKLOAD_SET_KEYS = tuple(dict.fromkeys((*WORKLOAD_KEYS, *INFERENCE_KEYS)))


@dataclass
class RunOptions:
    """Everything a run needs; the CLI fills it from flags."""

    profile: str = "gen2.yaml"
    workload: str | None = None
    out: Path | None = None
    racks: int | None = None
    steps: int | None = None
    seed: int = 0
    sets: list[str] = field(default_factory=list)
    fidelity: str = "representative"
    contention: str = "analytic"
    keep_events: bool = False
    write_trace: bool = True
    # without a trace and without ``out``, still write summary.json to a new runs/<timestamp> (the CLI);
    # library callers (validate, sweeps, benchmarks) leave it off and write nothing
    write_summary: bool = False
    progress: Callable[[str], None] | None = None


@dataclass
class RunResult:
    summary: dict[str, Any]
    out_dir: Path | None
    events: np.ndarray | None  # the activity table, only with RunOptions.keep_events (memory grows with it)
    wall_s: float
    power_wall_s: float = 0.0  # of wall_s, the power/thermal/facility model's share


def split_sets(sets: list[str]) -> tuple[list[str], list[str]]:
    """Route ``--set`` options to the profile or the workload by their first key."""
    sections = [f.name for f in fields(Profile) if not f.name.startswith("source_")]
    profile_sets, workload_sets = [], []
    for option in sets:
        key = option.split("=", 1)[0].strip().split(".")[0]
        if key not in WORKLOAD_SET_KEYS and key not in sections and "=" in option:
            close = difflib.get_close_matches(key, [*sections, *WORKLOAD_SET_KEYS], n=1)
            raise ConfigError(
                f"unknown field {key!r}",
                path="--set",
                value=option,
                expected=f"a profile section ({', '.join(sections)}) or a workload field "
                f"({', '.join(WORKLOAD_SET_KEYS)})",
                hint=f"did you mean {close[0]!r}?" if close else None,
            )
        (workload_sets if key in WORKLOAD_SET_KEYS else profile_sets).append(option)
    return profile_sets, workload_sets


def build_training_spec(opts: RunOptions, profile: Profile, workload_sets: list[str]) -> tuple[Any, int]:
    """The training spec and how many racks the run uses (an error in a field ``--set`` wrote names it)."""
    with blaming_overrides(workload_sets):
        return _training_spec(opts, profile, workload_sets)


def _set_keys(workload_sets: list[str]) -> set[str]:
    """The field paths a list of ``--set KEY=VALUE`` options writes."""
    return {option.split("=", 1)[0].strip() for option in workload_sets}


def _is_count(value: Any) -> bool:
    """A ``--set`` value usable as a parallel size (an int or a whole float such as 8.0, never a bool); anything
    else is left for the spec loader to refuse with its field, value and expectation."""
    return not isinstance(value, bool) and isinstance(value, int | float) and float(value).is_integer()


def _layout_origin(spec: Any, workload_sets: list[str]) -> str:
    """How a preset's layout came about, for the line that starts a run: racksim chose it (docs/workloads.md),
    perhaps changed by the user's --set; "" for a spec that gives its own."""
    if not spec.source_file.startswith("preset:"):
        return ""
    if any(key.startswith("parallelism.") for key in _set_keys(workload_sets)):
        return ": the preset's automatic layout, with your --set"
    return ": the preset's automatic layout"


def _follow_tensor_parallel(raw: dict[str, Any], workload_sets: list[str]) -> None:
    """``--set parallelism.tp=8`` on a preset laid out for you: sequence parallelism and TP communication
    overlap follow the new TP as the automatic layout sets them (on with TP), unless they were set too."""
    keys = _set_keys(workload_sets)
    if "parallelism.tp" not in keys:
        return
    par = raw["parallelism"]
    if not _is_count(par.get("tp")):
        return  # not a count: the spec loader names the field and what it expects
    for flag in ("sequence_parallel", "tp_comm_overlap"):
        if f"parallelism.{flag}" not in keys:
            par[flag] = par["tp"] > 1


def _refill_data_parallel(raw: dict[str, Any], auto: Any, workload_sets: list[str]) -> None:
    """``--set parallelism.tp=4`` on a preset laid out for you keeps its GPUs: dp takes what tp, pp and cp
    leave (and the batch keeps its sequences per replica), unless dp or batch.global_seqs were set too."""
    keys = _set_keys(workload_sets)
    model_parallel = {"parallelism.tp", "parallelism.pp", "parallelism.cp"}
    if not keys & model_parallel or "parallelism.dp" in keys or "batch.global_seqs" in keys:
        return
    par, batch = raw["parallelism"], raw["batch"]
    if not all(_is_count(par.get(key, 1)) for key in ("tp", "pp", "cp")) or not _is_count(batch.get("micro")):
        return  # not counts: the spec loader names the field and what it expects
    width = par["tp"] * par["pp"] * par.get("cp", 1)
    if width < 1 or auto.gpus % width:
        raise ConfigError(
            f"tp·pp·cp = {width} does not divide the {auto.gpus} GPUs the preset was laid out on",
            path="--set",
            value=", ".join(sorted(keys & model_parallel)),
            expected="a layout dividing them, or parallelism.dp (and --racks) set as well",
        )
    dp = auto.gpus // width
    micro = batch["micro"]
    per_replica = max(auto.batch.global_seqs // auto.parallelism.dp, 4 * par["pp"] * micro)
    per_replica = -(-per_replica // (micro * par["pp"])) * micro * par["pp"]
    par["dp"], batch["global_seqs"] = dp, dp * per_replica


def _training_spec(opts: RunOptions, profile: Profile, workload_sets: list[str]) -> tuple[Any, int]:
    from workloads.model import load_preset
    from workloads.spec import (
        PRECISIONS,
        apply_workload_overrides,
        auto_training_spec,
        check_simulated_steps,
        load_training_spec,
        load_workload,
        spec_mapping,
    )

    if opts.steps is not None:
        check_simulated_steps(opts.steps, file=None, path="--steps")

    name = DEFAULT_MODEL if opts.workload is None else opts.workload
    raw, label, text = load_workload(name, workload_sets)
    if set(raw) == {"preset"}:
        # A bare model preset: lay it out on the requested racks, then apply --set on top and re-validate.
        racks = opts.racks or 1
        keys = _set_keys(workload_sets)
        # The layout is chosen for the precision the run will use (FP8 weights and activations take less);
        # a precision racksim does not know is left to the spec loader to name.
        given = apply_workload_overrides(
            {"precision": "bf16"}, [o for o in workload_sets if _set_keys([o]) == {"precision"}]
        )
        chosen = str(given["precision"]).lower()
        auto = auto_training_spec(
            load_preset(raw["preset"]),
            gpus=racks * profile.gpus_per_rack,
            domain_size=profile.scale_up.domain_size,
            hbm_bytes=profile.accelerator.hbm_capacity,
            precision=chosen if chosen in PRECISIONS else "bf16",
            steps=opts.steps or 2,
            file=label,
        )
        if chosen in PRECISIONS and all(
            key in ("precision", "steps") or key.startswith("job.") for key in keys
        ):
            # Nothing set changes how much memory a layout needs beyond the precision it was chosen for.
            _check_preset_fits(auto, profile, racks, opts.racks is None)
        if not workload_sets:
            return auto, racks
        raw = apply_workload_overrides(spec_mapping(auto), workload_sets)
        _follow_tensor_parallel(raw, workload_sets)
        _refill_data_parallel(raw, auto, workload_sets)
        spec = load_training_spec(raw, file=label, source_text=text)
        return spec, max(racks, -(-spec.gpus // profile.gpus_per_rack))
    spec = load_training_spec(raw, file=label, source_text=text)
    per_rack = profile.gpus_per_rack
    racks = opts.racks or max(1, -(-spec.gpus // per_rack))
    if opts.racks is None and racks > profile.cluster.racks:
        racks = profile.cluster.racks  # let Cluster.require explain how many racks are needed
    if opts.steps is not None:
        from dataclasses import replace

        spec = replace(spec, steps=opts.steps)
    return spec, racks


def _never_fits(auto: Any, profile: Profile, most_racks: int) -> bool:
    """Whether no layout the automatic layout could take fits HBM on any count of racks up to
    ``most_racks`` (a lower bound of their memory, workloads.spec.auto_layout_floor_bytes)."""
    from workloads.spec import auto_layout_floor_bytes

    floor = auto_layout_floor_bytes(
        auto.model,
        max_gpus=most_racks * profile.gpus_per_rack,
        domain_size=profile.scale_up.domain_size,
        precision=auto.precision,
    )
    return floor > profile.accelerator.hbm_capacity


def _check_preset_fits(auto: Any, profile: Profile, racks: int, racks_chosen_for_user: bool) -> None:
    """A bare preset whose best layout does not fit its racks' HBM: say how many racks it needs (the
    memory model's own hint would name a TP or PP the automatic layout never takes on these racks)."""
    from workloads.model import load_preset
    from workloads.spec import auto_training_spec, worst_stage_bytes

    hbm = profile.accelerator.hbm_capacity
    needs = worst_stage_bytes(auto)
    if needs <= hbm:
        return
    model = auto.model.name
    what = "1 rack" if racks == 1 else f"{racks} racks"
    lead = (
        f"{model} does not fit on {what} of {profile.name} ({racks * profile.gpus_per_rack} GPUs): its best "
        f"layout (tp{auto.parallelism.tp} pp{auto.parallelism.pp} dp{auto.parallelism.dp}) needs "
        f"{needs / 1e9:.1f} GB of {hbm / 1e9:.1f} GB per GPU"
    )
    most = max(profile.cluster.racks, racks) * 4
    for more in range(racks + 1, most + 1):
        if more == racks + 4 and _never_fits(auto, profile, most):
            break  # not on any count up to `most`: say so now, not after trying each (an hour for 2,000)
        gpus = more * profile.gpus_per_rack
        trial = auto_training_spec(
            load_preset(model),
            gpus=gpus,
            domain_size=profile.scale_up.domain_size,
            hbm_bytes=hbm,
            precision=auto.precision,
            steps=auto.steps,
        )
        if worst_stage_bytes(trial) <= hbm:
            how = "add" if racks_chosen_for_user else "use"
            raise ConfigError(
                f"{lead}; it fits on {more} racks",
                file=auto.source_file,
                hint=f"{how} --racks {more}, or write a workload spec with your own layout (docs/workloads.md)",
            )
    raise ConfigError(
        f"{lead}, and on up to {most} racks",
        file=auto.source_file,
        hint="write a workload spec with full recompute, a wider TP or ZeRO-3 / FSDP (docs/workloads.md)",
    )


def is_inference(opts: RunOptions, workload_sets: list[str]) -> bool:
    """Whether the workload is a serving spec (``kind: inference``)."""
    from workloads.spec import load_workload

    raw, _label, _text = load_workload(
        DEFAULT_MODEL if opts.workload is None else opts.workload, workload_sets
    )
    return raw.get("kind") == "inference"


def build_inference_spec(opts: RunOptions, profile: Profile, workload_sets: list[str]) -> tuple[Any, int]:
    """The serving spec and how many racks it uses."""
    from workloads.inference import load_inference_spec
    from workloads.spec import load_workload

    raw, label, text = load_workload(DEFAULT_MODEL if opts.workload is None else opts.workload, workload_sets)
    with blaming_overrides(workload_sets):
        spec = load_inference_spec(raw, file=label, source_text=text)
    racks = opts.racks or max(1, -(-spec.gpus // profile.gpus_per_rack))
    if opts.racks is None and racks > profile.cluster.racks:
        racks = profile.cluster.racks
    return spec, racks


def summarize_serving(
    spec: Any,
    profile: Profile,
    machine: Machine,
    job: Any,
    breakdown: BreakdownAccumulator,
    power_result: PowerResult | None,
) -> dict[str, Any]:
    """The DESIGN.md summary keys of a serving run (inference keys + the shared throughput/power keys)."""
    from workloads.inference import serving_summary, tokens_of

    end = job.step_times.ends[0]
    weights = machine.gpu_multiplicity().astype(float)
    brk = breakdown.step_breakdown([(0.0, end)], weights)
    summary = serving_summary(job)
    summary.update(
        {
            "exposed_comm_fraction": brk.exposed_comm,
            "exposed_comm_by_group": brk.exposed_by_group,
            "compute_fraction": brk.compute,
            "bubble_fraction": 0.0,
            "idle_fraction": brk.idle,
            "host_wait_fraction": _host_wait_fraction(machine, weights, end),
            "events": machine.recorder.rows,
            "profile": profile_summary(profile),
            "workload": {
                "kind": "inference",
                "name": spec.name,
                "model": spec.model.name,
                "precision": spec.precision,
                "parallelism": {
                    "tp": spec.parallelism.tp,
                    "replicas": spec.parallelism.replicas,
                    "ep": spec.parallelism.ep,
                    "attention_dp": spec.parallelism.attention_dp,
                },
                "scheduler": {
                    "max_num_seqs": spec.scheduler.max_num_seqs,
                    "max_batch_tokens": spec.scheduler.max_batch_tokens,
                    "chunked_prefill": spec.scheduler.chunked_prefill,
                    "cuda_graphs": spec.scheduler.cuda_graphs,
                },
            },
            "collective_algorithms": dict(sorted(machine.comm_log.items())),
        }
    )
    return _with_power(summary, power_result, tokens_of(job), "generated")


def make_comm_model(profile: Profile, cluster: Cluster) -> Any:
    from simcore.collectives import CollectiveModel

    return CollectiveModel(profile, cluster)


PROGRESS_EVERY_S = 10.0  # wall seconds between progress lines of a long run


def _step_progress(say: Callable[[str], None], steps: int) -> Callable[[int], None]:
    """A step-end callback that says how far a long run is, at most every ``PROGRESS_EVERY_S`` of wall time
    (a short run says nothing)."""
    start = last = time.perf_counter()

    def on_step(done: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S and done < steps:
            last = now
            left = (now - start) / done * (steps - done)
            say(f"step {done:,} of {steps:,} simulated in {now - start:.0f} s; ~{left:.0f} s left")

    return on_step


def _gpu_count_source(spec: Any) -> dict[str, str]:
    """Where a job's GPU count comes from: its workload file and the parallel sizes multiplied."""
    par = spec.parallelism
    # serving: tp GPUs per replica
    names = ("tp", "replicas") if hasattr(par, "replicas") else ("tp", "pp", "dp", "cp")
    product = " x ".join(f"{n} {getattr(par, n)}" for n in names)
    sizes = "/".join(f"parallelism.{n}" for n in names if getattr(par, n) > 1) or "parallel sizes"
    where = f"{spec.source_file}: " if spec.source_file else ""
    return {"job": f"{where}parallelism {product}", "sizes": sizes}


def run(opts: RunOptions) -> RunResult:
    """Run one training simulation and write its outputs."""
    from workloads.spec import spec_text, stage_memory

    wall0 = time.perf_counter()
    ctrl_c = interrupts.mark()  # only a Ctrl-C pressed during this run stops it
    say = opts.progress or (lambda _msg: None)
    if opts.contention not in ("analytic", "flow"):
        raise ConfigError(
            "unknown contention model",
            path="--contention",
            value=opts.contention,
            expected="analytic or flow",
        )
    if opts.fidelity not in ("representative", "full"):
        raise ConfigError(
            "unknown fidelity", path="--fidelity", value=opts.fidelity, expected="representative or full"
        )
    profile_sets, workload_sets = split_sets(opts.sets)
    profile = load_profile(opts.profile, profile_sets)
    serving = is_inference(opts, workload_sets)
    if serving:
        spec, racks = build_inference_spec(opts, profile, workload_sets)
    else:
        spec, racks = build_training_spec(opts, profile, workload_sets)
    _require_precision(profile, spec)  # an accelerator without this precision is an input error: say so first
    if not serving:
        _require_straggler_clocks(profile, spec)
        _require_hot_racks(profile, spec)
    # checks of the profile against the job (and, below, the power model's) may fire on a --set value
    blaming_profile_sets = partial(blaming_overrides, profile_sets, file=profile.source_file)
    with blaming_profile_sets():
        cluster = Cluster(profile, racks=racks)
        cluster.require(spec.gpus, **_gpu_count_source(spec))
    if not serving and spec.job is not None:
        with blaming_profile_sets():  # a failure rate that makes it too long may be a --set value
            _check_job_replayable(spec, profile, opts.seed)
    if serving:
        if opts.steps is not None:
            raise ConfigError(
                "a serving run serves its request stream; it has no training steps",
                path="--steps",
                value=opts.steps,
                expected="requests.count (or a trace) in the serving spec",
            )
        if opts.contention != "analytic" or opts.fidelity != "representative":
            raise ConfigError(
                "serving runs one rank class per replica with analytic contention",
                path="--contention/--fidelity",
                value=f"{opts.contention}/{opts.fidelity}",
                expected="the defaults (analytic, representative)",
            )
        say(
            f"serving {spec.name} on {plural(spec.gpus, 'GPU')} of {profile.name} (tp{spec.parallelism.tp}"
            f"{' attention-dp' if spec.parallelism.attention_dp else ''} x "
            f"{plural(spec.parallelism.replicas, 'replica')}), "
            + (
                f"requests from {spec.requests.trace}"
                if spec.requests.trace
                else plural(spec.requests.count, "request")
            )
        )
    else:
        # Memory check before simulating: a clear one-line answer beats a simulated OOM.
        stage_memory(spec, profile.accelerator.hbm_capacity)
        say(
            f"simulating {spec.name} on {plural(spec.gpus, 'GPU')} of {profile.name} "
            f"(tp{spec.parallelism.tp} pp{spec.parallelism.pp} dp{spec.parallelism.dp} cp{spec.parallelism.cp} "
            f"ep{spec.parallelism.ep}{_layout_origin(spec, workload_sets)}), {plural(spec.steps, 'step')}"
        )

    out_dir = opts.out
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError("exists and is not a directory", path="--out", value=str(out_dir),
                          expected="a directory for summary.json and trace.h5 (new or existing)")  # fmt: skip
    writer = None
    created = first_missing(Path(out_dir)) if out_dir is not None else None  # what a failed run removes
    try:
        if opts.write_trace:
            if out_dir is None:
                out_dir = created = new_run_dir()
            writer = TraceWriter(Path(out_dir) / "trace.h5")
        sim = _simulate(spec, profile, cluster, opts, serving, say, writer, blaming_profile_sets, ctrl_c)
        power_result, warm = settle_thermal_start(sim.controller, sim.power_result)
        power_wall_s = sim.controller.wall_s
        if warm is not None:  # heat sets clocks: run again from this job's own thermal steady state
            say(
                "note: simulating again from the thermal steady state of this job's own power (heat sets clocks)"
            )
            del sim, power_result  # the first pass's machine, events and series: not held through the second
            if writer is not None:
                writer.abort()
                writer = TraceWriter(Path(out_dir) / "trace.h5")
            sim = _simulate(
                spec, profile, cluster, opts, serving, say, writer, blaming_profile_sets, ctrl_c, warm
            )
            power_result = sim.power_result
            power_wall_s += sim.controller.wall_s
        machine, job, breakdown = sim.machine, sim.job, sim.breakdown
        events = machine.recorder.table() if opts.keep_events else None
        if serving:
            summary = summarize_serving(spec, profile, machine, job, breakdown, power_result)
        else:
            summary = summarize(spec, profile, machine, job, breakdown, power_result)
        summary.update(run_inputs(opts, spec, profile, racks, serving))
        if not serving and spec.job is not None:
            step_w, idle_w = _job_powers(sim, power_result)
            day = _day_profile(
                sim, summary["step_time_s"], step_w, say, partial(_simulate, spec, profile, cluster, opts, False,
                _silent, None, blaming_profile_sets, ctrl_c),
                heat_throttled=(summary.get("throttle_thermal_fraction") or 0.0) > 0.0,
            )  # fmt: skip
            plan = job_plan(spec, profile, summary["step_time_s"], opts.seed, day.step_s)
            replayed = replay_job(plan)
            summary.update(replayed.summary())
            summary.update(replayed.energy(day.facility_w, idle_w, spec.tokens_per_step))
        summary["wall_time_s"] = None  # filled below; excluded from determinism comparisons
        if writer is not None:
            text = spec.source_text if serving else spec_text(spec)
            _write_trace_tables(writer, profile, spec, machine, job, summary, opts, text)
            for group, series in power_result.series().items():
                writer.write_series(f"timeseries/{group}", power_result.time_s, series)
            writer.file["timeseries/power/rack_w"].attrs["racks_per_type"] = np.rint(
                power_result.racks_per_type
            ).astype(np.int64)
        interrupts.raise_if_requested(ctrl_c)  # ... or one swallowed while summarising, before any output
        if out_dir is None and opts.write_summary:
            out_dir = created = new_run_dir()
        if out_dir is not None:
            wall = publish(Path(out_dir), summary, writer, wall0)
        else:
            wall = time.perf_counter() - wall0
            summary["wall_time_s"] = round(wall, 3)
    except BaseException:
        if writer is not None:
            writer.abort()
        if created is not None and out_dir is not None:
            discard_created(Path(out_dir), created)
        raise
    return RunResult(summary, out_dir, events, wall, power_wall_s)


# Times of day a job's step is simulated at when the weather reaches its GPUs (a dry cooler's supply
# follows the outside temperature): every 3 hours from midnight, 15:00 being the step-level run itself.
DAY_SAMPLES = 8


@dataclass(frozen=True)
class _Day:
    """A job's step over the day: step time per DAY_SAMPLES share of it (() = the run's all day), and the
    facility power while computing (the day's mean where the step was simulated over the day)."""

    step_s: tuple[float, ...]
    facility_w: float | None


def _day_profile(
    sim: _Pass,
    step_s: float,
    facility_w: float | None,
    say: Callable[[str], None],
    simulate: Callable[..., _Pass],
    heat_throttled: bool = True,
) -> _Day:
    """Where the coolant supply follows the weather, simulate the step (and its thermal settling) at
    DAY_SAMPLES times of day with ``simulate`` (``_simulate`` with the run's arguments bound); the multi-day
    replay then runs each part of the day at its own step time (DESIGN.md: diurnal temperature is a
    job-level event). Elsewhere, and where the run's own hour is the warmest and ``heat_throttled`` is false
    (no hour can then be slower), the step is the run's all day."""
    ctl = sim.controller
    supply = ctl.supply_at_time_of_day(np.arange(0.0, DAY_S, 900.0))
    if float(np.ptp(supply)) <= 1e-6:
        return _Day((), facility_w)
    run_supply = float(ctl.supply_at_time_of_day(np.array([ctl.s.start_time_of_day_s]))[0])
    if not heat_throttled and supply.max() <= run_supply + 1e-9:
        # The run is the day's warmest hour and heat slowed nothing: no hour's step differs (the GPUs'
        # power does not depend on their temperature), so none is simulated again.
        say(
            f"note: the coolant supply follows the weather ({supply.min():.1f}-{supply.max():.1f} degC over the "
            "day); the run's hour is the warmest and no GPU throttled on heat, so the job replay takes its step "
            "all day"
        )
        return _Day((), facility_w)
    say(
        f"note: the coolant supply follows the weather ({supply.min():.1f}-{supply.max():.1f} degC over the "
        f"day): simulating the step at {DAY_SAMPLES} times of day for the job replay ({DAY_SAMPLES - 1} more "
        "simulations of the step, two each where heat sets clocks)"
    )
    steps, powers = [], []
    for i in range(DAY_SAMPLES):
        tod = i * DAY_S / DAY_SAMPLES
        if abs(tod - ctl.s.start_time_of_day_s) < 1.0:  # the run itself
            steps.append(step_s)
            powers.append(facility_w)
            continue
        settings = replace(ctl.s, start_time_of_day_s=tod)
        day_sim = simulate(settings=settings)
        result, warm = settle_thermal_start(day_sim.controller, day_sim.power_result)
        if warm is not None:  # heat sets clocks: from this hour's own thermal steady state
            day_sim = simulate(warm, settings=settings)
            result = day_sim.power_result
        ends = day_sim.job.step_times.ends
        steps.append(ends[-1] / len(ends))
        powers.append(result.summary["facility_power_w"])
    mean_w = None if any(w is None for w in powers) else float(np.mean(powers))
    return _Day(tuple(steps), mean_w)


def _silent(_line: str) -> None:
    """A day pass's progress lines: the run has said what it simulates."""


@dataclass
class _Pass:
    """One simulation of the job: the machine it ran on and what the power model made of it."""

    machine: Machine
    job: Any
    breakdown: BreakdownAccumulator
    controller: PowerController
    power_result: PowerResult


def _simulate(
    spec: Any,
    profile: Profile,
    cluster: Cluster,
    opts: RunOptions,
    serving: bool,
    say: Callable[[str], None],
    writer: TraceWriter | None,
    blaming_profile_sets: Callable[..., Any],
    ctrl_c: Any,
    warm_activity: np.ndarray | None = None,
    settings: PowerSettings | None = None,
) -> _Pass:
    """Build the machine, the job and the power controller (its heat starting from ``warm_activity``, or
    from sustained compute), run them to the end and roll up the power model."""
    from workloads.training import TrainingJob

    env = simpy.Environment()
    fabric = FabricDriver(env, cluster) if opts.contention == "flow" else None
    recorder = ActivityRecorder(keep=opts.keep_events)
    machine = Machine(
        env, profile, cluster, make_comm_model(profile, cluster), recorder=recorder, fabric=fabric
    )
    # The summary's breakdown is accumulated block by block, so memory stays bounded without keep_events.
    breakdown = BreakdownAccumulator()
    recorder.add_sink(breakdown)
    if writer is not None:
        machine.recorder.add_sink(writer.append_events)
    if serving:
        from workloads.inference import ServingJob

        job = ServingJob(spec, machine, seed=opts.seed)
    else:
        job = TrainingJob(spec, machine, fidelity=opts.fidelity)
        machine.dims = job.dims
        job.on_step = _step_progress(say, spec.steps)
        notes = [*job.split_groups(), *job.straggler_notes(), *job.hot_rack_notes()]
        for line in notes if warm_activity is None else ():  # said once, not again per pass
            say(f"note: {line}")
    settings = settings or PowerSettings()
    if serving:
        span = max((r.arrival_s for r in job.stats.requests), default=0.0)
        settings = settings.for_span(span, len(machine.classes))
        if settings.sample_s != PowerSettings().sample_s and warm_activity is None:
            nyquist = 0.5 / settings.sample_s
            band = f"resolved up to {nyquist:.3g} Hz" if nyquist >= 0.1 else "not resolved"
            say(
                f"note: the requests arrive over {format_duration(span)}: power and temperatures are "
                f"sampled every {format_duration(settings.sample_s)} (not 5 ms) to keep their series "
                f"near {SERIES_BUDGET_BYTES / 1e9:.1g} GB; the 0.1-20 Hz swing band is {band}"
            )
    with blaming_profile_sets(cross_field=True):  # its rack power floor reads many profile fields
        controller = PowerController(machine, settings, warm_activity=warm_activity)
    processes = job.start()
    env.process(controller.process(all_done(env, processes)))
    machine.run()
    interrupts.raise_if_requested(ctrl_c)  # a Ctrl-C swallowed during the run still stops it
    power_result = controller.finalize()
    machine.recorder.flush()
    return _Pass(machine, job, breakdown, controller, power_result)


def publish(out_dir: Path, summary: dict[str, Any], writer: TraceWriter | None, wall0: float) -> float:
    """Put this run's trace and summary.json in place of an earlier run's, never pairing one of each.

    The earlier summary goes before the new trace lands, and a summary that fails to land (Ctrl-C) takes
    the new trace with it; each file alone is self-consistent (a trace holds its own summary). With no
    trace, the earlier trace goes before the new summary lands. Returns the run's wall time, which
    includes publishing the trace."""
    summary_path, trace_path = out_dir / "summary.json", out_dir / "trace.h5"
    if writer is None:
        trace_path.unlink(missing_ok=True)
    else:
        summary_path.unlink(missing_ok=True)
        writer.close()
    wall = time.perf_counter() - wall0
    summary["wall_time_s"] = round(wall, 3)
    try:
        write_json(summary_path, summary)
    except BaseException:
        trace_path.unlink(missing_ok=True)  # none, or this run's
        raise
    return wall


def first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` (itself included) that does not exist yet: what a run creates
    and, if it fails, removes again."""
    missing = None
    while not path.exists():
        missing = path
        if path.parent == path:
            break
        path = path.parent
    return missing


def discard_created(out_dir: Path, created: Path) -> None:
    """Remove ``out_dir`` and its parents up to ``created`` where they are empty: a run stopped before its
    outputs leaves no empty folder (a non-empty one, and anything above it, stays)."""
    path = out_dir
    while True:
        discard_if_empty(path)
        if path == created or path.parent == path:
            return
        path = path.parent


def _check_job_replayable(spec: Any, profile: Profile, seed: int) -> None:
    """Refuse a job: section too long to replay before its step is simulated (minutes, for a typo'd
    job.steps), from the shortest step the accelerators' peak FLOP/s allow."""
    from workloads.model import model_flops_per_token

    flops = spec.tokens_per_step * model_flops_per_token(spec.model, spec.model.seq_len)
    fastest_step_s = flops / (spec.gpus * max(profile.accelerator.peak_flops.values()))
    plan = job_plan(spec, profile, fastest_step_s, seed)
    events = min_replay_events(plan)
    failures = plan.steps * fastest_step_s / plan.job_mtbf_s if math.isfinite(plan.job_mtbf_s) else 0.0
    if events > MAX_EVENTS and failures > 0.5 * events:  # the failure rate, not the length, is the cause
        raise ConfigError(
            f"the job is too long to replay: at {spec.job.steps:,} steps on {plan.nodes:,} nodes it meets at "
            f"least {failures:,.0f} failures (a job-wide MTBF of {format_duration(plan.job_mtbf_s)}), more "
            f"than the {MAX_EVENTS:,} events racksim replays",
            file=profile.source_file,
            path="reliability.node_failures_per_1000_node_days",
            value=profile.reliability.node_failures_per_1000_node_days,
            expected="a failure rate nodes have (Meta RSC-1: 6.5 per 1000 node-days), or fewer job.steps",
        )
    if events > MAX_EVENTS:
        raise ConfigError(
            f"the job is too long to replay: even at the peak FLOP/s ({fastest_step_s:.3g} s a step) it meets "
            f"at least {events:,.0f} checkpoints and failures, more than the {MAX_EVENTS:,} racksim replays",
            file=spec.source_file,
            path="job.steps",
            value=spec.job.steps,
            expected="fewer steps, a larger "
            "job.checkpoint_every or shorter checkpoints (job.checkpoint_bytes, reliability.checkpoint_bandwidth)",
        )


RUN_OUTPUTS = ("summary.json", "trace.h5")


def earlier_outputs(out_dir: Path, shown: int = 4) -> str:
    """What a reused run directory holds besides the files a run writes (plots/, trace.perfetto.json, a
    report ...), as a short list; "" for a new directory or one that holds no earlier run. They are left
    alone (they may be the user's) but would pass for this run's if nobody said otherwise."""
    if not out_dir.is_dir():
        return ""
    entries = sorted(out_dir.iterdir())
    if not any(p.name in RUN_OUTPUTS for p in entries):
        return ""
    names = [f"{p.name}/" if p.is_dir() else p.name for p in entries if p.name not in RUN_OUTPUTS]
    names = [n for n in names if not n.startswith(".")]  # a run's own temporaries
    if len(names) > shown:
        return f"{', '.join(names[:shown])} and {len(names) - shown} more"
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else ""


def checkpoint_bytes(spec: Any) -> float:
    """A job's checkpoint size: job.checkpoint_bytes, else its optimizer's bytes per parameter (14 B for
    Megatron's mixed precision) times the model's parameters."""
    from workloads.model import total_params

    if spec.job.checkpoint_bytes is not None:
        return float(spec.job.checkpoint_bytes)
    return float(spec.optimizer.checkpoint_bytes_per_param * total_params(spec.model))


def run_inputs(opts: RunOptions, spec: Any, profile: Profile, racks: int, serving: bool) -> dict[str, Any]:
    """The summary's record of what produced it (``seed``, ``overrides``, ``inputs``): with ``--no-trace``
    the summary is all a run leaves, and a job's failures and goodput must be reproducible from it. The job
    and reliability values are the effective ones (after ``extends:`` and ``--set``), in SI units."""
    job = None if serving else spec.job
    rel = profile.reliability
    return {
        "seed": opts.seed,
        "overrides": list(opts.sets),
        "inputs": {
            "profile": opts.profile,
            "workload": DEFAULT_MODEL if opts.workload is None else opts.workload,
            "racks": racks,
            "steps": opts.steps,
            "fidelity": opts.fidelity,
            "contention": opts.contention,
            "job": None
            if job is None
            else {
                "steps": job.steps,
                "checkpoint_every": job.checkpoint_every,
                "checkpoint_bytes": checkpoint_bytes(spec),
                "nodes": math.ceil(spec.gpus / profile.rack.gpus_per_tray),
                "gpus_per_node": profile.rack.gpus_per_tray,
            },
            "reliability": None
            if job is None
            else {
                "node_failures_per_1000_node_days": rel.node_failures_per_1000_node_days,
                "weibull_shape": rel.weibull_shape,
                "detect_time_s": rel.detect_time,
                "restart_time_s": rel.restart_time,
                "replace_time_s": rel.replace_time,
                "hot_spares": rel.hot_spares,
                "checkpoint_bandwidth_Bps": rel.checkpoint_bandwidth,
            },
        },
    }


def job_plan(
    spec: Any, profile: Profile, step_time_s: float, seed: int, day_step_s: tuple[float, ...] = ()
) -> JobPlan:
    """The job-level replay of ``spec.job``: the job's nodes (trays / servers), its checkpoint write time
    (every GPU writes its shard at the profile's per-GPU checkpoint bandwidth) and the failure model;
    ``day_step_s``: the step over the day where the weather reaches the GPUs (its mean is the plan's step)."""
    rel = profile.reliability
    ckpt_bytes = checkpoint_bytes(spec)
    rate = rel.node_failures_per_1000_node_days
    return JobPlan(
        steps=spec.job.steps,
        step_time_s=day_mean_step_s(day_step_s) if day_step_s else step_time_s,
        day_step_s=day_step_s,
        start_time_of_day_s=PowerSettings().start_time_of_day_s,
        checkpoint_s=ckpt_bytes / (rel.checkpoint_bandwidth * spec.gpus),
        checkpoint_every=spec.job.checkpoint_every,
        nodes=math.ceil(spec.gpus / profile.rack.gpus_per_tray),
        node_mtbf_s=1000.0 * DAY_S / rate if rate > 0 else math.inf,
        weibull_shape=rel.weibull_shape,
        detect_s=rel.detect_time,
        restart_s=rel.restart_time,
        replace_s=rel.replace_time,
        hot_spares=rel.hot_spares,
        seed=seed,
    )


def _job_powers(sim: _Pass, power_result: PowerResult | None) -> tuple[float | None, float | None]:
    """Facility power while the job computes (the step-level run's average) and while it is paused
    (checkpoints, recoveries: its racks idling, at the run's weather); None without a power model."""
    if power_result is None:
        return None, None
    idle_w = sim.controller.idle_facility_power_w(power_result.time_s, power_result.width_s)
    return power_result.summary["facility_power_w"], idle_w


def all_done(env: simpy.Environment, processes: list[simpy.Process]) -> simpy.Event:
    """A plain event that fires when every process has ended.

    Not an AllOf: simpy strips the callbacks of a condition nested inside another condition (AnyOf) when
    the outer one fires first, so a nested AllOf would never fire.
    """
    done = env.event()
    simpy.AllOf(env, processes).callbacks.append(lambda _ev: done.succeed())
    return done


def summarize(
    spec: Any,
    profile: Profile,
    machine: Machine,
    job: Any,
    breakdown: BreakdownAccumulator,
    power_result: PowerResult | None = None,
) -> dict[str, Any]:
    """The DESIGN.md summary keys (SI units), plus context about the run."""
    from workloads.model import model_flops_per_token

    ends = job.step_times.ends
    bounds = list(zip([0.0, *ends[:-1]], ends, strict=True))
    step_times = [hi - lo for lo, hi in bounds]
    step_time = float(np.mean(step_times))
    gpus = spec.gpus
    tokens = spec.tokens_per_step
    flops_tok = model_flops_per_token(spec.model, spec.model.seq_len)
    hw_flops_tok = job.hardware_flops_per_token()
    model_tflops = tokens * flops_tok / step_time / gpus
    peak = profile.peak_flops(job.dtype)
    weights = machine.gpu_multiplicity().astype(float)
    brk = breakdown.step_breakdown(bounds, weights)
    summary: dict[str, Any] = {
        "step_time_s": step_time,
        "tokens_per_s": tokens / step_time,
        "tokens_per_s_per_gpu": tokens / step_time / gpus,
        "model_tflops_per_gpu": model_tflops / 1e12,
        "mfu": model_tflops / peak,
        "hardware_tflops_per_gpu": tokens * hw_flops_tok / step_time / gpus / 1e12,
        "flops_convention": (
            "model FLOPs = 6N + attention (docs/models.md); hardware FLOPs add recompute; "
            f"mfu = model FLOP/s over the dense {job.dtype} peak"
        ),
        "gpus": gpus,
        "exposed_comm_fraction": brk.exposed_comm,
        "exposed_comm_by_group": brk.exposed_by_group,
        "compute_fraction": brk.compute,
        "bubble_fraction": brk.idle,
        "host_wait_fraction": _host_wait_fraction(machine, weights, ends[-1] if ends else 0.0),
        "peak_hbm_bytes": float(np.max(machine.mem_peak)) if len(machine.mem_peak) else 0.0,
        "step_times_s": step_times,
        "events": machine.recorder.rows,
        "profile": profile_summary(profile),
        "workload": {
            "name": spec.name,
            "model": spec.model.name,
            "precision": spec.precision,
            "steps": spec.steps,
            "global_seqs": spec.batch.global_seqs,
            "micro": spec.batch.micro,
            "parallelism": {
                **{
                    k: getattr(spec.parallelism, k)
                    for k in ("tp", "pp", "dp", "cp", "ep", "vp", "zero", "fsdp", "recompute")
                },
                "recompute_modules": list(spec.parallelism.recompute_modules),
            },
        },
        "collective_algorithms": dict(sorted(machine.comm_log.items())),
    }
    return _with_power(summary, power_result, tokens * spec.steps, "trained")


THROTTLE_CAUSES = {  # summary key -> what the run table calls it
    "throttle_thermal_fraction": "heat (junction past accelerator.slowdown_temp)",
    "throttle_rack_power_fraction": "the rack power limit (rack.power_limit)",
    "throttle_power_cap_fraction": "the GPU power cap (accelerator.power_cap)",
    "throttle_straggler_fraction": "stragglers (the workload's stragglers and the GPUs in lock-step with them)",
}


def _host_wait_fraction(machine: Machine, weights: np.ndarray, elapsed: float) -> float:
    """Share of the run the GPUs' compute streams waited for their host: to issue kernels (host-bound
    execution, calibration.host_kernel_time) and for its per-step work (calibration.step_host_time; a
    serving engine's per-iteration work, calibration.serving_*_host_time), GPU-weighted; the other
    fractions count that time as idle or as exposed communication."""
    if elapsed <= 0.0 or not len(weights):
        return 0.0
    waits = np.asarray(machine.host_wait, dtype=float)
    return float(np.dot(waits, weights) / weights.sum() / elapsed)


def _with_power(
    summary: dict[str, Any], power_result: PowerResult | None, tokens: float, which: str
) -> dict[str, Any]:
    """Add the power model's keys and energy per ``which`` token; list the keys it could not fill."""
    if power_result is not None:
        summary.update(power_result.summary)
        energy = power_result.summary["facility_energy_j"]
        summary["energy_per_token_j"] = energy / tokens if tokens else None
        summary["energy_convention"] = f"facility energy (IT + cooling + overhead) per {which} token"
    not_modelled = []
    for key in ("avg_it_power_w", "peak_it_power_w", "facility_power_w", "pue", "energy_per_token_j"):
        summary.setdefault(key, None)
        if summary[key] is None:
            not_modelled.append(key)
    summary["not_modelled"] = not_modelled
    return summary


def _write_trace_tables(
    writer: TraceWriter,
    profile: Profile,
    spec: Any,
    machine: Machine,
    job: Any,
    summary: dict[str, Any],
    opts: RunOptions,
    workload_text: str,
) -> None:
    classes = np.zeros(
        len(machine.classes),
        dtype=[("index", np.int32), ("multiplicity", np.int64), ("first_gpu", np.int64), ("stage", np.int32)],
    )
    for i, c in enumerate(machine.classes):
        classes[i] = (i, c.multiplicity, int(c.gpus[0]), job.class_stage[i])
    writer.write_table("classes", classes, {"multiplicity": "GPUs"})
    writer.write_strings("class_names", [c.name for c in machine.classes])
    writer.write_strings("class_places", [c.place for c in machine.classes])
    writer.write_strings("names", machine.recorder.names)
    writer.write_strings("streams", list(machine.streams))
    ends = np.asarray(job.step_times.ends, dtype=np.float64)
    writer.write_table(
        "steps", np.rec.fromarrays([np.arange(len(ends)), ends], names="step,t_end"), {"t_end": "s"}
    )
    writer.write_meta(
        {
            "seed": opts.seed,
            "profile_name": profile.name,
            "workload_name": spec.name,
            "fidelity": opts.fidelity,
            "gpus": spec.gpus,
        },
        {
            "profile_yaml": profile.source_text,
            "workload_yaml": workload_text,
            "summary_json": json.dumps(
                {k: v for k, v in summary.items() if k != "wall_time_s"}, sort_keys=True
            ),
        },
    )


def _require_straggler_clocks(profile: Profile, spec: Any) -> None:
    """A straggler's clock ceiling is a clock the accelerator can run: at or above its minimum clock (the
    power model's DVFS curve ends there)."""
    acc = profile.accelerator
    lowest = acc.min_clock / acc.max_clock
    for i, slow in enumerate(spec.stragglers):
        if slow.speed < lowest - 1e-12:
            raise ConfigError(
                f"below the lowest clock of {acc.name} ({profile.name})",
                file=getattr(spec, "source_file", "") or None,
                path=f"stragglers[{i}].speed",
                value=slow.speed,
                expected=f"{lowest:.3g} (accelerator.min_clock / max_clock) .. 1",
            )


def _require_hot_racks(profile: Profile, spec: Any) -> None:
    """A hot rack is one of the job's racks (its GPUs fill racks from GPU 0 on)."""
    racks = math.ceil(spec.gpus / profile.gpus_per_rack)
    for i, hot in enumerate(spec.hot_racks):
        if hot.rack >= racks:
            raise ConfigError(
                "no such rack in this job",
                file=getattr(spec, "source_file", "") or None,
                path=f"hot_racks[{i}].rack",
                value=hot.rack,
                expected=f"0 .. {racks - 1} (the job's {spec.gpus} GPUs fill {racks} rack(s) of "
                f"{profile.gpus_per_rack} on {profile.name})",
            )


def _require_precision(profile: Profile, spec: Any) -> None:
    """The workload's precision must be one the accelerator has tensor throughput for; the fix belongs in
    the workload (or the choice of profile), so the error names the workload's field."""
    if spec.precision in profile.accelerator.peak_flops:
        return
    raise ConfigError(
        f"{profile.accelerator.name} ({profile.name}) has no {spec.precision} tensor throughput",
        file=getattr(spec, "source_file", "") or None,
        path="precision",
        value=spec.precision,
        expected="one of "
        + ", ".join(profile.accelerator.peak_flops)
        + ", or a profile whose accelerator has it",
    )


def _host_row(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """A line for host-bound runs only (most runs never wait for their host)."""
    wait = summary.get("host_wait_fraction") or 0.0
    training = summary.get("workload", {}).get("kind") != "inference"
    # the host wait is part of the idle line (or of exposed communication), not beside it: say so for both
    work = "per-step" if training else "per-iteration"
    what = f"launches, {work} host work; counted in idle or exposed communication"
    return [("waiting for the host", f"{100 * wait:.3g} %  ({what})")] if wait >= 0.001 else []


def _heat_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """How hot the GPUs ran, always (a run just under its slowdown temperature is one degree from slowing
    down); and, when they ran below full clock, for what share of the time and what held them there."""
    tj, slowdown = summary.get("max_junction_temp_c"), summary.get("slowdown_temp_c")
    if tj is None:
        return [("max junction temperature", "n/a (not modelled yet)")]
    limit = f" (slowdown at {slowdown:.4g} degC)" if slowdown is not None else ""
    rows = [("max junction temperature", f"{tj:.1f} degC{limit}")]
    throttled = summary.get("throttle_time_fraction") or 0.0
    if throttled <= 0.0:
        return rows
    causes = [(what, summary.get(key) or 0.0) for key, what in THROTTLE_CAUSES.items()]
    causes = [(what, share) for what, share in causes if share > 0.0]
    if len(causes) == 1:
        why = f"by {causes[0][0]}"
    elif causes:
        why = "by " + ", ".join(f"{what} {100 * share:.3g} %" for what, share in causes)
    else:  # a summary from before the causes were recorded
        why = "cause not recorded"
    low = summary.get("min_clock_factor")
    clock = f"; clock down to {low:.3g} of max" if low is not None else ""
    rows.append(("throttled", f"{100 * throttled:.3g} % of GPU-time, {why}{clock}"))
    return rows


def _job_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Lines for a run with a `job:` section (failures, checkpoints, goodput); none otherwise."""
    if summary.get("goodput") is None or summary.get("job_days") is None:
        return []
    lost_h = (summary.get("job_lost_work_s") or 0.0) / 3600.0
    down_h = (summary.get("job_down_s") or 0.0) / 3600.0
    return [
        (
            "job wall time, goodput",
            f"{summary['job_days']:.4g} days, goodput {100 * summary['goodput']:.3g} %",
        ),
        (
            "failures, checkpoints",
            f"{plural(summary.get('job_failures', 0), 'failure')} ({lost_h:.3g} h of work lost, {down_h:.3g} h "
            f"down), {plural(summary.get('job_checkpoints', 0), 'checkpoint')} every "
            + (
                "step"
                if summary.get("job_checkpoint_every_steps") == 1
                else f"{summary.get('job_checkpoint_every_steps')} steps"
            ),
        ),
        *_job_day_row(summary),
        *_job_energy_row(summary),
    ]


def _job_day_row(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The step's swing over the day, where the weather reaches the GPUs (none where it does not)."""
    low, high = summary.get("job_step_time_min_s"), summary.get("job_step_time_max_s")
    if low is None or high is None or high <= low:
        return []
    return [
        ("job step over the day", f"{low:.4g} .. {high:.4g} s (+{100 * (high / low - 1):.3g} % in the heat)")
    ]


def _job_energy_row(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The whole job's facility energy and its energy per useful token, beside the steps' own figure
    (none without a power model)."""
    energy, per_token = summary.get("job_energy_j"), summary.get("job_energy_per_token_j")
    if energy is None or per_token is None:
        return []
    lost = summary.get("job_energy_lost_j") or 0.0
    return [
        (
            "job energy, per token",
            f"{format_energy(energy)}, {per_token:.4g} J per token ({100 * lost / energy:.3g} % on lost work, "
            "recoveries and checkpoints)",
        )
    ]


def print_table(
    summary: dict[str, Any], out_dir: Path | None, stream: Any = None, wall_s: float | None = None
) -> None:
    """The short human table every run prints (to ``stream``, default the current ``sys.stdout``: bound at
    call time, so a redirected or captured stdout is honoured); ``wall_s`` adds the simulation's wall time
    as its last line, aligned with the rest."""
    stream = sys.stdout if stream is None else stream

    def fmt(key: str, scale: float = 1.0, unit: str = "", digits: int = 4) -> str:
        v = summary.get(key)
        if v is None:
            return "n/a (one output token)" if key.startswith("tpot") else "n/a (not modelled yet)"
        return f"{v * scale:.{digits}g}{unit}"

    def power(key: str) -> str:
        return fmt(key) if summary.get(key) is None else format_power(summary[key])

    wl = summary["workload"]
    par = wl["parallelism"]
    if wl.get("kind") == "inference":
        layout = f"tp{par['tp']} x {plural(par['replicas'], 'replica')}"
        head = [
            ("requests/s", fmt("requests_per_s") + f"  ({summary['requests_completed']} served)"),
            ("TTFT p50 / p99", fmt("ttft_s_p50", 1e3, " ms") + " / " + fmt("ttft_s_p99", 1e3, " ms")),
            ("TPOT p50 / p99", fmt("tpot_s_p50", 1e3, " ms") + " / " + fmt("tpot_s_p99", 1e3, " ms")),
            (
                "iteration time",
                fmt("step_time_s", 1e3, " ms") + f"  ({plural(summary['iterations'], 'iteration')})",
            ),
            (
                "output tokens/s",
                fmt("tokens_per_s", 1, "") + f"  ({fmt('tokens_per_s_per_gpu', 1, ' per GPU')})",
            ),
        ]
    else:
        layout = f"tp{par['tp']} pp{par['pp']} dp{par['dp']} cp{par['cp']} ep{par['ep']}"
        head = [
            ("step time", fmt("step_time_s", 1, " s")),
            ("tokens/s", fmt("tokens_per_s", 1, "") + f"  ({fmt('tokens_per_s_per_gpu', 1, ' per GPU')})"),
        ]
    rows = [
        (
            "workload",
            f"{wl['name']} ({wl['precision']}), {layout}, {plural(summary['gpus'], 'GPU')} on "
            f"{summary['profile']['name']}",
        ),
        *head,
        (
            "model TFLOP/s per GPU",
            fmt("model_tflops_per_gpu")
            + f"   MFU {fmt('mfu', 100, ' %', 3)} (of the {wl['precision']} peak)",
        ),
        ("exposed communication", fmt("exposed_comm_fraction", 100, " %", 3)),
        (
            ("idle (waiting for requests, host)", fmt("idle_fraction", 100, " %", 3))
            if wl.get("kind") == "inference"
            else ("idle (bubble, waits)", fmt("bubble_fraction", 100, " %", 3))
        ),
        *_host_row(summary),
        ("peak HBM", fmt("peak_hbm_bytes", 1e-9, " GB")),
        (
            "IT power avg / peak",
            power("avg_it_power_w")
            + " / "
            + power("peak_it_power_w")
            + (f"  (scale-out fabric {power('fabric_power_w')})" if summary.get("fabric_power_w") else ""),
        ),
        ("facility power, PUE", power("facility_power_w") + ", " + fmt("pue", 1, "")),
        ("energy per token", fmt("energy_per_token_j", 1, " J")),
        *_heat_rows(summary),
        *_job_rows(summary),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}", file=stream)
    if out_dir is not None:
        trace = f", {out_dir}/trace.h5" if (Path(out_dir) / "trace.h5").is_file() else ""
        print(f"  {'outputs':<{width}}  {out_dir}/summary.json{trace}", file=stream)
    if wall_s is not None:
        events = plural(summary.get("events") or 0, "event")
        print(f"  {'simulated in':<{width}}  {wall_s:.2f} s wall, {events}", file=stream)
