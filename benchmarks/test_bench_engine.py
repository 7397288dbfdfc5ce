"""Engine overhead: the machine API against plain simpy doing the same events, as a ratio in one run.

Both sides run P processes that each wait K times; plain simpy yields ``env.timeout(d)``, racksim
yields ``machine.compute_fused(...)`` (stream bookkeeping, cost-model lookup, activity recording).
The ratio cancels machine speed; the target is at most 2x (issue: performance regression benchmarks).
"""

from __future__ import annotations

import time

import numpy as np
import simpy

from simcore.cluster import Cluster
from simcore.engine import Machine
from simcore.profile import load_profile


class _NoComm:
    def time(self, *args, **kwargs):  # pragma: no cover - no collectives in this stream
        raise AssertionError


def _plain(processes: int, ops: int) -> float:
    env = simpy.Environment()

    def proc():
        for _ in range(ops):
            yield env.timeout(1e-3)

    for _ in range(processes):
        env.process(proc())
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0


def _engine(profile, processes: int, ops: int) -> tuple[float, int]:
    env = simpy.Environment()
    machine = Machine(env, profile, Cluster(profile, racks=1), _NoComm())
    work = ((1e12, 1e9, 4096.0, 0), (1e9, 1e9, 0.0, 2))
    for c in range(processes):
        machine.add_class(f"c{c}", np.array([c]))

    def proc(cls):
        for _ in range(ops):
            yield machine.compute_fused(cls, work, dtype="bf16", name="gemm")

    for c in range(processes):
        env.process(proc(c))
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0, machine.recorder.rows


def test_engine_overhead_vs_plain_simpy(benchmark, scale):
    profile = load_profile("gen2.yaml")
    processes, ops = (16, 20_000) if scale == "large" else (8, 5_000)
    _engine(profile, 2, 10)  # warm numba and the cost-model memo

    def measure():
        plain = min(_plain(processes, ops) for _ in range(3))
        eng, rows = min(_engine(profile, processes, ops) for _ in range(3))
        return plain, eng, rows

    plain, eng, rows = benchmark.pedantic(measure, rounds=1, iterations=1)
    events = processes * ops
    ratio = eng / plain
    benchmark.extra_info.update(
        events=events,
        plain_simpy_events_per_s=events / plain,
        engine_events_per_s=events / eng,
        overhead_ratio=ratio,
        target_ratio=2.0,
    )
    assert rows == events  # deterministic work counter: one activity row per op
    print(f"\nengine: {events / eng:,.0f} ev/s, plain simpy: {events / plain:,.0f} ev/s, ratio {ratio:.2f}x")
