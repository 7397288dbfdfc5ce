"""``plot`` is all or none: Ctrl-C while it draws keeps none of its PNGs (an earlier plot's stay as they
were), so "no partial outputs were kept" is true; a Ctrl-C while the PNGs are renamed into place waits until
all are. Also: energy.png reads in SI prefixes (4.55 MJ, not 4.55e+03 kJ)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from simcore.trace import write_synthetic_trace
from simcore.trace_cli import main as trace_cli


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_trace(
        tmp_path_factory.mktemp("synth") / "run" / "trace.h5", 4_000, n_classes=2, n_steps=2, racks=1
    )


def _interrupt_on_save(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """Ctrl-C while the ``nth`` PNG is being drawn."""
    real = Figure.savefig
    calls = []

    def savefig(self: Figure, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == nth:
            raise KeyboardInterrupt
        real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)


def test_ctrl_c_while_drawing_keeps_none_of_the_pngs(synth, tmp_path, monkeypatch, capsys):
    _interrupt_on_save(monkeypatch, 4)  # after 3 of the 5 PNGs
    assert trace_cli(["plot", str(synth), "--out", str(tmp_path / "figs")]) == 130
    assert "no partial outputs were kept" in capsys.readouterr().err
    assert not (tmp_path / "figs").exists()  # nothing, not even the folder it made


def test_ctrl_c_leaves_an_earlier_plots_pngs_as_they_were(synth, tmp_path, monkeypatch):
    figs = tmp_path / "figs"
    assert trace_cli(["plot", str(synth), "--out", str(figs)]) == 0
    before = {p.name: p.read_bytes() for p in figs.iterdir()}
    assert len(before) == 5
    _interrupt_on_save(monkeypatch, 4)
    assert trace_cli(["plot", str(synth), "--out", str(figs), "--steps", "1"]) == 130
    assert {p.name: p.read_bytes() for p in figs.iterdir()} == before  # no temporary file either


@pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")
def test_ctrl_c_while_publishing_waits_until_every_file_is_in_place(tmp_path, monkeypatch):
    from simcore.atomic import atomic_paths

    real = os.replace
    moved = []

    def replace_and_ctrl_c(src: object, dst: object) -> None:
        if not moved:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the first rename starts
        real(src, dst)
        moved.append(dst)

    monkeypatch.setattr(os, "replace", replace_and_ctrl_c)
    targets = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    with pytest.raises(KeyboardInterrupt), atomic_paths(targets) as tmps:
        for tmp, name in zip(tmps, "abc", strict=True):
            tmp.write_text(name)
    assert [t.read_text() for t in targets] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize(
    "joules,text",
    [
        (0.0, "0 J"),
        (0.5, "0.5 J"),
        (216e3, "216 kJ"),
        (999.97e3, "1 MJ"),  # rounds up into the next prefix, not "1e+03 kJ"
        (4.55e6, "4.55 MJ"),
        (2.5e9, "2.5 GJ"),
        (-4.55e6, "-4.55 MJ"),
    ],
)
def test_energy_reads_in_si_prefixes(joules, text):
    from simcore.wording import format_energy

    assert format_energy(joules) == text


def test_energy_png_labels_its_bars_in_si_prefixes():
    from simcore.plots import energy_figure

    energy = {"gpu_j": 4.55e6, "other_it_j": 1.4e6, "conversion_loss_j": 289e3, "cooling_j": 216e3}
    fig = energy_figure({"energy": energy, "power": {"duration_s": 60.0}, "workload": "w", "profile": "p"})
    ax = fig.axes[0]
    assert ax.get_ylabel() == "energy (MJ)"
    assert [t.get_text().split("\n")[0] for t in ax.texts] == ["4.55 MJ", "1.4 MJ", "289 kJ", "216 kJ"]
