"""The regression gates can fail: a slowed kernel trips the speed check, a changed answer trips the golden
check (naming the key), and identical figures pass.

No wall-clock thresholds: speed is judged only through the gate's own ratio (normalised by a calibration
loop in the same process), and the slowed copies are 50x+ slower against a 1.5x threshold.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simcore import bench
from simcore.kernels import power as pw


# --------------------------------------------------------------------------------------- answers
def test_diff_values_reports_nested_changes_with_old_new_and_relative_change():
    old = {"a": 1.0, "b": {"c": [1.0, 2.0, {"d": 3.0}], "e": "x"}, "wall_time_s": 1.0}
    new = {"a": 1.0, "b": {"c": [1.0, 2.5, {"d": 3.0}], "e": "y"}, "wall_time_s": 99.0}
    changes = bench.diff_values(old, new)
    assert [c.key for c in changes] == ["b.c[1]", "b.e"]
    assert changes[0].old == 2.0 and changes[0].new == 2.5
    assert changes[0].rel == pytest.approx(0.25)
    assert "b.c[1]: 2.0 -> 2.5" in changes[0].render() and "+0.25 relative" in changes[0].render()


def test_diff_values_tolerance_is_1e9_relative():
    assert bench.diff_values({"x": 1.0}, {"x": 1.0 + 1e-12}) == []
    assert bench.diff_values({"x": 1e20}, {"x": 1e20 * (1 + 5e-10)}) == []
    assert [c.key for c in bench.diff_values({"x": 1.0}, {"x": 1.0 + 1e-8})] == ["x"]
    assert bench.diff_values({"x": 0.0}, {"x": 0.0}) == []
    assert [c.key for c in bench.diff_values({"x": 0.0}, {"x": 1e-300})] == ["x"]
    assert bench.diff_values({"x": math.nan}, {"x": math.nan}) == []


def test_diff_values_catches_structure_and_type_changes():
    keys = lambda a, b: [c.key for c in bench.diff_values(a, b)]  # noqa: E731
    assert keys({"x": 1}, {}) == ["x"]
    assert keys({}, {"y": None}) == ["y"]
    assert keys({"l": [1, 2]}, {"l": [1, 2, 3]}) == ["l (length)"]
    assert keys({"x": None}, {"x": 0.0}) == ["x"]
    assert keys({"x": True}, {"x": 1}) == ["x"]
    assert keys({"x": 3}, {"x": 3.0}) == []  # JSON does not keep int vs float for whole numbers
    absent = bench.diff_values({}, {"y": 1})[0].render()
    assert absent == "y: <absent> -> 1"


@pytest.fixture
def one_case(monkeypatch: pytest.MonkeyPatch) -> list[bench.GoldenCase]:
    """The golden machinery on a single small case (llama3-8b, one step, one gen2 rack)."""
    cases = [bench.GoldenCase("gen2__llama3-8b", bench.RunCase("gen2.yaml", "llama3-8b"))]
    monkeypatch.setattr(bench, "golden_cases", lambda: list(cases))
    return cases


def _bench_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="racksim")
    bench.add_parser(parser.add_subparsers(dest="command"))
    return bench.run(parser.parse_args(["bench", *argv]))


def test_golden_check_passes_on_identical_answers_and_names_a_perturbed_key(
    tmp_path: Path, one_case: list[bench.GoldenCase], capsys: pytest.CaptureFixture[str]
):
    gdir = tmp_path / "golden"
    assert _bench_cli(["update-golden", "--golden-dir", str(gdir)]) == 0
    path = gdir / "gen2__llama3-8b.json"
    doc = json.loads(path.read_text())
    assert doc["case"]["profile"] == "gen2.yaml" and "wall_time_s" not in doc["summary"]
    assert not list(gdir.glob(".*.tmp"))  # atomic write left no temporary file
    capsys.readouterr()

    assert _bench_cli(["check-golden", "--golden-dir", str(gdir)]) == 0
    assert "golden check passed" in capsys.readouterr().out

    # Far below 1e-9: still identical.
    doc["summary"]["step_time_s"] *= 1 + 1e-13
    path.write_text(json.dumps(doc))
    assert _bench_cli(["check-golden", "--golden-dir", str(gdir)]) == 0
    capsys.readouterr()

    # A modelling change: one number moves by 1e-6 relative, one nested number by 10 %.
    old_step = doc["summary"]["step_time_s"]
    doc["summary"]["step_time_s"] = old_step * (1 - 1e-6)
    doc["summary"]["workload"]["parallelism"]["tp"] = 4
    path.write_text(json.dumps(doc))
    assert _bench_cli(["check-golden", "--golden-dir", str(gdir)]) == 1
    out = capsys.readouterr().out
    assert "CHANGED gen2__llama3-8b (2 values differ" in out
    assert f"summary.step_time_s: {doc['summary']['step_time_s']!r} -> " in out
    assert "summary.workload.parallelism.tp: 4 -> 1" in out
    assert "golden check FAILED" in out and "update-golden" in out

    # update-golden prints the change and restores agreement.
    assert _bench_cli(["update-golden", "--golden-dir", str(gdir)]) == 0
    out = capsys.readouterr().out
    assert "updated   gen2__llama3-8b (2 values)" in out and "summary.workload.parallelism.tp" in out
    assert _bench_cli(["check-golden", "--golden-dir", str(gdir)]) == 0


def test_golden_check_fails_on_missing_and_stale_files(
    tmp_path: Path, one_case: list[bench.GoldenCase], capsys: pytest.CaptureFixture[str]
):
    gdir = tmp_path / "golden"
    gdir.mkdir()
    assert bench.check_golden(gdir) == 1
    assert "MISSING gen2__llama3-8b" in capsys.readouterr().out
    bench.update_golden(gdir)
    (gdir / "retired-profile__llama3-8b.json").write_text("{}")
    capsys.readouterr()
    assert bench.check_golden(gdir) == 1
    assert "STALE   retired-profile__llama3-8b.json" in capsys.readouterr().out
    bench.update_golden(gdir)
    assert not (gdir / "retired-profile__llama3-8b.json").exists()
    assert bench.check_golden(gdir) == 0


def test_a_golden_case_that_cannot_run_is_reported_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    broken = [bench.GoldenCase("gen2__no-such-model", bench.RunCase("gen2.yaml", "no-such-model"))]
    monkeypatch.setattr(bench, "golden_cases", lambda: broken)
    assert bench.update_golden(tmp_path) == 1
    assert "ERROR     gen2__no-such-model: ConfigError" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.json"))
    assert bench.check_golden(tmp_path) == 1
    assert "ERROR   gen2__no-such-model" in capsys.readouterr().out


def test_every_shipped_profile_has_a_golden_case():
    from simcore.profile import PROFILES_DIR

    ids = {gc.id for gc in bench.golden_cases()}
    for p in PROFILES_DIR.glob("*.yaml"):
        assert f"{p.stem}__llama3-8b" in ids
    assert len(ids) == len(bench.golden_cases())  # unique file names


# ----------------------------------------------------------------------------------------- speed
def slow_activity_power_into(
    start_s: np.ndarray,
    end_s: np.ndarray,
    class_idx: np.ndarray,
    channel_idx: np.ndarray,
    level: np.ndarray,
    weights: np.ndarray,
    idle_w: np.ndarray,
    peak_w: np.ndarray,
    clock_factor: np.ndarray,
    kappa: np.ndarray,
    t0_s: float,
    dt_s: float,
    power_w_out: np.ndarray,
    activity_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A deliberately slow copy of ``pw.activity_power_into``: the same maths in plain Python loops."""
    n_classes, n_bins = power_w_out.shape
    n_ch = weights.shape[1]
    util = [[[0.0] * n_bins for _ in range(n_ch)] for _ in range(n_classes)]
    for i in range(len(start_s)):
        x0 = max((float(start_s[i]) - t0_s) / dt_s, 0.0)
        x1 = min((float(end_s[i]) - t0_s) / dt_s, float(n_bins))
        row = util[int(class_idx[i])][int(channel_idx[i])]
        b = int(x0)
        while b < x1:
            row[b] += float(level[i]) * (min(x1, b + 1.0) - max(x0, float(b)))
            b += 1
    for k in range(n_classes):
        for b in range(n_bins):
            a = sum(float(weights[k, c]) * min(util[k][c][b], 1.0) for c in range(n_ch))
            a = min(max(a, 0.0), 1.0)
            activity_out[k, b] = a
            power_w_out[k, b] = idle_w[k] + (peak_w[k] - idle_w[k]) * a * clock_factor[k, b] ** kappa[k]
    return power_w_out, activity_out


def _power_def(classes: int = 4, bins: int = 2000) -> bench.BenchDef:
    return bench.BenchDef(
        "power_thermal", "test size", ("quick",), lambda _s: bench.bench_power_thermal(classes, bins)
    )


def _baseline_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"quick": {"benchmarks": {r["name"]: r for r in records}}}


def test_slow_copy_is_a_faithful_copy():
    """The slowed kernel computes the same power: only its speed differs."""
    s, e, k, c, lv = bench.synthetic_intervals(3, 500, 1e-3)
    weights = np.tile(np.array([0.6, 0.25, 0.1, 0.05]), (3, 1))
    clock = np.ones((3, 500))
    clock[0] = 0.7
    args = (s, e, k, c, lv, weights, pw.per_class(100.0, 3), pw.per_class(1200.0, 3), clock)
    args += (pw.per_class(2.5, 3), 0.0, 1e-3)
    fast = pw.activity_power_into(*args, np.empty((3, 500)), np.empty((3, 500)))[0]
    slow = slow_activity_power_into(*args, np.empty((3, 500)), np.empty((3, 500)))[0]
    np.testing.assert_allclose(slow, fast, rtol=1e-9, atol=1e-6)


def test_slowed_kernel_trips_the_speed_gate_and_identical_figures_pass(monkeypatch: pytest.MonkeyPatch):
    records, verdicts = bench.run_suite("quick", defs=[_power_def()])
    assert verdicts is None and records[0]["counters"] == {
        "samples": 8000,
        "intervals": records[0]["counters"]["intervals"],
    }
    baseline = _baseline_of(records)

    same = bench.compare(records[0], baseline["quick"]["benchmarks"]["power_thermal"])
    assert same.slowdown == 1.0 and not same.failed(bench.THRESHOLD) and same.status(bench.THRESHOLD) == "ok"

    monkeypatch.setattr(pw, "activity_power_into", slow_activity_power_into)
    slow_records, verdicts = bench.run_suite("quick", baseline=baseline, retries=1, defs=[_power_def()])
    (v,) = verdicts
    assert v.slowdown > 10 * bench.THRESHOLD  # measured ~100x: no noise gets near the threshold
    assert v.failed(bench.THRESHOLD) and not v.counter_changes
    table = bench.format_table(slow_records, verdicts, "quick", bench.THRESHOLD)
    row = next(line for line in table.splitlines() if line.startswith("power_thermal"))
    assert f"{v.slowdown:.2f}x" in row and "SLOWER > 1.5x" in row
    assert slow_records[0]["rounds"] == 2 * records[0]["rounds"]  # re-measured once before failing


def test_cpu_padded_engine_op_trips_the_speed_gate(monkeypatch: pytest.MonkeyPatch):
    """An engine op padded with 0.5 ms of busy CPU (an accidental O(n) per event, say)."""
    from simcore.engine import Machine

    engine = bench.BenchDef("engine_overhead", "test", ("quick",), lambda _s: bench.bench_engine(2, 200))
    records, _ = bench.run_suite("quick", defs=[engine])
    assert records[0]["counters"] == {"events": 400, "activity_rows": 400}
    real = Machine.compute_fused

    def padded(self: Machine, *args: Any, **kwargs: Any) -> Any:
        t = time.process_time() + 5e-4
        while time.process_time() < t:
            pass
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Machine, "compute_fused", padded)
    _, verdicts = bench.run_suite("quick", baseline=_baseline_of(records), retries=0, defs=[engine])
    assert verdicts[0].slowdown > 10 * bench.THRESHOLD and verdicts[0].failed(bench.THRESHOLD)


def test_changed_work_counter_fails_even_when_speed_is_equal():
    records, _ = bench.run_suite("quick", defs=[_power_def(2, 500)])
    base = json.loads(json.dumps(records[0]))
    base["counters"]["intervals"] -= 1
    v = bench.compare(records[0], base)
    assert v.slowdown == 1.0 and v.failed(bench.THRESHOLD) and v.status(bench.THRESHOLD) == "WORK CHANGED"
    table = bench.format_table(records, [v], "quick", bench.THRESHOLD)
    n = records[0]["counters"]["intervals"]
    assert f"power_thermal: work counter counters.intervals: {n - 1} -> {n}" in table


def test_baseline_file_roundtrip_and_cli_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(bench, "benchmarks", lambda: [_power_def(2, 1000)])
    base = tmp_path / "baseline.json"
    assert _bench_cli(["update-baseline", "--baseline", str(base)]) == 0
    data = bench.load_baseline(base)
    entry = data["quick"]["benchmarks"]["power_thermal"]
    assert entry["counters"]["samples"] == 2000 and entry["calibration"]["name"] == "numpy"
    assert data["quick"]["machine"]["cpus"] >= 1
    capsys.readouterr()

    out_json = tmp_path / "results.json"
    assert _bench_cli(["--compare", str(base), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "speed gate passed" in out and "power_thermal" in out
    results = json.loads(out_json.read_text())
    assert results["failed"] == [] and results["comparison"]["power_thermal"]["status"] == "ok"

    monkeypatch.setattr(pw, "activity_power_into", slow_activity_power_into)
    assert _bench_cli(["--compare", str(base), "--retries", "0"]) == 1
    assert "speed gate FAILED: power_thermal" in capsys.readouterr().out


def test_cli_rejects_a_missing_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert _bench_cli(["--compare", str(tmp_path / "nope.json")]) == 2
    assert "baseline file not found" in capsys.readouterr().err
