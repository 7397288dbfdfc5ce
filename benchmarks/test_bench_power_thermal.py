"""Speed of the power + thermal path: activity intervals -> binned utilisation -> GPU W -> die/plate degC.

Run: ``pytest benchmarks/test_bench_power_thermal.py``. Size via RACKSIM_BENCH_CLASSES / RACKSIM_BENCH_BINS
(default 64 GPU classes x 100k bins of 1 ms). Target: >= 50 million (class x bin) samples/s on one core.

``benchmark.extra_info`` records ``samples_per_s`` (median round; ``samples_per_s_best_round`` too, for busy
machines) and ``ratio_to_numpy_calibration``: samples/s divided by the element rate of a fixed numpy
workload timed in the same process right after, so that a slower or busier machine moves both numbers and
the ratio stays roughly comparable across machines and runs.

Synthetic activity per class: alternating compute phases (tensor 0.9, HBM 0.5; mean 8 ms) and
communication phases (NVLink 0.8, NIC 0.6; ~4 ms), durations varied by integer hashing (`simcore.bench.synthetic_intervals`, shared with `racksim bench`), so
~0.33 intervals per (class x bin). The clock is piecewise constant per 100-bin control tick; a quarter
of the classes run throttled at a varying clock (exercising the pow path), the rest at full clock.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from simcore.bench import synthetic_intervals
from simcore.kernels import power as pw
from simcore.kernels import thermal as th

N_CLASSES = int(os.environ.get("RACKSIM_BENCH_CLASSES", "64"))
N_BINS = int(os.environ.get("RACKSIM_BENCH_BINS", "100000"))
DT_S = 1e-3
TICK_BINS = 100
ROUNDS = 8


def _clock(n_classes: int, n_bins: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_ticks = -(-n_bins // TICK_BINS)
    per_tick = np.ones((n_classes, n_ticks))
    throttled = np.arange(n_classes) % 4 == 0
    per_tick[throttled] = rng.uniform(0.6, 1.0, (int(throttled.sum()), n_ticks))
    return np.ascontiguousarray(np.repeat(per_tick, TICK_BINS, axis=1)[:, :n_bins])


def _numpy_calibration_elems_per_s(n: int = 4_000_000, repeats: int = 5) -> float:
    """Fixed numpy workload (exp, multiply-add, cumulative sum over float64): best element rate of N runs."""
    x = np.linspace(0.0, 1.0, n)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        y = np.exp(-x) * 3.0 + x
        np.cumsum(y, out=y)
        best = min(best, time.perf_counter() - t)
    return n / best


@pytest.fixture(scope="module")
def workload():
    n_classes, n_bins = N_CLASSES, N_BINS
    s, e, k, c, lv = synthetic_intervals(n_classes, n_bins, DT_S)
    weights = np.tile(np.array([0.6, 0.25, 0.1, 0.05]), (n_classes, 1))
    params = dict(
        idle_w=pw.per_class(100.0, n_classes),
        peak_w=pw.per_class(1200.0, n_classes),
        kappa=pw.per_class(2.5, n_classes),
        r_jc=pw.per_class(0.02, n_classes),
        r_cf=pw.per_class(0.015, n_classes),
        c_j=pw.per_class(30.0, n_classes),
        c_cp=pw.per_class(1500.0, n_classes),
        t_init=pw.per_class(40.0, n_classes),
    )
    return dict(
        intervals=(s, e, k, c, lv),
        weights=weights,
        clock=_clock(n_classes, n_bins),
        coolant=np.full((n_classes, n_bins), 40.0),
        **params,
    )


def _path(w: dict, bufs: list[np.ndarray] | None):
    """binning -> activity -> power (fused kernel) -> RC thermal, into reused buffers or freshly allocated."""
    s, e, k, c, lv = w["intervals"]
    args = (s, e, k, c, lv, w["weights"], w["idle_w"], w["peak_w"], w["clock"], w["kappa"], 0.0, DT_S)
    targs = (w["coolant"], w["r_jc"], w["r_cf"], w["c_j"], w["c_cp"], w["t_init"], w["t_init"], DT_S)
    if bufs is None:
        power, _ = pw.activity_power(*args)
        return power, th.rc_thermal(power, *targs)[0]
    power, _ = pw.activity_power_into(*args, bufs[0], bufs[1])
    return power, th.rc_thermal_into(power, *targs, bufs[2], bufs[3])[0]


def _record(benchmark, w: dict, mode: str) -> float:
    calib = _numpy_calibration_elems_per_s()
    samples = N_CLASSES * N_BINS
    median_s = benchmark.stats.stats.median
    rate = samples / median_s
    benchmark.extra_info.update(
        mode=mode,
        n_classes=N_CLASSES,
        n_bins=N_BINS,
        n_intervals=int(w["intervals"][0].size),
        samples_per_s=rate,
        samples_per_s_best_round=samples / benchmark.stats.stats.min,
        numpy_calibration_elems_per_s=calib,
        ratio_to_numpy_calibration=rate / calib,
    )
    print(
        f"\n{mode}: {rate / 1e6:.1f} M samples/s ({N_CLASSES} classes x {N_BINS} bins, "
        f"{w['intervals'][0].size} intervals); numpy calibration {calib / 1e6:.1f} M elem/s; "
        f"ratio {rate / calib:.2f}"
    )
    return rate


def test_bench_power_thermal_path(benchmark, workload):
    """Headline: steady-state engine use, output buffers allocated once and reused every control tick."""
    bufs = [np.empty((N_CLASSES, N_BINS)) for _ in range(4)]
    _path(workload, bufs)  # compile (or load the numba cache) and fault the buffers in
    power, tj = benchmark.pedantic(_path, args=(workload, bufs), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert np.all(power >= 100.0) and np.all(power <= 1200.0)
    assert np.all(np.isfinite(tj)) and tj.max() < 40.0 + 1200.0 * 0.035 + 1e-9
    rate = _record(benchmark, workload, "reused buffers")
    assert rate > 5e6  # sanity only (catches a fall-back to Python loops); the target is 50e6


def test_bench_power_thermal_path_allocating(benchmark, workload):
    """Same path through the allocating API (fresh outputs each call: page faults included)."""
    _path(workload, None)
    _, tj = benchmark.pedantic(_path, args=(workload, None), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert np.all(np.isfinite(tj))
    _record(benchmark, workload, "allocating")
