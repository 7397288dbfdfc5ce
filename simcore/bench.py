"""``racksim bench``: regression gates for simulated answers (exact) and simulator speed (noisy).

    python run_sim.py bench [--quick|--large] [--compare benchmarks/baseline.json] [--json PATH]
    python run_sim.py bench check-golden | update-golden | update-baseline [--quick|--large]

Answers: a fixed set of small runs (every shipped profile x llama3-8b, plus a few cases that exercise
pipelines, full fidelity, MoE and throttling) must reproduce the summaries committed in
``benchmarks/golden/*.json`` to 1e-9 relative; a modelling change therefore shows up as a reviewed diff of
those files (``update-golden`` rewrites them and prints what changed).

Speed: every benchmark is timed next to a calibration loop in the same process (plain simpy events/s for
Python-bound work, a fixed numpy workload for kernels, Python driving tiny numpy arrays for cost-model
queries), and only the ratio ``rate / calibration rate`` is
compared with ``benchmarks/baseline.json``, so a slower or busier machine moves both and the ratio stays
put. A benchmark fails only when that ratio is more than ``--threshold`` (1.5x) worse than the baseline
after re-measuring (noise only ever slows things down, so the best of several tries is the honest figure).
Deterministic work counters (events, rows, evaluations) are compared exactly: they catch algorithmic
regressions (twice the events for the same job) that timing noise would hide.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simcore.atomic import write_json
from simcore.errors import ConfigError, RacksimError
from simcore.wording import plural

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "benchmarks"
GOLDEN_DIR = BENCH_DIR / "golden"
BASELINE_PATH = BENCH_DIR / "baseline.json"
THRESHOLD = 1.5  # fail when the normalised speed is more than this many times worse than the baseline
GOLDEN_RTOL = 1e-9
IGNORED_KEYS = frozenset({"wall_time_s"})  # not deterministic: never part of an answer
BASELINE_FORMAT = "racksim-bench-baseline"
GOLDEN_FORMAT = "racksim-golden"
SCALES = ("quick", "large")
# The llama3-8b step benchmark's layout, pinned (the automatic layout's choice changes with its policy; its
# baseline counters are for this one): TP 8 over the server with sequence parallelism, TP collectives exposed.
BENCH_8B_LAYOUT = (
    "parallelism.tp=8",
    "parallelism.sequence_parallel=true",
    "parallelism.tp_comm_overlap=false",
)
GIB = 2**30


# ================================================================================================ specs
def training_spec(
    name: str,
    preset: str,
    *,
    tp: int,
    pp: int,
    dp: int,
    global_seqs: int,
    ep: int = 1,
    micro: int = 1,
    steps: int = 1,
    recompute: str = "selective",
) -> dict[str, Any]:
    """A training spec mapping (the DESIGN.md contract) for a preset model and an explicit layout."""
    return {
        "kind": "training",
        "name": name,
        "preset": preset,
        "parallelism": {
            "tp": tp,
            "pp": pp,
            "dp": dp,
            "cp": 1,
            "ep": ep,
            "vp": 1,
            "sequence_parallel": True,
            "zero": 1,
            "recompute": recompute,
        },
        "batch": {"global_seqs": global_seqs, "micro": micro},
        "precision": "bf16",
        "steps": steps,
    }


def write_spec(directory: Path, spec: dict[str, Any]) -> Path:
    """Write a spec as YAML (the runner takes workloads as files) and return its path."""
    import yaml

    path = Path(directory) / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# The jobs the issue names (also used by benchmarks/test_bench_training.py).
# 405B in TP8 x PP16 needs full recompute to fit 80 GB (as Meta's own runs recompute).
SPEC_405B_16K = training_spec(
    "llama3-405b-16k", "llama3-405b", tp=8, pp=16, dp=128, global_seqs=2048, recompute="full"
)
# 131,072 GPUs: DP 1,024 with the same 16 sequences per replica as the 16k job (weak scaling).
SPEC_405B_131K = training_spec(
    "llama3-405b-131k", "llama3-405b", tp=8, pp=16, dp=1024, global_seqs=16384, recompute="full"
)
SPEC_8B_PP4_64 = training_spec("llama3-8b-pp4-64gpu", "llama3-8b", tp=8, pp=4, dp=2, global_seqs=16)
SPEC_8B_PP4_1K = training_spec("llama3-8b-pp4-1024gpu", "llama3-8b", tp=8, pp=4, dp=32, global_seqs=256)
SPEC_MIXTRAL_EP8 = training_spec("mixtral-8x7b-ep8", "mixtral-8x7b", tp=2, pp=4, dp=8, ep=8, global_seqs=64)


@dataclass(frozen=True)
class RunCase:
    """One simulation: a profile, a workload (preset name or spec mapping) and run options."""

    profile: str
    workload: str | dict[str, Any]
    steps: int | None = 1  # None: a serving run (its request stream, no steps)
    racks: int | None = None
    sets: tuple[str, ...] = ()
    fidelity: str = "representative"

    def describe(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "workload": self.workload,
            "steps": self.steps,
            "racks": self.racks,
            "sets": list(self.sets),
            "fidelity": self.fidelity,
        }

    def run(self, tmp: Path) -> Any:
        """Simulate without writing anything (no trace, no summary file); returns the RunResult."""
        from simcore.profile import PROFILES_DIR
        from simcore.runner import RunOptions, run

        # Shipped profiles by absolute path: a same-named file in the working directory must not leak in.
        shipped = PROFILES_DIR / self.profile
        profile = str(shipped) if shipped.is_file() else self.profile
        workload = self.workload if isinstance(self.workload, str) else str(write_spec(tmp, self.workload))
        return run(
            RunOptions(
                profile=profile,
                workload=workload,
                racks=self.racks,
                steps=self.steps,
                sets=list(self.sets),
                fidelity=self.fidelity,
                write_trace=False,
            )
        )


# ============================================================================================== golden
@dataclass(frozen=True)
class GoldenCase:
    id: str
    case: RunCase


def golden_cases() -> list[GoldenCase]:
    """Every shipped profile x llama3-8b for one step on one rack (the preset's automatic layout), plus
    cases for the code paths those do not reach: pipeline parallelism, full fidelity, MoE with expert
    parallelism, thermal throttling, and the default main run (llama3-70b, two steps)."""
    from simcore.profile import PROFILES_DIR

    cases = [
        GoldenCase(f"{p.stem}__llama3-8b", RunCase(p.name, "llama3-8b"))
        for p in sorted(PROFILES_DIR.glob("*.yaml"))
    ]
    cases += [
        GoldenCase("gen1__llama3-8b-pp4-64gpu", RunCase("gen1.yaml", SPEC_8B_PP4_64)),
        GoldenCase("gen1__llama3-8b-pp4-64gpu-full", RunCase("gen1.yaml", SPEC_8B_PP4_64, fidelity="full")),
        GoldenCase("gen2__mixtral-8x7b-ep8", RunCase("gen2.yaml", SPEC_MIXTRAL_EP8)),
        GoldenCase(
            "gen2__llama3-8b-inlet-50c",
            RunCase("gen2.yaml", "llama3-8b", sets=("cooling.inlet_temp=50 degC",)),
        ),
        GoldenCase("gen2__llama3-70b-2steps", RunCase("gen2.yaml", "llama3-70b", steps=2)),
    ]
    return cases


def strip_ignored(value: Any) -> Any:
    """Drop non-deterministic keys (``wall_time_s``) at any depth."""
    if isinstance(value, dict):
        return {k: strip_ignored(v) for k, v in value.items() if k not in IGNORED_KEYS}
    if isinstance(value, list | tuple):
        return [strip_ignored(v) for v in value]
    return value


def golden_document(gc: GoldenCase, tmp: Path) -> dict[str, Any]:
    """What a golden file holds: the case (so a changed case shows in the diff) and its summary."""
    result = gc.case.run(tmp)
    summary = strip_ignored(result.summary)
    if isinstance(summary.get("inputs"), dict):  # the case's names, not this machine's paths to them
        case = gc.case.describe()
        summary["inputs"] |= {"profile": case["profile"], "workload": case["workload"]}
    return {"format": GOLDEN_FORMAT, "case": gc.case.describe(), "summary": summary}


_ABSENT = object()


@dataclass(frozen=True)
class Change:
    """One differing leaf: ``key`` is a dotted path (list items as ``[i]``)."""

    key: str
    old: Any
    new: Any

    @property
    def rel(self) -> float | None:
        """(new - old) / |old| for numbers; None when not numeric (or old is zero)."""
        if _is_number(self.old) and _is_number(self.new) and self.old != 0:
            return (self.new - self.old) / abs(self.old)
        return None

    def render(self) -> str:
        def show(v: Any) -> str:
            if v is _ABSENT:
                return "<absent>"
            return repr(v.item() if isinstance(v, np.generic) else v)  # np.float64(x) reads as x

        rel = self.rel
        tail = f"  ({rel:+.3g} relative)" if rel is not None and math.isfinite(rel) else ""
        return f"{self.key}: {show(self.old)} -> {show(self.new)}{tail}"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _numbers_equal(a: float, b: float, rtol: float) -> bool:
    if a == b:
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def diff_values(old: Any, new: Any, key: str = "", rtol: float = GOLDEN_RTOL) -> list[Change]:
    """Leaves that differ between two JSON-like values; numbers within ``rtol`` relative are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for k in sorted(set(old) | set(new), key=str):
            if k in IGNORED_KEYS:
                continue
            sub = f"{key}.{k}" if key else str(k)
            changes += diff_values(old.get(k, _ABSENT), new.get(k, _ABSENT), sub, rtol)
        return changes
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [Change(f"{key} (length)", len(old), len(new))]
        changes = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            changes += diff_values(a, b, f"{key}[{i}]", rtol)
        return changes
    if _is_number(old) and _is_number(new):
        return [] if _numbers_equal(old, new, rtol) else [Change(key, old, new)]
    if type(old) is type(new) and old == new:
        return []
    return [Change(key, old, new)]


def _load_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path.name}: {exc}", file=str(path)) from exc


def _select(items: Iterable[Any], patterns: list[str] | None, name: Callable[[Any], str]) -> list[Any]:
    items = list(items)
    if not patterns:
        return items
    chosen = [it for it in items if any(fnmatch.fnmatch(name(it), p) or p == name(it) for p in patterns)]
    if not chosen:
        raise ConfigError(
            "no benchmark or case matches --only",
            path="--only",
            value=",".join(patterns),
            expected=", ".join(name(it) for it in items),
        )
    return chosen


def _golden_results(
    golden_dir: Path, cases: list[GoldenCase], say: Callable[[str], None]
) -> Iterator[tuple[GoldenCase, Path, Any, dict[str, Any] | str]]:
    """(case, file, committed document or None, fresh document or the error that stopped the run)."""
    with tempfile.TemporaryDirectory(prefix="racksim-golden-") as tmp:
        for gc in cases:
            t0 = time.perf_counter()
            doc: dict[str, Any] | str
            try:
                doc = golden_document(gc, Path(tmp))
            except RacksimError as exc:  # e.g. the job no longer fits: report it with the case's name
                doc = f"{type(exc).__name__}: {exc}"
            path = golden_dir / f"{gc.id}.json"
            old = _load_json(path) if path.is_file() else None
            say(f"{gc.id}: {time.perf_counter() - t0:.2f} s")
            yield gc, path, old, doc


def _stale_files(golden_dir: Path, cases: list[GoldenCase]) -> list[Path]:
    ids = {gc.id for gc in cases}
    return sorted(p for p in golden_dir.glob("*.json") if p.stem not in ids)


def check_golden(
    golden_dir: Path = GOLDEN_DIR,
    only: list[str] | None = None,
    out: Callable[[str], None] = print,
    say: Callable[[str], None] = lambda _m: None,
) -> int:
    """Re-run every golden case and compare with the committed summaries; 0 when all match, else 1."""
    if not Path(golden_dir).is_dir():  # a wrong --golden-dir: say so before 18 runs
        raise RacksimError(
            f"--golden-dir {golden_dir}: no such directory; expected benchmarks/golden/ or a directory "
            "written by `bench update-golden`"
        )
    all_cases = golden_cases()
    cases = _select(all_cases, only, lambda gc: gc.id)
    failed = 0
    for gc, path, old, doc in _golden_results(golden_dir, cases, say):
        if isinstance(doc, str):
            out(f"ERROR   {gc.id}: {doc}")
            failed += 1
            continue
        if old is None:
            out(f"MISSING {gc.id}: no {path} (run `python run_sim.py bench update-golden`)")
            failed += 1
            continue
        changes = diff_values(old, doc)
        if changes:
            failed += 1
            out(
                f"CHANGED {gc.id} ({plural(len(changes), 'value')} differ{'s' * (len(changes) == 1)} from {path.name}):"
            )
            for ch in changes:
                out(f"    {ch.render()}")
        else:
            out(f"ok      {gc.id}")
    stale = [] if only else _stale_files(golden_dir, all_cases)
    for p in stale:
        out(f"STALE   {p.name}: no golden case of that name any more (update-golden removes it)")
    failed += len(stale)
    if failed:
        out(
            f"golden check FAILED: {failed} of {len(cases) + len(stale)} differ. If the modelling change is "
            "intended, run `python run_sim.py bench update-golden` and commit benchmarks/golden/ with it."
        )
        return 1
    out(f"golden check passed: {len(cases)} cases identical to within {GOLDEN_RTOL:g} relative")
    return 0


def update_golden(
    golden_dir: Path = GOLDEN_DIR,
    only: list[str] | None = None,
    out: Callable[[str], None] = print,
    say: Callable[[str], None] = lambda _m: None,
) -> int:
    """Rewrite the golden files (atomically) and print every value that changed."""
    all_cases = golden_cases()
    cases = _select(all_cases, only, lambda gc: gc.id)
    golden_dir.mkdir(parents=True, exist_ok=True)
    n_changed = errors = 0
    for gc, path, old, doc in _golden_results(golden_dir, cases, say):
        if isinstance(doc, str):
            out(f"ERROR     {gc.id}: {doc} (golden file left as it was)")
            errors += 1
            continue
        if old is None:
            write_json(path, doc)
            out(f"new       {gc.id}")
            n_changed += 1
            continue
        changes = diff_values(old, doc)
        if not changes:
            out(f"unchanged {gc.id}")
            continue
        write_json(path, doc)
        n_changed += 1
        out(f"updated   {gc.id} ({plural(len(changes), 'value')}):")
        for ch in changes:
            out(f"    {ch.render()}")
    if not only:
        for p in _stale_files(golden_dir, all_cases):
            p.unlink()
            out(f"removed   {p.name} (no such case)")
            n_changed += 1
    out(f"{plural(n_changed, 'golden file')} written or removed in {golden_dir}")
    if errors:
        out(f"{plural(errors, 'case')} failed to run: fix them (or the case list in simcore/bench.py) first")
    return 1 if errors else 0


# =============================================================================================== speed
@dataclass(frozen=True)
class Calibration:
    """A fixed reference workload timed in the same process: ``units`` of work per call of ``run``."""

    name: str
    unit: str
    units: float
    run: Callable[[], Any]


def plain_simpy(processes: int, timeouts: int) -> None:
    """P processes that each wait K times on ``env.timeout``: the cheapest possible simpy events."""
    import simpy

    env = simpy.Environment()

    def proc() -> Iterator[Any]:
        for _ in range(timeouts):
            yield env.timeout(1e-3)

    for _ in range(processes):
        env.process(proc())
    env.run()


def _numpy_workload(n: int) -> None:
    x = np.linspace(0.0, 1.0, n)
    y = np.exp(-x) * 3.0 + x
    np.cumsum(y, out=y)


def _small_array_workload(calls: int) -> None:
    """Python driving tiny numpy arrays (the instruction mix of one cost-model query: small array builds,
    masks, reductions, a dict of names). Its speed relative to pure-Python simpy differs between machines by
    up to ~1.5x, so benchmarks of that mix are normalised by this, not by simpy."""
    names = ("ring", "tree", "nvls", "hier")
    for i in range(calls):
        a = np.ones(6) * (1.0 + i % 7)
        mask = a > 2.0
        np.flatnonzero(mask)
        b = np.where(mask, a, 0.0) + np.arange(6.0)
        float(b.max())
        {n: n.upper() for n in names}


SIMPY_CALIBRATION = Calibration("simpy", "events", 8 * 5000, lambda: plain_simpy(8, 5000))
NUMPY_CALIBRATION = Calibration("numpy", "elements", 2_000_000, lambda: _numpy_workload(2_000_000))
SMALL_ARRAY_CALIBRATION = Calibration(
    "python + small numpy", "calls", 20_000, lambda: _small_array_workload(20_000)
)


@dataclass(frozen=True)
class Target:
    """An absolute target on the headline figure (informational: machines differ; the gate is the ratio)."""

    op: str  # "<=" | "<" | ">="
    value: float
    text: str

    def met(self, v: float) -> bool:
        return {"<=": v <= self.value, "<": v < self.value, ">=": v >= self.value}[self.op]


@dataclass
class Work:
    """A prepared benchmark: ``run`` does the timed work and returns its deterministic counters."""

    run: Callable[[], dict[str, int]]
    units: float
    unit: str
    calibration: Calibration
    figure: Callable[[float, float], float]  # (best run s, best calibration s) -> headline value
    figure_fmt: str  # e.g. "{:.2f} s"
    target: Target | None = None
    warmup: Callable[[], Any] | None = None
    rounds: int = 5
    info: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] | None = None


@dataclass(frozen=True)
class BenchDef:
    name: str
    title: str
    scales: tuple[str, ...]
    prepare: Callable[[str], Work]


@dataclass
class Measurement:
    """Wall and process-CPU times of one benchmark and of its calibration, round by round.

    Best (minimum) times are the figures: noise only ever adds time. The gate uses CPU time (all threads
    of this process): a neighbour on a shared 2-core machine inflates wall time but hardly the CPU time
    a fixed piece of work takes, while a slower or throttled CPU moves the calibration the same way.
    """

    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    calib_wall_s: list[float] = field(default_factory=list)
    calib_cpu_s: list[float] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Measurement) -> Measurement:
        if other.counters != self.counters:
            raise RuntimeError(f"work counters differ between tries: {self.counters} vs {other.counters}")
        return Measurement(
            self.wall_s + other.wall_s,
            self.cpu_s + other.cpu_s,
            self.calib_wall_s + other.calib_wall_s,
            self.calib_cpu_s + other.calib_cpu_s,
            self.counters,
        )


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def measure(work: Work, rounds: int | None = None) -> Measurement:
    """Warm up once, then time ``rounds`` runs, each right after a calibration run (interleaved, so
    both see the same machine conditions). Work counters must be identical in every round."""
    (work.warmup or work.run)()
    work.calibration.run()
    m = Measurement()
    for _ in range(rounds or work.rounds):
        _, cw, cc = _timed(work.calibration.run)
        got, w, c = _timed(work.run)
        m.calib_wall_s.append(cw)
        m.calib_cpu_s.append(cc)
        m.wall_s.append(w)
        m.cpu_s.append(c)
        got = {k: int(v) for k, v in got.items()}
        if m.counters and got != m.counters:
            raise RuntimeError(
                f"work counters differ between rounds (non-determinism): {m.counters} vs {got}"
            )
        m.counters = got
    return m


def summarize_measurement(bench: BenchDef, scale: str, work: Work, m: Measurement) -> dict[str, Any]:
    """The JSON record of one benchmark (also what baseline.json stores)."""
    best, cbest = min(m.wall_s), min(m.calib_wall_s)
    best_cpu, cbest_cpu = min(m.cpu_s), min(m.calib_cpu_s)
    calib_units = work.calibration.units
    value = work.figure(best, cbest)
    return {
        "name": bench.name,
        "title": bench.title,
        "scale": scale,
        "unit": work.unit,
        "units_per_run": work.units,
        "rounds": len(m.wall_s),
        "best_s": best,
        "median_s": statistics.median(m.wall_s),
        "best_cpu_s": best_cpu,
        "rate": work.units / best,
        "calibration": {
            "name": work.calibration.name,
            "unit": work.calibration.unit,
            "rate": calib_units / cbest,
            "rate_cpu": calib_units / cbest_cpu,
        },
        # The gated figure: work per CPU-second over calibration work per CPU-second (higher is faster).
        "normalised": (work.units / best_cpu) / (calib_units / cbest_cpu),
        "normalised_wall": (work.units / best) / (calib_units / cbest),
        "figure": {
            "value": value,
            "text": work.figure_fmt.format(value),
            "target": work.target.text if work.target else None,
            "met": work.target.met(value) if work.target else None,
        },
        "counters": m.counters,
        "info": work.info,
    }


# ------------------------------------------------------------------------------------------ benchmarks
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "engine_overhead": {"quick": {"processes": 8, "ops": 5_000}, "large": {"processes": 16, "ops": 20_000}},
    "collective_evals": {"quick": {"n": 1_000_000}, "large": {"n": 4_000_000}},
    "power_thermal": {"quick": {"classes": 64, "bins": 50_000}, "large": {"classes": 64, "bins": 100_000}},
    "trace_write": {"quick": {"events": 300_000}, "large": {"events": 10_000_000}},
    "trace_analyze": {"quick": {"events": 300_000}, "large": {"events": 10_000_000}},
}


class _NoComm:
    """Comm model stand-in for the engine benchmark: it issues no collectives."""

    def time(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("the engine benchmark issues no collectives")


def bench_engine(processes: int, ops: int) -> Work:
    """The machine API (stream bookkeeping, cost model, activity recording) vs plain simpy timeouts."""
    import simpy

    from simcore.activity import ActivityRecorder
    from simcore.cluster import Cluster
    from simcore.engine import Machine
    from simcore.profile import PROFILES_DIR, load_profile

    profile = load_profile(PROFILES_DIR / "gen2.yaml")
    cluster = Cluster(profile, racks=1)
    work_items = ((1e12, 1e9, 4096.0, 0), (1e9, 1e9, 0.0, 2))

    def run() -> dict[str, int]:
        env = simpy.Environment()
        # As in a run: blocks go to sinks, the recorder keeps no table (RunOptions.keep_events=False).
        machine = Machine(env, profile, cluster, _NoComm(), recorder=ActivityRecorder(keep=False))
        for c in range(processes):
            machine.add_class(f"c{c}", np.array([c]))

        def proc(cls: int) -> Iterator[Any]:
            for _ in range(ops):
                yield machine.compute_fused(cls, work_items, dtype="bf16", name="gemm")

        for c in range(processes):
            env.process(proc(c))
        env.run()
        machine.recorder.flush()  # converting the open rows to a block is part of recording them
        return {"events": processes * ops, "activity_rows": machine.recorder.rows}

    n = processes * ops
    same_shape = Calibration(
        "simpy (same shape)", "events", n, lambda: plain_simpy(processes, ops)
    )  # the ratio to it is the engine's overhead per event
    return Work(
        run=run,
        units=n,
        unit="events",
        calibration=same_shape,
        figure=lambda best, cbest: best / cbest,
        figure_fmt="{:.2f}x plain simpy",
        target=Target("<=", 2.0, "<= 2x"),
        warmup=lambda: bench_engine_warm(profile, cluster),
        info={"processes": processes, "ops": ops},
    )


def bench_engine_warm(profile: Any, cluster: Any) -> None:
    """Compile kernels and fill the cost-model path once, outside the timing."""
    import simpy

    from simcore.engine import Machine

    env = simpy.Environment()
    machine = Machine(env, profile, cluster, _NoComm())
    machine.add_class("w", np.array([0]))

    def proc() -> Iterator[Any]:
        for _ in range(10):
            yield machine.compute_fused(0, ((1e12, 1e9, 4096.0, 0),), dtype="bf16", name="gemm")

    env.process(proc())
    env.run()


def _spread_sizes(n: int) -> np.ndarray:
    """Message sizes 1 B .. 16 GiB, log-spaced and shuffled by a fixed permutation (no RNG: counters and
    answers must not depend on the numpy version)."""
    exponents = np.linspace(0.0, 34.0, n)
    perm = (np.arange(n, dtype=np.int64) * 7919) % n if math.gcd(7919, n) == 1 else np.arange(n)
    return 2.0 ** exponents[perm]


def bench_collective_evals(n: int) -> Work:
    """One vectorised ``CollectiveModel.times`` call over n sizes (every algorithm x protocol per size)."""
    from simcore.collectives import CollectiveModel
    from simcore.profile import PROFILES_DIR, load_profile

    model = CollectiveModel(load_profile(PROFILES_DIR / "h100-dgx.yaml"))
    layout = model.layout_for(1024)
    sizes = _spread_sizes(n)

    def run() -> dict[str, int]:
        res = model.times("allreduce", sizes, layout)
        return {"evaluations": len(res.time_s)}

    return Work(
        run=run,
        units=n,
        unit="evaluations",
        calibration=NUMPY_CALIBRATION,
        figure=lambda best, _c: n / best,
        figure_fmt="{:,.0f} evals/s",
        target=Target(">=", 1e6, ">= 1,000,000/s"),
        info={"ranks": 1024, "profile": "h100-dgx"},
    )


def bench_allreduce(ranks: int, repeat: int = 1000) -> Work:
    """A fresh model + the group layout from the cluster + one 1 GiB hierarchical all-reduce, ``repeat``
    times per run (one op takes ~40 us: far too short to time alone on a noisy machine)."""
    from simcore.cluster import Cluster
    from simcore.collectives import CollectiveModel
    from simcore.profile import PROFILES_DIR, load_profile

    profile = load_profile(PROFILES_DIR / "h100-dgx.yaml")
    cluster = Cluster(profile, racks=-(-ranks // profile.gpus_per_rack))

    def run() -> dict[str, int]:
        for _ in range(repeat):
            model = CollectiveModel(profile, cluster)
            layout = model.layout_for(ranks)
            t = model.time("allreduce", float(GIB), layout, algo="hier").time_s
            if not t > 0:  # pragma: no cover - a broken model, not a slow one
                raise AssertionError("all-reduce time must be positive")
        return {"collectives": repeat, "ranks": ranks}

    return Work(
        run=run,
        units=repeat,
        unit="collectives",
        calibration=SMALL_ARRAY_CALIBRATION,
        figure=lambda best, _c: best / repeat * 1e3,
        figure_fmt="{:.3f} ms",
        target=Target("<", 10.0, "< 10 ms"),
        info={"ranks": ranks, "nbytes": GIB, "profile": "h100-dgx", "algo": "hier"},
    )


def bench_power_thermal(classes: int, bins: int) -> Work:
    """Activity intervals -> per-GPU power (fused binning kernel) -> RC thermal, into reused buffers."""
    from simcore.kernels import power as pw
    from simcore.kernels import thermal as th

    dt_s = 1e-3
    s, e, k, c, lv = synthetic_intervals(classes, bins, dt_s)
    weights = np.tile(np.array([0.6, 0.25, 0.1, 0.05]), (classes, 1))
    clock = np.ones((classes, bins))
    clock[::4] = 0.6 + 0.4 * ((np.arange(bins) // 100) % 7) / 6.0  # a quarter throttled, per 100-bin tick
    per = {name: pw.per_class(v, classes) for name, v in (("idle", 100.0), ("peak", 1200.0), ("kappa", 2.5))}
    th_args = (
        np.full((classes, bins), 40.0),
        pw.per_class(0.02, classes),
        pw.per_class(0.015, classes),
        pw.per_class(30.0, classes),
        pw.per_class(1500.0, classes),
        pw.per_class(40.0, classes),
        pw.per_class(40.0, classes),
        dt_s,
    )
    bufs = [np.empty((classes, bins)) for _ in range(4)]

    def run() -> dict[str, int]:
        power, _ = pw.activity_power_into(
            s,
            e,
            k,
            c,
            lv,
            weights,
            per["idle"],
            per["peak"],
            clock,
            per["kappa"],
            0.0,
            dt_s,
            bufs[0],
            bufs[1],
        )
        th.rc_thermal_into(power, *th_args, bufs[2], bufs[3])
        return {"samples": classes * bins, "intervals": len(s)}

    return Work(
        run=run,
        units=classes * bins,
        unit="samples",
        calibration=NUMPY_CALIBRATION,
        figure=lambda best, _c: classes * bins / best,
        figure_fmt="{:,.0f} samples/s",
        target=Target(">=", 50e6, ">= 50M/s"),
        rounds=5,
        info={"classes": classes, "bins": bins, "intervals": len(s)},
    )


def synthetic_intervals(
    classes: int, bins: int, dt_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Alternating compute (tensor 0.9, HBM 0.5) and communication (NVLink 0.8, NIC 0.6) phases per class,
    ~8 ms and ~4 ms long, varied by integer hashing (no RNG, so the interval count is a fixed counter)."""
    from simcore.kernels import power as pw

    horizon = bins * dt_s
    cols: list[list[np.ndarray]] = [[], [], [], [], []]
    for kk in range(classes):
        n_phases = int(horizon / (12 * dt_s) * 1.3) + 4
        i = np.arange(2 * n_phases, dtype=np.int64)
        jitter = ((i * 2654435761 + kk * 40503) % 1000) / 1000.0  # in [0, 1)
        dur = np.where(i % 2 == 0, 8 * dt_s, 4 * dt_s) * (0.5 + jitter)
        t = np.concatenate([[0.0], np.cumsum(dur)]) + (kk % 10) * dt_s
        t = t[t < horizon + 20 * dt_s]
        start, end = t[:-1], t[1:]
        compute = np.arange(start.size) % 2 == 0
        for ch, mask, level in (
            (pw.CH_TENSOR, compute, 0.9),
            (pw.CH_HBM, compute, 0.5),
            (pw.CH_SCALE_UP, ~compute, 0.8),
            (pw.CH_SCALE_OUT, ~compute, 0.6),
        ):
            m = int(mask.sum())
            for col, val in zip(
                cols, (start[mask], end[mask], np.full(m, kk), np.full(m, ch), np.full(m, level)), strict=True
            ):
                col.append(val)
    s, e, k, c, lv = (np.concatenate(col) for col in cols)
    return s, e, k.astype(np.int64), c.astype(np.int64), lv.astype(np.float64)


def bench_trace_write(events: int) -> Work:
    """Rows through ``TraceWriter.append_events`` + ``close`` in the recorder's 65,536-row blocks."""
    from simcore.trace import TraceWriter, synthetic_events

    rows, _ends, _names = synthetic_events(events, n_classes=64, n_steps=4)
    block = 65536
    tmp = tempfile.TemporaryDirectory(prefix="racksim-bench-")
    target = Path(tmp.name) / "trace.h5"

    def run() -> dict[str, int]:
        w = TraceWriter(target)
        nbytes = 0
        for i in range(0, len(rows), block):
            part = rows[i : i + block]
            w.append_events(part)
            nbytes += part.nbytes
        w.close()
        return {"rows": len(rows), "bytes_appended": nbytes}

    return Work(
        run=run,
        units=len(rows),
        unit="rows",
        calibration=NUMPY_CALIBRATION,
        figure=lambda best, _c: len(rows) / best,
        figure_fmt="{:,.0f} rows/s",
        rounds=5 if len(rows) <= 1_000_000 else 3,
        info={"rows": len(rows)},
        close=tmp.cleanup,
    )


def bench_trace_analyze(events: int) -> Work:
    """``analyze`` (the report behind ``racksim analyze``) over a synthetic trace of ``events`` rows."""
    from simcore.report import analyze
    from simcore.trace import write_synthetic_trace

    tmp = tempfile.TemporaryDirectory(prefix="racksim-bench-")
    path = write_synthetic_trace(Path(tmp.name) / "trace.h5", events, n_classes=64, n_steps=4)

    def run() -> dict[str, int]:
        report = analyze(path)
        return {"events": int(report["events"]), "classes": len(report["classes"])}

    probe = run()
    n = probe["events"]
    return Work(
        run=run,
        units=n,
        unit="events",
        calibration=NUMPY_CALIBRATION,
        figure=lambda best, _c: best * 10_000_000 / n,
        figure_fmt="{:.2f} s per 10M events",
        target=Target("<", 10.0, "< 10 s per 10M"),
        rounds=5 if n <= 1_000_000 else 3,
        info={"events": n},
        close=tmp.cleanup,
    )


def bench_training(
    case: RunCase, target: Target | None, warmup: RunCase | None = None, rounds: int = 3
) -> Work:
    """One simulated job end to end (profile, cluster, simpy run, power/thermal, summary; no trace).

    The first run happens here, in preparation: it tells the events per run and its time is kept as
    ``first_run_s`` (cold memos in this process), the figure a one-off command-line user sees.
    """
    tmp = tempfile.TemporaryDirectory(prefix="racksim-bench-")

    def run() -> dict[str, int]:
        s = case.run(Path(tmp.name)).summary
        return {
            "events": int(s["events"]),  # rows of the activity table
            "collective_calls": int(sum(s["collective_algorithms"].values())),
            "gpus": int(s["gpus"]),
        }

    def warm() -> None:
        if warmup is not None:
            warmup.run(Path(tmp.name))

    t0 = time.perf_counter()
    counters = run()  # the first run in this process (cold memos): also tells the events per run
    first_run_s = time.perf_counter() - t0
    return Work(
        run=run,
        units=counters["events"],
        unit="events",
        calibration=SIMPY_CALIBRATION,
        figure=lambda best, _c: best,
        figure_fmt="{:.2f} s",
        target=target,
        warmup=warm,
        rounds=rounds,
        info={"case": case.describe(), "first_run_s": first_run_s},
        close=tmp.cleanup,
    )


def bench_power_share(case: RunCase, rounds: int = 5) -> Work:
    """What the power/thermal/facility model adds to a training run: its share of the run's wall time
    (``RunResult.power_wall_s``; converting activity rows is the recorder's work and not counted)."""
    tmp = tempfile.TemporaryDirectory(prefix="racksim-bench-")
    shares: list[float] = []

    def run() -> dict[str, int]:
        result = case.run(Path(tmp.name))
        shares.append(result.power_wall_s / result.wall_s)
        return {"events": int(result.summary["events"])}

    def warm() -> None:  # memos and numba; its share is not a measurement
        run()
        shares.clear()

    counters = run()
    shares.clear()
    return Work(
        run=run,
        units=counters["events"],
        unit="events",
        calibration=SIMPY_CALIBRATION,
        figure=lambda _best, _c: statistics.median(shares) * 100.0,
        figure_fmt="{:.1f} % of the run",
        target=Target("<", 20.0, "< 20 %"),
        rounds=rounds,
        warmup=warm,
        info={"case": case.describe()},
        close=tmp.cleanup,
    )


# A full-fidelity run that records ~10.2 million activity rows (llama3-8b TP8 PP4 on 32 gen1 GPUs, 66
# steps) with its HDF5 trace: the bounded-memory check of the trace issue.
RSS_RUN = (
    "import resource, sys, tempfile\n"
    "from pathlib import Path\n"
    "from simcore.runner import RunOptions, run\n"
    "with tempfile.TemporaryDirectory() as d:\n"
    "    r = run(RunOptions(profile='gen1.yaml', workload='llama3-8b', racks=1, steps=66, fidelity='full',\n"
    "            out=Path(d), sets=['parallelism.tp=8', 'parallelism.pp=4', 'parallelism.dp=1',\n"
    "            'batch.global_seqs=32']))\n"
    "    print(r.summary['events'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def bench_run_rss() -> Work:
    """Peak resident memory of a 10-million-event run writing its trace (a fresh process, so the
    figure is that run's own peak)."""
    import subprocess

    peaks: list[float] = []

    def run() -> dict[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", RSS_RUN], check=True, capture_output=True, text=True
        ).stdout.split()
        peaks.append(float(out[-1]) * 1024.0)  # ru_maxrss is in KiB on Linux
        return {"events": int(out[-2])}

    return Work(
        run=run,
        units=1,
        unit="runs",
        calibration=SIMPY_CALIBRATION,
        figure=lambda _best, _c: max(peaks) / 1e9,
        figure_fmt="{:.2f} GB peak RSS",
        target=Target("<", 1.0, "< 1 GB"),
        rounds=1,
    )


def benchmarks() -> list[BenchDef]:
    """The speed suites, in table order. ``scales`` says which of quick / large run each one."""

    def sized(name: str, fn: Callable[..., Work]) -> Callable[[str], Work]:
        return lambda scale: fn(**SIZES[name][scale])

    full_64 = RunCase("gen1.yaml", SPEC_8B_PP4_64, fidelity="full")
    return [
        BenchDef(
            "engine_overhead",
            "machine API events/s vs plain simpy doing the same P x K waits (overhead per event)",
            SCALES,
            sized("engine_overhead", bench_engine),
        ),
        BenchDef(
            "collective_evals",
            "collective-time evaluations/s: one vectorised all-reduce call, every algorithm x protocol",
            SCALES,
            sized("collective_evals", bench_collective_evals),
        ),
        BenchDef(
            "allreduce_1gib_4096",
            "fresh model + layout + 1 GiB hierarchical all-reduce over 4,096 ranks (h100-dgx)",
            SCALES,
            lambda _s: bench_allreduce(4096),
        ),
        BenchDef(
            "allreduce_1gib_65536",
            "fresh model + layout + 1 GiB hierarchical all-reduce over 65,536 ranks (h100-dgx)",
            SCALES,
            lambda _s: bench_allreduce(65536),
        ),
        BenchDef(
            "train_llama3_8b_gen2",
            "training step: llama3-8b, 1 step on one gen2 rack (72 GPUs, TP 8 with SP, TP collectives exposed)",
            SCALES,
            lambda _s: bench_training(
                RunCase("gen2.yaml", "llama3-8b", sets=BENCH_8B_LAYOUT), None, rounds=5
            ),
        ),
        BenchDef(
            "train_llama3_405b_16k_gen1",
            "training step: llama3-405b on 16,384 gen1 GPUs (TP8 PP16 DP128, 2,048 x 8,192-token seqs)",
            SCALES,
            lambda _s: bench_training(RunCase("gen1.yaml", SPEC_405B_16K), Target("<", 2.0, "< 2 s")),
        ),
        BenchDef(
            "train_llama3_405b_131k_gen3",
            "training step: llama3-405b on 131,072 gen3 GPUs (TP8 PP16 DP1024, 16,384 seqs)",
            ("large",),
            lambda _s: bench_training(RunCase("gen3.yaml", SPEC_405B_131K), Target("<", 3.0, "< 3 s")),
        ),
        BenchDef(
            "train_full_fidelity_64gpu",
            "--fidelity full: llama3-8b TP8 PP4 DP2 on 64 gen1 GPUs (every rank simulated)",
            ("quick",),
            lambda _s: bench_training(full_64, None),
        ),
        BenchDef(
            "train_full_fidelity_1024gpu",
            "--fidelity full: llama3-8b TP8 PP4 DP32 on 1,024 gen1 GPUs (every rank simulated)",
            ("large",),
            lambda _s: bench_training(
                RunCase("gen1.yaml", SPEC_8B_PP4_1K, fidelity="full"),
                Target("<", 60.0, "< 60 s"),
                warmup=full_64,
                rounds=1,
            ),
        ),
        BenchDef(
            "power_share",
            "power/thermal/facility model's share of a training run's wall time (gen2, llama3-70b, 2 steps)",
            SCALES,
            lambda _s: bench_power_share(RunCase("gen2.yaml", "llama3-70b", steps=2)),
        ),
        BenchDef(
            "run_10m_events_rss",
            "peak RSS of a run recording 10.2 M events with its HDF5 trace (llama3-8b full fidelity, 66 steps)",
            ("large",),
            lambda _s: bench_run_rss(),
        ),
        BenchDef(
            "power_thermal",
            "power/thermal kernels: intervals -> GPU W -> RC temperatures, (class x 1 ms bin) samples/s",
            SCALES,
            sized("power_thermal", bench_power_thermal),
        ),
        BenchDef(
            "trace_write",
            "HDF5 trace writer: event rows/s through append_events + close (gzip on worker threads)",
            SCALES,
            sized("trace_write", bench_trace_write),
        ),
        BenchDef(
            "trace_analyze",
            "`racksim analyze` over a synthetic trace (64 pipeline stages, 4 steps)",
            SCALES,
            sized("trace_analyze", bench_trace_analyze),
        ),
    ]


# -------------------------------------------------------------------------------------- comparison
@dataclass
class Verdict:
    """One benchmark against its baseline entry."""

    name: str
    baseline: float | None
    now: float
    slowdown: float | None
    counter_changes: list[Change]
    note: str = ""

    def failed(self, threshold: float) -> bool:
        return (
            bool(self.counter_changes)
            or bool(self.note)
            or (self.slowdown is not None and self.slowdown > threshold)
        )

    def status(self, threshold: float) -> str:
        if self.note:
            return self.note
        parts = []
        if self.slowdown is not None and self.slowdown > threshold:
            parts.append(f"SLOWER > {threshold:g}x")
        if self.counter_changes:
            parts.append("WORK CHANGED")
        if self.baseline is None:
            return "new (no baseline)"
        return ", ".join(parts) or "ok"


def compare(record: dict[str, Any], base: dict[str, Any] | None) -> Verdict:
    """Normalised speed (higher is faster) and exact work counters against one baseline entry."""
    now = float(record["normalised"])
    if base is None:
        return Verdict(record["name"], None, now, None, [])
    note = ""
    if base.get("calibration", {}).get("name") != record["calibration"]["name"]:
        note = "CALIBRATION CHANGED (update the baseline)"
    changes = diff_values(base.get("counters", {}), record["counters"], "counters", rtol=0.0)
    b = float(base["normalised"])
    slowdown = b / now if now > 0 else math.inf
    return Verdict(record["name"], b, now, slowdown, changes, note)


def load_baseline(path: Path) -> dict[str, Any]:
    """A baseline file: ``{format, version, quick: {machine, benchmarks}, large: {...}}``."""
    if not Path(path).is_file():
        raise ConfigError(
            "baseline file not found",
            path="--compare",
            value=str(path),
            expected="a file written by `python run_sim.py bench update-baseline`",
        )
    data = _load_json(Path(path))
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise ConfigError(
            "not a racksim benchmark baseline", file=str(path), expected=f'"format": "{BASELINE_FORMAT}"'
        )
    return data


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (no host names)."""
    import numba
    import simpy

    return {
        "python": platform.python_version(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "simpy": getattr(simpy, "__version__", "?"),
    }


def run_suite(
    scale: str,
    only: list[str] | None = None,
    baseline: dict[str, Any] | None = None,
    threshold: float = THRESHOLD,
    retries: int = 2,
    say: Callable[[str], None] = lambda _m: None,
    defs: list[BenchDef] | None = None,
    passes: int = 1,
) -> tuple[list[dict[str, Any]], list[Verdict] | None]:
    """Measure the benchmarks of one scale; with a baseline, re-measure (up to ``retries`` times) any that
    look slower than the threshold before calling it a regression. ``passes`` > 1 measures each one that
    many times and keeps the median pass (``update-baseline`` uses 3): a baseline recorded in one lucky
    quiet moment would make the gate flaky, one recorded in a noisy moment would loosen it."""
    defs = [d for d in (defs or benchmarks()) if scale in d.scales]
    defs = _select(defs, only, lambda d: d.name)
    entries = (baseline or {}).get(scale, {}).get("benchmarks", {}) if baseline is not None else None
    records: list[dict[str, Any]] = []
    verdicts: list[Verdict] = []
    for d in defs:
        t0 = time.perf_counter()
        say(f"{d.name}: preparing")
        try:
            rec, v = _measure_one(d, scale, entries, threshold, retries, say, passes)
        except RacksimError as exc:  # e.g. the job no longer fits in memory: a failed benchmark, not a crash
            rec = {"name": d.name, "title": d.title, "scale": scale, "error": f"{type(exc).__name__}: {exc}"}
            v = Verdict(d.name, None, math.nan, None, [], note="ERROR")
        records.append(rec)
        if v is not None:
            verdicts.append(v)
        shown = rec["error"] if "error" in rec else rec["figure"]["text"]
        say(f"{d.name}: {shown} ({time.perf_counter() - t0:.1f} s)")
    return records, (verdicts if entries is not None else None)


def _measure_one(
    d: BenchDef,
    scale: str,
    entries: dict[str, Any] | None,
    threshold: float,
    retries: int,
    say: Callable[[str], None],
    passes: int = 1,
) -> tuple[dict[str, Any], Verdict | None]:
    work = d.prepare(scale)
    try:
        m = measure(work)
        if passes > 1:
            # A baseline: the median pass, a typical figure (neither the luckiest nor a bad moment).
            runs = [m, *(measure(work) for _ in range(passes - 1))]
            runs.sort(key=lambda x: summarize_measurement(d, scale, work, x)["normalised"])
            m = runs[len(runs) // 2]
        rec = summarize_measurement(d, scale, work, m)
        if entries is None:
            return rec, None
        v = compare(rec, entries.get(d.name))
        tries = 0
        while v.slowdown is not None and v.slowdown > threshold and tries < retries:
            tries += 1
            say(f"{d.name}: {v.slowdown:.2f}x slower than the baseline; re-measuring ({tries}/{retries})")
            m = m.merge(measure(work))
            rec = summarize_measurement(d, scale, work, m)
            v = compare(rec, entries.get(d.name))
        return rec, v
    finally:
        if work.close is not None:
            work.close()


def format_table(
    records: list[dict[str, Any]], verdicts: list[Verdict] | None, scale: str, threshold: float
) -> str:
    """The table ``bench`` prints: figure vs target, then normalised now vs baseline and the slowdown."""
    by_name = {v.name: v for v in verdicts or []}
    header = ("benchmark", "figure", "target", "calibration", "now", "baseline", "slowdown", "status")
    rows: list[tuple[str, ...]] = []
    for rec in records:
        if "error" in rec:
            rows.append((rec["name"], "did not run (below)", "-", "-", "-", "-", "-", "ERROR"))
            continue
        fig = rec["figure"]
        target = "-" if fig["target"] is None else f"{fig['target']} {'met' if fig['met'] else 'MISSED'}"
        v = by_name.get(rec["name"])
        rows.append(
            (
                rec["name"],
                fig["text"],
                target,
                rec["calibration"]["name"],
                f"{rec['normalised']:.4g}",
                "-" if v is None or v.baseline is None else f"{v.baseline:.4g}",
                "-" if v is None or v.slowdown is None else f"{v.slowdown:.2f}x",
                "measured" if v is None else v.status(threshold),
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"racksim bench ({scale})"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for v in verdicts or []:
        for ch in v.counter_changes:
            lines.append(f"  {v.name}: work counter {ch.render()}")
    for rec in records:
        if "error" in rec:
            lines.append(f"  {rec['name']}: {rec['error']}")
    lines.append(
        "now, baseline: work per CPU-second / calibration work per CPU-second, same process (higher is "
        "faster); slowdown = baseline / now.\n"
        f"Fails on slowdown > {threshold:g}x (after re-measuring), a changed work counter or an error; "
        "targets are informational (they depend on the machine)."
    )
    return "\n".join(lines)


def _write_baseline(path: Path, scale: str, records: list[dict[str, Any]], merge: bool) -> None:
    data: dict[str, Any] = {"format": BASELINE_FORMAT, "version": 1}
    if Path(path).is_file():
        old = load_baseline(path)
        data.update({k: v for k, v in old.items() if k in SCALES})
    section = data.get(scale, {}) if merge else {}
    entries = dict(section.get("benchmarks", {}))
    for rec in records:
        if "error" in rec:
            continue
        entries[rec["name"]] = {
            k: rec[k]
            for k in (
                "title",
                "unit",
                "normalised",
                "normalised_wall",
                "rate",
                "calibration",
                "counters",
                "figure",
                "best_s",
                "best_cpu_s",
            )
        }
    data[scale] = {
        "machine": machine_info(),
        "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "threshold": THRESHOLD,
        "benchmarks": dict(sorted(entries.items())),
    }
    write_json(path, data)


# ====================================================================================================== CLI
ACTIONS = ("run", "check-golden", "update-golden", "update-baseline", "list")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="regression gates: speed benchmarks vs a baseline, and golden answers",
        description="Run the speed benchmarks (normalised by a calibration loop in the same process) and "
        "compare them with a baseline, or check / update the golden answers in benchmarks/golden/.",
    )
    p.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=ACTIONS,
        help="run (default): measure and print the table; check-golden / update-golden: the exact answers; "
        "update-baseline: record the speed baseline; list: what each benchmark and golden case is",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="scale", action="store_const", const="quick", help="CI sizes (default)")
    size.add_argument("--large", dest="scale", action="store_const", const="large", help="the target sizes")
    p.set_defaults(scale="quick")
    p.add_argument(
        "--compare", metavar="BASELINE", type=Path, default=None, help="baseline JSON to gate against"
    )
    p.add_argument("--json", metavar="PATH", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--only", metavar="NAMES", default=None, help="comma-separated names or globs to run")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="allowed slowdown (default 1.5)")
    p.add_argument(
        "--retries", type=int, default=2, help="re-measurements before a slowdown counts (default 2)"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=BASELINE_PATH,
        help="file update-baseline writes (default benchmarks/baseline.json)",
    )
    p.add_argument(
        "--golden-dir", type=Path, default=GOLDEN_DIR, help="golden answers (default benchmarks/golden)"
    )
    return p


def _say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``bench ACTION``: 0 pass, 1 regression or changed answer, 2 bad input."""
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only is not None else None
    if getattr(args, "retries", 0) < 0:
        raise ConfigError("must not be negative", path="--retries", value=args.retries, expected="0 or more")
    if only == []:  # `--only ""` is a slip, not "everything"
        raise ConfigError(
            "empty --only", path="--only", value=args.only, expected="names or globs, comma-separated"
        )
    try:
        if args.threshold <= 1.0:
            raise ConfigError("threshold must be above 1", path="--threshold", value=args.threshold)
        if args.action == "check-golden":
            return check_golden(args.golden_dir, only, say=_say)
        if args.action == "update-golden":
            return update_golden(args.golden_dir, only, say=_say)
        if args.action == "list":
            return _list()
        baseline = load_baseline(args.compare) if args.compare is not None else None
        passes = 3 if args.action == "update-baseline" else 1
        records, verdicts = run_suite(
            args.scale, only, baseline, args.threshold, args.retries, _say, passes=passes
        )
        print(format_table(records, verdicts, args.scale, args.threshold))
        failed = [v.name for v in verdicts or [] if v.failed(args.threshold)]
        failed += [r["name"] for r in records if "error" in r and r["name"] not in failed]
        if args.json is not None:
            write_json(
                args.json,
                {
                    "format": "racksim-bench-results",
                    "scale": args.scale,
                    "machine": machine_info(),
                    "threshold": args.threshold,
                    "results": {r["name"]: r for r in records},
                    "comparison": None
                    if verdicts is None
                    else {
                        v.name: {
                            "baseline": v.baseline,
                            "now": v.now,
                            "slowdown": v.slowdown,
                            "counter_changes": [c.render() for c in v.counter_changes],
                            "status": v.status(args.threshold),
                        }
                        for v in verdicts
                    },
                    "failed": failed,
                },
            )
        if args.action == "update-baseline":
            _write_baseline(args.baseline, args.scale, records, merge=only is not None)
            print(f"baseline ({args.scale}) written to {args.baseline}")
            if failed:
                print(f"not recorded (failed to run): {', '.join(failed)}")
            return 1 if failed else 0
        if failed:
            print(f"speed gate FAILED: {', '.join(failed)}")
            return 1
        if verdicts is not None:
            print(f"speed gate passed against {args.compare}")
        return 0
    except RacksimError as exc:
        print(f"racksim: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _list() -> int:
    for d in benchmarks():
        print(f"{d.name:<30} [{'/'.join(d.scales)}]  {d.title}")
    print()
    for gc in golden_cases():
        c = gc.case
        wl = c.workload if isinstance(c.workload, str) else c.workload["name"]
        extra = ", ".join([*c.sets, *([c.fidelity] if c.fidelity != "representative" else [])])
        print(
            f"golden {gc.id:<36} {c.profile} x {wl}, {plural(c.steps, 'step')}{', ' + extra if extra else ''}"
        )
    return 0
