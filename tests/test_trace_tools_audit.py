"""Findings of an audit of the offline trace tools (analyze, plot, export-perfetto) against real traces."""

from __future__ import annotations

from pathlib import Path

import h5py


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
