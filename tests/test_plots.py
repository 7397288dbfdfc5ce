"""``plot``: figures have titles and axis labels with units, PNGs are real and land next to the trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from simcore.plots import build_figures, make_plots
from simcore.trace import write_synthetic_trace
from simcore.trace_cli import main as trace_cli

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_trace(
        tmp_path_factory.mktemp("synth") / "run" / "trace.h5", 12_000, n_classes=10, n_steps=3, racks=2
    )


def _labels(fig) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def test_figures_have_titles_and_unit_labels(synth: Path) -> None:
    figs = build_figures(synth, steps=2)
    assert list(figs) == ["timeline", "breakdown", "power", "thermal", "energy"]

    (title, xlabel, ylabel), *_ = _labels(figs["timeline"])
    assert title.startswith("Pipeline timeline, steps 0-1") and "8 of 10 stages" in title
    assert (
        xlabel in ("time since step start (s)", "time since step start (ms)") and ylabel == "stage · stream"
    )
    legend = [t.get_text() for t in figs["timeline"].axes[0].get_legend().get_texts()]
    assert {"compute", "TP communication", "DP communication", "PP communication"} <= set(legend)

    (title, xlabel, ylabel), *_ = _labels(figs["breakdown"])
    assert title.startswith("Step-time breakdown per stage")
    assert xlabel.startswith("time per step (") and ylabel == "pipeline stage (GPUs)"
    legend = [t.get_text() for t in figs["breakdown"].axes[0].get_legend().get_texts()]
    assert legend[0] == "compute" and legend[-1] == "idle / bubble" and "exposed TP" in legend

    power = _labels(figs["power"])
    assert [t for t, _x, _y in power] == [
        "GPU power per stage",
        "Power of one rack of each rack type",
        "Cluster power: IT, facility (with cooling), grid",
    ]
    assert power[0][2] == "power per GPU (W)" and power[1][2] == "rack input power (kW)"
    assert power[2][2] == "power (kW)" and power[2][1] == "time (s)"
    texts = [t.get_text() for t in figs["power"].axes[2].texts]
    assert any(t.startswith("IT swing ") and "% of peak" in t for t in texts)
    assert figs["power"].get_suptitle().startswith("Power over time")

    thermal = _labels(figs["thermal"])
    assert [y for _t, _x, y in thermal] == [
        "junction temperature (°C)",
        "coolant outlet (°C)",
        "clock factor f/f_max (1)",
    ]
    assert thermal[-1][1] == "time (s)"

    (title, xlabel, ylabel), *_ = _labels(figs["energy"])
    assert title.startswith("Energy breakdown") and ylabel.startswith("energy (")
    ticks = [t.get_text() for t in figs["energy"].axes[0].get_xticklabels()]
    assert ticks == ["GPUs", "rest of IT", "conversion losses", "cooling", "other overhead"]


def test_make_plots_writes_pngs_next_to_the_trace(synth: Path) -> None:
    files = make_plots(synth)
    assert [f.name for f in files] == [
        "timeline.png",
        "breakdown.png",
        "power.png",
        "thermal.png",
        "energy.png",
    ]
    for f in files:
        assert f.parent == synth.parent / "plots"
        data = f.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    assert not [p for p in (synth.parent / "plots").iterdir() if p.name.endswith(".tmp")]


def test_trace_without_series_gets_the_event_plots_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_synthetic_trace(tmp_path / "trace.h5", 4_000, n_classes=2, n_steps=1, series=False)
    assert trace_cli(["plot", str(path), "--out", str(tmp_path / "figs"), "--steps", "1"]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["timeline.png", "breakdown.png"]
    assert all(Path(p).read_bytes().startswith(PNG) for p in printed)
