"""Findings of an audit of the offline trace tools (analyze, plot, export-perfetto) against real traces."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from simcore.plots import timeline_figure
from simcore.report import analyze
from simcore.trace import Series, Trace, write_synthetic_trace


def test_every_2d_series_labels_its_second_axis(real_trace: Path) -> None:
    """docs/trace-format.md: dimension 1 of a 2-D series is labelled `class` or `rack_type`
    (thermal/clock_cause was written with an empty label)."""
    seen = []
    with h5py.File(real_trace) as f:
        for group in ("power", "thermal"):
            for name, ds in f[f"timeseries/{group}"].items():
                if ds.ndim == 2:
                    seen.append(name)
                    assert ds.dims[1].label in ("class", "rack_type"), f"{group}/{name}: {ds.dims[1].label!r}"
        assert f["timeseries/thermal/clock_cause"].dims[1].label == "class"
    assert "clock_cause" in seen


def test_series_weights_are_the_stored_sample_widths() -> None:
    t = np.array([0.0025, 0.0075, 0.0125, 0.01656])  # the last tick split into a wider sample
    width = np.array([0.005, 0.005, 0.005, 0.00612])
    s = Series(t, {"sample_s": width, "it_w": np.ones(4)}, {}, {})
    np.testing.assert_array_equal(s.weights_s(), width)
    # without widths (older traces, the thermal group) the midpoint rule is kept
    s2 = Series(t, {"it_w": np.ones(4)}, {}, {})
    assert s2.weights_s()[-1] != pytest.approx(0.00612)


def test_analyze_energies_are_the_runs_integrals(real_trace: Path) -> None:
    """analyze integrates power over the stored sample widths, as the run does (docs/trace-format.md: energy
    = sum of power x sample_s); it used widths guessed from the sample midpoints, off on the last tick."""
    with h5py.File(real_trace) as f:
        g = f["timeseries/power"]
        width = g["sample_s"][:]
        it_j = float(np.sum(g["it_w"][:] * width))
        facility_j = float(np.sum(g["facility_w"][:] * width))
        summary = json.loads(f["meta/summary_json"][()])
    assert len(np.unique(width)) > 1, "the run's last tick should have samples of another width"
    report = analyze(real_trace, top=0)
    p = report["power"]
    assert p["duration_s"] == pytest.approx(float(np.sum(width)), rel=1e-12)
    assert p["energy_it_j"] == pytest.approx(it_j, rel=1e-12)
    assert p["energy_it_j"] == pytest.approx(summary["it_energy_j"], rel=1e-12)
    assert p["energy_facility_j"] == pytest.approx(facility_j, rel=1e-12)
    assert p["energy_facility_j"] == pytest.approx(summary["facility_energy_j"], rel=1e-12)
    assert report["thermal"]["duration_s"] == pytest.approx(float(np.sum(width)), rel=1e-12)


def _bars(fig) -> int:  # type: ignore[no-untyped-def]
    return sum(len(c.get_paths()) for c in fig.axes[0].collections if isinstance(c, PolyCollection))


def test_timeline_with_more_ops_than_it_draws_says_so_and_ends_where_complete(tmp_path: Path) -> None:
    """The timeline stops reading at its cap; it drew a window of the steps asked for with its later part
    silently blank (a 2 M-op trace: data up to 13.8 s of a 25.8 s window titled 'steps 0-3')."""
    path = write_synthetic_trace(tmp_path / "trace.h5", 20_000, n_classes=4, n_steps=2, series=False)
    cap = 3_000
    with Trace(path) as tr:
        t_lo, t_hi = tr.step_bounds[0][0], tr.step_bounds[1][1]
        fig = timeline_figure(tr, steps=2, max_events=cap)
        ev = tr.read_events(t_lo=t_lo, t_hi=t_hi)
    ax = fig.axes[0]
    assert f"at most {cap:,} ops" in ax.get_title()
    scale = 1e3 if t_hi - t_lo < 2.0 else 1.0
    cut = t_lo + ax.get_xlim()[1] / scale
    assert t_lo < cut < t_hi
    # every op that starts before the cut is drawn, and no more than the cap
    wanted = int(np.sum(ev["t_start"] < cut - 1e-9))
    assert wanted <= _bars(fig) <= cap
    # a window that fits is drawn whole, without the note
    with Trace(path) as tr:
        fig_all = timeline_figure(tr, steps=2, max_events=len(ev) + 1)
    assert "at most" not in fig_all.axes[0].get_title()
    assert _bars(fig_all) == len(ev)


def test_perfetto_counters_start_where_their_samples_start(real_trace: Path, tmp_path: Path) -> None:
    """A Chrome counter holds its value from its timestamp to the next one; a series' time is the sample's
    midpoint, so counters stamped there lagged the ops by half a sample (2.5 ms). They are stamped at the
    sample's start, and each counter begins where the exported ops begin, with the sample covering it."""
    from simcore.export import export_perfetto

    with h5py.File(real_trace) as f:
        g = f["timeseries/power"]
        time_s, width, it_w = g["time"][:], g["sample_s"][:], g["it_w"][:]
        step_ends = f["steps"]["t_end"][:]
    start_s = time_s - 0.5 * width

    def check(doc: dict, lo_s: float) -> None:
        events = [e for e in doc["traceEvents"] if e["ph"] == "C" and e["name"] == "IT power"]
        covering = int(np.searchsorted(start_s, lo_s, side="right") - 1)
        assert events[0]["ts"] == pytest.approx(lo_s * 1e6, abs=1e-3)
        assert events[0]["args"]["kW"] == pytest.approx(it_w[covering] / 1e3)
        later = {round(e["ts"], 3) for e in events[1:]}
        assert later <= {round(x, 3) for x in (np.rint(start_s * 1e9) / 1e3).tolist()}
        clock = [e for e in doc["traceEvents"] if e["ph"] == "C" and e["name"] == "clock factor"]
        assert clock[0]["ts"] == events[0]["ts"]  # the thermal group, on the same time axis

    doc = json.loads(export_perfetto(real_trace, tmp_path / "all.json").path.read_text())
    first_op_s = min(e["ts"] for e in doc["traceEvents"] if e["ph"] == "X") / 1e6
    check(doc, first_op_s)
    doc1 = json.loads(export_perfetto(real_trace, tmp_path / "s1.json", steps="1-1").path.read_text())
    check(doc1, float(step_ends[0]))
