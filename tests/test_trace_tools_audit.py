"""Findings of an audit of the offline trace tools (analyze, plot, export-perfetto) against real traces."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from simcore.report import analyze
from simcore.trace import Series


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
