"""Default output directories: runs started in the same second get their own directory, never a shared one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

import simcore.atomic as atomic

SMALL_SPEC = """\
kind: training
preset: llama3-8b
parallelism: {tp: 8, pp: 1, dp: 1, cp: 1, ep: 1, vp: 1, sequence_parallel: true, zero: 1}
batch: {global_seqs: 2, micro: 1}
precision: bf16
steps: 1
"""


class _FrozenClock:
    """Every call to now() is the same second, as for runs started together from parallel shells."""

    @staticmethod
    def now() -> datetime:
        return datetime(2026, 12, 6, 14, 31, 7)


def test_same_second_gets_numbered_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "datetime", _FrozenClock)
    made = [atomic.new_run_dir("sweep-", root=tmp_path / "runs") for _ in range(3)]
    assert [p.name for p in made] == [
        "sweep-20261206-143107",
        "sweep-20261206-143107-2",
        "sweep-20261206-143107-3",
    ]
    assert all(p.is_dir() for p in made)


def test_two_runs_in_one_second_keep_both_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gen2: object
) -> None:
    """Two runs without --out in the same second: each summary.json and trace.h5 survives in its own folder."""
    from simcore.runner import RunOptions, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(atomic, "datetime", _FrozenClock)
    (tmp_path / "pp.yaml").write_text(SMALL_SPEC)
    first = run(RunOptions(profile="gen2.yaml", workload="pp.yaml", steps=1))
    second = run(RunOptions(profile="gen2.yaml", workload="pp.yaml", steps=1, seed=1))
    assert first.out_dir != second.out_dir
    for result in (first, second):
        assert (Path(result.out_dir) / "summary.json").is_file()
        assert (Path(result.out_dir) / "trace.h5").is_file()


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "SWEEP", "--jobs", "0"],  # rejected after the sweep file loaded
        ["compare", "--profiles", "no-such-profile.yaml"],  # no profile can run
    ],
)
def test_a_command_that_cannot_start_leaves_no_empty_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    from simcore.cli import main

    sweep_file = Path(__file__).resolve().parents[1] / "examples" / "sweep-nic-tp.yaml"
    monkeypatch.chdir(tmp_path)
    assert main([str(sweep_file) if a == "SWEEP" else a for a in argv]) == 2
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_discard_keeps_a_folder_with_outputs(tmp_path: Path) -> None:
    kept = atomic.new_run_dir(root=tmp_path)
    (kept / "sweep.json").write_text("{}")
    atomic.discard_if_empty(kept)
    assert (kept / "sweep.json").is_file()
    empty = atomic.new_run_dir(root=tmp_path)
    atomic.discard_if_empty(empty)
    assert not empty.exists()


def test_no_trace_without_out_still_writes_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--no-trace` skips trace.h5 only: the run's summary.json still lands in a new runs/<timestamp>."""
    from simcore.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pp.yaml").write_text(SMALL_SPEC)
    assert main(["--profile", "gen2.yaml", "--workload", "pp.yaml", "--no-trace"]) == 0
    [run_dir] = list((tmp_path / "runs").iterdir())
    assert (run_dir / "summary.json").is_file() and not (run_dir / "trace.h5").exists()
    assert f"{Path('runs') / run_dir.name}/summary.json" in capsys.readouterr().out


def test_a_reused_out_dir_names_what_an_earlier_run_left_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Plots and exports of an earlier run stay (they may be the user's), but a note says they are not
    this run's; a new directory, or one holding no earlier run, gets no note."""
    from simcore.cli import main

    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL_SPEC.replace("preset: llama3-8b", "model: {preset: llama3-8b, layers: 2}"))
    out = tmp_path / "main"
    argv = ["--profile", "h100-dgx", "--workload", str(spec), "--out", str(out), "--no-trace"]
    assert main(argv) == 0
    assert "note:" not in capsys.readouterr().err
    (out / "plots").mkdir()
    (out / "plots" / "timeline.png").write_bytes(b"")
    (out / "trace.perfetto.json").write_text("{}")
    assert main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == [
        f"racksim: note: {out} holds plots/ and trace.perfetto.json from an earlier run; they are not from this run"
    ]
    assert (out / "plots" / "timeline.png").exists() and (out / "trace.perfetto.json").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("")  # not a run directory: nothing to say
    assert main([*argv[:-3], "--out", str(mine), "--no-trace"]) == 0
    assert "note:" not in capsys.readouterr().err


def _small_run(tmp_path: Path, out: Path, **kw: object) -> object:
    from simcore.runner import RunOptions

    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL_SPEC.replace("preset: llama3-8b", "model: {preset: llama3-8b, layers: 2}"))
    return RunOptions(profile="h100-dgx", workload=str(spec), out=out, **kw)


def test_a_new_trace_never_sits_beside_an_earlier_runs_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after trace.h5 landed in a reused --out, while summary.json is written: the earlier run's
    summary is already gone and the new trace goes too, so no directory pairs a new trace with an old
    summary. With --no-trace the earlier trace is gone before the new summary lands."""
    import simcore.runner as runner

    out = tmp_path / "reused"
    out.mkdir()
    seen: list[tuple[bool, bool]] = []
    real_write_json = runner.write_json

    def ctrl_c_while_writing_the_summary(path: Path, data: object) -> None:
        seen.append(((out / "summary.json").exists(), (out / "trace.h5").exists()))
        raise KeyboardInterrupt

    for trace in (True, False):
        (out / "summary.json").write_text('{"earlier": true}')
        (out / "trace.h5").write_text("earlier")
        monkeypatch.setattr(runner, "write_json", ctrl_c_while_writing_the_summary)
        with pytest.raises(KeyboardInterrupt):
            runner.run(_small_run(tmp_path, out, write_trace=trace))
        assert not (out / "summary.json").exists() if trace else (out / "summary.json").exists()
        assert not (out / "trace.h5").exists()
    assert seen == [(False, True), (True, False)]  # new trace, no summary; old summary, no trace
    monkeypatch.setattr(runner, "write_json", real_write_json)
    runner.run(_small_run(tmp_path, out))
    assert (out / "summary.json").is_file() and (out / "trace.h5").is_file()


def test_an_interrupted_run_removes_the_out_directory_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the simulation leaves no empty --out directory (nor the parents the run made); a
    directory that existed before, or one that holds something, stays."""
    from simcore.engine import Machine
    from simcore.runner import run

    def ctrl_c(self: Machine, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Machine, "run", ctrl_c)
    for trace in (True, False):
        with pytest.raises(KeyboardInterrupt):
            run(_small_run(tmp_path, tmp_path / "new" / "deep", write_trace=trace))
        assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):
        run(_small_run(tmp_path, tmp_path / "kept" / "run"))
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "run").exists()
