"""Speed of the trace path: writing events, ``analyze``, ``export-perfetto``, and the trace's share of a run.

Run: ``pytest benchmarks/test_bench_trace.py``. Small by default (about a minute on 2 cores); the sizes
the targets are stated for with ``RACKSIM_BENCH_LARGE=1`` (10 M events written and analyzed, 1 M exported;
several minutes, mostly building the synthetic trace). ``RACKSIM_BENCH_TRACE_EVENTS`` /
``RACKSIM_BENCH_EXPORT_EVENTS`` set the sizes directly.

Targets: writing the trace adds under 10 % to a run; ``analyze`` of 10 M events under 10 s; export of 1 M
events under 20 s. Synthetic traces (``simcore.trace.write_synthetic_trace``: 64 pipeline stages, TP/PP/DP
traffic, power and thermal series) stand in for runs that large; ``benchmark.extra_info`` records rates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simcore.trace import TraceWriter, synthetic_events, write_synthetic_trace

LARGE = os.environ.get("RACKSIM_BENCH_LARGE", "") not in ("", "0")
N_TRACE = int(os.environ.get("RACKSIM_BENCH_TRACE_EVENTS", 10_000_000 if LARGE else 1_000_000))
N_EXPORT = int(os.environ.get("RACKSIM_BENCH_EXPORT_EVENTS", 1_000_000 if LARGE else 200_000))
ANALYZE_S_PER_10M = 10.0
EXPORT_S_PER_1M = 20.0


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_trace(
        tmp_path_factory.mktemp("bench") / "trace.h5", N_TRACE, n_classes=64, n_steps=4
    )


@pytest.fixture(scope="module")
def export_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_trace(
        tmp_path_factory.mktemp("bench") / "trace.h5", N_EXPORT, n_classes=16, n_steps=4
    )


def test_bench_append_events(benchmark: Any, tmp_path: Path) -> None:
    """Rows/s through ``TraceWriter.append_events`` + ``close`` (blocks of 65,536, as the recorder sends)."""
    events, _ends, _names = synthetic_events(N_TRACE, n_classes=64, n_steps=4)
    block = 65536

    def write() -> None:
        w = TraceWriter(tmp_path / "trace.h5")
        for i in range(0, len(events), block):
            w.append_events(events[i : i + block])
        w.close()

    benchmark.pedantic(write, rounds=2 if LARGE else 3, iterations=1)
    rate = len(events) / benchmark.stats.stats.median
    benchmark.extra_info.update(
        events=len(events), rows_per_s=rate, file_mb=(tmp_path / "trace.h5").stat().st_size / 1e6
    )


class _TimedWriter(TraceWriter):
    """A TraceWriter that adds up the wall time its callers spend inside it (on the simulating thread)."""

    spent_s = 0.0

    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            type(self).spent_s += time.perf_counter() - t0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().__init__, *args, **kwargs)

    def append_events(self, block: np.ndarray) -> None:
        self._timed(super().append_events, block)

    def write_table(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().write_table, *args, **kwargs)

    def write_strings(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().write_strings, *args, **kwargs)

    def write_series(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().write_series, *args, **kwargs)

    def write_meta(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().write_meta, *args, **kwargs)

    def close(self) -> Path:
        return self._timed(super().close)


def test_bench_trace_share_of_a_run(benchmark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Time a real run spends in the trace writer, as a fraction of the run (target < 10 %)."""
    import simcore.runner as runner

    monkeypatch.setattr(runner, "TraceWriter", _TimedWriter)
    opts = runner.RunOptions(
        profile="gen2.yaml", workload="llama3-70b", steps=32 if LARGE else 8, out=tmp_path / "r"
    )
    runner.run(opts)  # warm numba caches and imports
    _TimedWriter.spent_s = 0.0
    walls: list[float] = []

    def once() -> None:
        t0 = time.perf_counter()
        runner.run(opts)
        walls.append(time.perf_counter() - t0)

    benchmark.pedantic(once, rounds=3, iterations=1)
    share = _TimedWriter.spent_s / sum(walls)
    no_trace = []
    for _ in range(3):
        t0 = time.perf_counter()
        runner.run(runner.RunOptions(**{**opts.__dict__, "write_trace": False, "out": tmp_path / "n"}))
        no_trace.append(time.perf_counter() - t0)
    events = runner.run(opts).summary["events"]
    benchmark.extra_info.update(
        events=events,
        writer_share=share,
        run_with_trace_s=float(np.median(walls)),
        run_without_trace_s=float(np.median(no_trace)),
    )
    assert share < 0.10, f"the trace writer took {share:.1%} of the run"


def test_bench_analyze(benchmark: Any, big_trace: Path) -> None:
    from simcore.report import analyze

    result = benchmark.pedantic(analyze, args=(big_trace,), rounds=1 if LARGE else 3, iterations=1)
    seconds = benchmark.stats.stats.median
    per_10m = seconds * 10_000_000 / result["events"]
    benchmark.extra_info.update(events=result["events"], seconds=seconds, seconds_per_10M_events=per_10m)
    assert per_10m < ANALYZE_S_PER_10M or seconds < 1.0


def test_bench_export(benchmark: Any, export_trace: Path, tmp_path: Path) -> None:
    from simcore.export import export_perfetto

    out = tmp_path / "t.json"
    result = benchmark.pedantic(
        export_perfetto, args=(export_trace, out), rounds=1 if LARGE else 3, iterations=1
    )
    seconds = benchmark.stats.stats.median
    per_1m = seconds * 1_000_000 / result.events
    benchmark.extra_info.update(
        events=result.events, seconds=seconds, seconds_per_1M_events=per_1m, mb=out.stat().st_size / 1e6
    )
    assert per_1m < EXPORT_S_PER_1M or seconds < 1.0
