"""``analyze``: the streaming, vectorised breakdown agrees with simcore.analysis and the run's summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simcore.analysis import class_breakdown, step_breakdown
from simcore.report import analyze, covered_until, energy_breakdown, format_report, racks_per_type
from simcore.trace import Series, Trace, write_synthetic_trace
from simcore.trace_cli import main as trace_cli


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_trace(
        tmp_path_factory.mktemp("synth") / "trace.h5", 80_000, n_classes=6, n_steps=3, racks=2
    )


def test_covered_until_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    s = np.sort(rng.uniform(0, 100, 50))
    e = s + rng.uniform(0, 1.5, 50)
    from simcore.analysis import merge_intervals

    ms, me = merge_intervals(s, e)
    pts = rng.uniform(-5, 110, 200)
    grid = np.linspace(-5, 110, 200_001)
    covered = np.zeros_like(grid, dtype=bool)
    for a, b in zip(ms, me, strict=True):
        covered |= (grid >= a) & (grid < b)
    step = grid[1] - grid[0]
    for p in pts[:20]:
        brute = covered[grid < p].sum() * step
        assert covered_until(ms, me, np.array([p]))[0] == pytest.approx(brute, abs=3 * step)


@pytest.mark.parametrize("which", ["real", "synth"])
def test_breakdown_matches_class_breakdown(which: str, real_trace: Path, synth: Path) -> None:
    path = real_trace if which == "real" else synth
    report = analyze(path, chunk_rows=3000)  # small blocks: exercises the streaming merge
    with Trace(path) as tr:
        events = tr.read_events()
        bounds = tr.step_bounds
        weights = tr.multiplicity.astype(float)
        summary = tr.summary()
    assert len(report["classes"]) == len(weights)
    for c, cls in enumerate(report["classes"]):
        for i, (lo, hi) in enumerate(bounds):
            ref = class_breakdown(events, c, lo, hi)
            got = cls["per_step"][i]
            assert got["compute"] == pytest.approx(ref.compute, abs=1e-9)
            assert got["exposed_comm"] == pytest.approx(ref.exposed_comm, abs=1e-9)
            assert got["idle"] == pytest.approx(ref.idle, abs=1e-9)
            for g, v in ref.exposed_by_group.items():
                assert got["exposed_by_group"][g] == pytest.approx(v, abs=1e-9)
    ref = step_breakdown(events, weights, bounds)
    assert report["overall"]["exposed_comm"] == pytest.approx(ref.exposed_comm, abs=1e-9)
    assert report["overall"]["idle"] == pytest.approx(ref.idle, abs=1e-9)
    if which == "real":
        assert report["overall"]["exposed_comm"] == pytest.approx(summary["exposed_comm_fraction"], abs=1e-9)
        assert report["overall"]["idle"] == pytest.approx(summary["bubble_fraction"], abs=1e-9)
        assert report["classes"][0]["place"].startswith("pod0/")
        assert report["overall"]["exposed_by_group"]["pp"] >= 0.0
    for c in report["classes"]:
        assert set(c["exposed_by_group"]) >= {"tp", "dp", "pp", "ep", "cp"}
        assert c["compute"] + c["exposed_comm"] + c["idle"] == pytest.approx(1.0, abs=1e-9)


def test_accumulator_as_a_recorder_sink_matches_step_breakdown(real_trace: Path) -> None:
    """What the runner could use instead of keeping every event: same numbers as analysis.step_breakdown."""
    from simcore.activity import ActivityRecorder
    from simcore.report import BreakdownAccumulator

    with Trace(real_trace) as tr:
        events = tr.read_events()
        bounds = tr.step_bounds
        weights = tr.multiplicity.astype(float)
    acc = BreakdownAccumulator()
    rec = ActivityRecorder(block_rows=500, keep=False)
    rec.add_sink(acc)
    for row in events[:1500].tolist():
        rec.record(*row)
    acc.add(events[1500:])
    rec.flush()
    got, ref = acc.step_breakdown(bounds, weights), step_breakdown(events, weights, bounds)
    assert got.compute == pytest.approx(ref.compute, abs=1e-12)
    assert got.exposed_comm == pytest.approx(ref.exposed_comm, abs=1e-12)
    assert got.idle == pytest.approx(ref.idle, abs=1e-12)
    assert got.exposed_by_group == pytest.approx(ref.exposed_by_group, abs=1e-12)


def test_block_size_does_not_change_the_report(synth: Path) -> None:
    a = analyze(synth, chunk_rows=1 << 20)
    b = analyze(synth, chunk_rows=2048)
    assert json.dumps(a["classes"]) == json.dumps(b["classes"])
    assert a["slowest_collectives"] == b["slowest_collectives"]


def test_slowest_collectives(synth: Path) -> None:
    report = analyze(synth, top=5)
    tops = report["slowest_collectives"]
    assert len(tops) == 5
    durs = [t["duration_s"] for t in tops]
    assert durs == sorted(durs, reverse=True)
    with Trace(synth) as tr:
        ev = tr.read_events()
    comm = ev[(ev["kind"] == 1) | (ev["kind"] == 2)]
    assert durs[0] == pytest.approx(float(np.max(comm["t_end"] - comm["t_start"])))
    first = tops[0]
    assert first["op"] == "allreduce" and first["group"] == "dp"
    assert first["classes"] == 6  # one dp all-reduce seen by every stage, listed once
    assert first["algbw_Bps"] == pytest.approx(first["nbytes"] / first["duration_s"])
    assert {"name", "op", "group", "nbytes", "algbw_Bps", "step", "t_start_s"} <= set(first)


def test_power_and_thermal_stats(synth: Path) -> None:
    report = analyze(synth)
    with Trace(synth) as tr:
        power, thermal = tr.series("power"), tr.series("thermal")
        mult = tr.multiplicity
    assert power is not None and thermal is not None
    p, t = report["power"], report["thermal"]
    it = power.data["it_w"]
    assert p["avg_it_w"] == pytest.approx(float(np.mean(it)))
    assert p["peak_it_w"] == pytest.approx(float(np.max(it)))
    assert p["it_swing"]["swing_w"] == pytest.approx(float(np.ptp(it)))
    assert p["avg_facility_w"] == pytest.approx(float(np.mean(power.data["facility_w"])))
    assert p["pue"] == pytest.approx(p["avg_facility_w"] / p["avg_it_w"])
    assert p["racks"] == 2
    assert t["max_t_junction_c"] == pytest.approx(float(np.max(thermal.data["t_junction_c"])))
    clock = thermal.data["clock_factor"]
    assert t["min_clock_factor"] == pytest.approx(float(np.min(clock)))
    assert t["throttle_time_fraction"] == pytest.approx(float(np.mean((clock < 1).any(axis=1))))
    assert t["throttled_gpu_time_fraction"] == pytest.approx(float(np.mean((clock < 1) @ mult / mult.sum())))
    e = report["energy"]
    dt = 1e-3
    assert sum(e.values()) == pytest.approx(float(np.sum(power.data["facility_w"]) * dt), rel=1e-9)
    assert e["gpu_j"] == pytest.approx(float(np.sum(power.data["gpu_w"] @ mult) * dt), rel=1e-9)
    loss = (power.data["rack_w"] - power.data["rack_it_w"]) @ np.array([2.0])
    assert e["conversion_loss_j"] == pytest.approx(float(np.sum(loss) * dt), rel=1e-9)
    assert e["cooling_j"] == pytest.approx(float(np.sum(power.data["cooling_w"]) * dt), rel=1e-9)


def test_racks_per_type_solved_when_not_stored() -> None:
    t = (np.arange(50) + 0.5) * 0.01
    rack = np.stack([1e5 + 1e4 * np.sin(t * 7), 8e4 + 5e3 * np.cos(t * 3)], axis=1)
    it = rack @ np.array([3.0, 5.0])
    s = Series(t, {"rack_w": rack, "it_w": it}, {}, {})
    np.testing.assert_array_equal(racks_per_type(s), [3.0, 5.0])
    s_bad = Series(t, {"rack_w": rack, "it_w": it * 1.01 + 7.0}, {}, {})
    assert racks_per_type(s_bad) is None


def test_energy_prefers_the_runs_own_bookkeeping() -> None:
    t = (np.arange(4) + 0.5) * 1.0
    s = Series(
        t, {"it_w": np.full(4, 10.0), "gpu_w": np.full((4, 1), 1.0), "facility_w": np.full(4, 12.0)}, {}, {}
    )
    e = energy_breakdown(
        s, np.array([4]), {"gpu_energy_j": 20.0, "it_energy_j": 40.0, "facility_energy_j": 50.0}
    )
    assert e == {"gpu_j": 20.0, "other_it_j": 20.0, "cooling_and_overhead_j": 10.0}


def test_real_trace_power_matches_summary(real_trace: Path) -> None:
    report = analyze(real_trace)
    with Trace(real_trace) as tr:
        summary = tr.summary()
        has_power = tr.series("power") is not None
    if not has_power:
        pytest.skip("this runner writes no power series yet")
    p = report["power"]
    assert p["avg_it_w"] == pytest.approx(summary["avg_it_power_w"], rel=5e-3)
    assert p["peak_it_w"] == pytest.approx(summary["peak_it_power_w"], rel=1e-9)
    e = report["energy"]
    assert sum(e.values()) == pytest.approx(summary["facility_energy_j"], rel=1e-3)


def test_no_series_and_text_report(real_trace: Path, tmp_path: Path) -> None:
    path = write_synthetic_trace(tmp_path / "trace.h5", 3_000, n_classes=2, n_steps=2, series=False)
    report = analyze(path)
    assert report["power"] is None and report["thermal"] is None and report["energy"] is None
    text = format_report(report)
    assert "power / thermal: not in this trace" in text
    assert "stage0" in text and "TP" in text and "idle" in text


def test_cli_json_is_written_atomically(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deep" / "report.json"
    assert trace_cli(["analyze", str(synth), "--json", str(out), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "slowest communication ops (top 3)" in printed and "junction" in printed
    data = json.loads(out.read_text())
    assert len(data["slowest_collectives"]) == 3
    assert data["events"] > 0 and data["steps"] == 3
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_run_directory_stands_for_its_trace(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's --out directory is what users have at hand: analyze, plot and export read its trace.h5;
    a directory without one is said to be a directory, not "no such trace file"."""
    assert trace_cli(["analyze", str(synth), "--top", "3"]) == 0
    from_file = capsys.readouterr().out
    assert trace_cli(["analyze", str(synth.parent), "--top", "3"]) == 0
    assert capsys.readouterr().out == from_file
    (tmp_path / "no-trace").mkdir()
    for command in ("analyze", "plot", "export-perfetto"):
        assert trace_cli([command, str(tmp_path / "no-trace")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no-trace: a directory with no trace.h5" in err, err
