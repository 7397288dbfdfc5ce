"""What a sweep leaves in ``points/``: only outputs sweep.json and sweep.csv account for. Ctrl-C stops it at
once (queued points cancelled, running workers ended) and removes the unfinished points' directories; a reused
--out loses the point directories an earlier sweep left there, with a note. The points run a stand-in for
``simcore.runner.run`` (a fast first point, slow others) so the tests take seconds, not a simulation's time.
Also: every list field of a sweep file takes a single bare entry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from simcore.atomic import write_json
from simcore.cli import main
from simcore.errors import ConfigError
from simcore.sweep import expand, load_sweep, run_point, run_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """\
name: stop
profiles: [gen1.yaml]
workloads: [llama3-8b]
racks: 2
steps: 1
grid:
  scale_out.nic_bandwidth: ["100 Gb/s", "200 Gb/s", "400 Gb/s", "800 Gb/s"]
"""
SLOW_S = 20.0
FINISHED: list[str] = []  # points whose stand-in run returned (seen only when they run in this process)


def fake_run(opts: Any) -> SimpleNamespace:
    """p000 finishes at once; every other point writes part of its outputs and then takes SLOW_S."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if out.name != "p000":
        (out / ".trace.h5.partial.tmp").write_text("half a trace")
        time.sleep(SLOW_S)
    write_json(out / "summary.json", {})  # as the runner does: it makes the directory if it is gone
    FINISHED.append(out.name)
    return SimpleNamespace(summary={"step_time_s": 1.0, "mfu": 0.5})


def _point_dirs(out: Path) -> list[str]:
    """What ``points/`` holds, without the hidden stop file a stopped Dask sweep leaves for its stragglers."""
    points = out / "points"
    return sorted(p.name for p in points.iterdir() if not p.name.startswith(".")) if points.is_dir() else []


def test_ctrl_c_stops_running_and_queued_points_at_once_and_keeps_only_listed_outputs(tmp_path, monkeypatch):
    import simcore.runner

    monkeypatch.setattr(simcore.runner, "run", fake_run)  # the forked workers inherit it
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    spec = load_sweep(tmp_path / "sweep.yaml")

    def stop_after_first(msg: str) -> None:
        if msg.startswith("[1/"):
            raise KeyboardInterrupt

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out=tmp_path / "out", jobs=2, progress=stop_after_first)
    assert time.perf_counter() - t0 < SLOW_S / 2  # the running point was ended, not waited for
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert saved["complete"] is False and [p["label"] for p in saved["points"]] == ["p000"]
    assert _point_dirs(tmp_path / "out") == ["p000"]  # no empty or partial directory of p001..p003
    time.sleep(1.0)
    assert _point_dirs(tmp_path / "out") == ["p000"]  # and no worker goes on to write one


DRIVER = """\
import sys
import simcore.runner
from test_sweep_interrupt import fake_run
simcore.runner.run = fake_run
from simcore.cli import main
sys.exit(main(["sweep", sys.argv[1], "--out", sys.argv[2], "--jobs", "2"]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and these signals are POSIX")
@pytest.mark.parametrize(
    ("sig", "group"),
    [(signal.SIGINT, True), (signal.SIGTERM, True), (signal.SIGTERM, False)],
    ids=["sigint", "sigterm-process-group", "sigterm-parent-only"],
)
def test_a_signal_to_the_command_exits_promptly_and_says_what_it_kept(tmp_path, sig, group):
    """Ctrl-C reaches every process of the command; SIGTERM too from ``timeout`` or Slurm, or only the sweep
    from ``kill PID``. Each ends the workers, removes unfinished points' directories and says what it kept
    in one line: exit 130 for SIGINT, 143 for SIGTERM (before, SIGTERM killed the sweep on the spot and left
    sweep.json unwritten and the running points' partial outputs in points/)."""
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}

    def default_signals() -> None:  # a background job ignores SIGINT; a test runner may handle SIGTERM
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "sweep.yaml"), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the signal to all of it, as a terminal's Ctrl-C does
        preexec_fn=default_signals,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "points" / "p000" / "summary.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(0.5)  # the slow points are running, one more queued
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=SLOW_S * 3)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, err
    assert took < SLOW_S / 2, err
    saved = json.loads((out / "sweep.json").read_text())
    listed = [p["label"] for p in saved["points"]]
    assert listed in (["p000"], [])  # p000 unless the signal came before its result was collected
    assert all(p["status"] == "ok" for p in saved["points"])  # no point recorded as a lost worker
    assert _point_dirs(out) == listed
    said = "1 of 4 point(s) finished" if listed else "before any of its 4 point(s) finished"
    assert said in err
    assert "Traceback" not in err
    reason = "interrupted" if sig == signal.SIGINT else "interrupted by SIGTERM"
    assert err.splitlines()[-1].startswith(f"racksim: sweep {reason}")


def test_a_point_that_finishes_after_its_sweep_stopped_removes_its_outputs(tmp_path, monkeypatch):
    """A Dask task cannot be stopped once it runs: it finishes after the sweep, and must not leave a
    directory sweep.json does not list."""
    import simcore.runner

    monkeypatch.setattr(simcore.runner, "run", fake_run)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    first = expand(load_sweep(tmp_path / "sweep.yaml"), tmp_path / "out")[0]
    stop = tmp_path / "stopped"
    assert run_point(replace(first, stop_file=str(stop)))["status"] == "ok"
    assert (tmp_path / "out" / "points" / "p000" / "summary.json").is_file()
    stop.touch()  # the sweep stopped
    assert run_point(replace(first, stop_file=str(stop)))["status"] == "ok"
    assert not (tmp_path / "out" / "points" / "p000").exists()


def test_on_dask_a_point_running_when_the_sweep_stops_finishes_and_leaves_no_outputs(tmp_path, monkeypatch):
    """Dask cannot stop a running task: the point finishes on its worker after the sweep stopped, and must
    not leave a directory sweep.json does not list; the queued points never start."""
    distributed = pytest.importorskip("distributed")
    import simcore.runner

    monkeypatch.setattr(simcore.runner, "run", fake_run)
    monkeypatch.setattr(sys.modules[__name__], "SLOW_S", 2.0)
    monkeypatch.setattr(sys.modules[__name__], "FINISHED", [])
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    spec = load_sweep(tmp_path / "sweep.yaml")

    def stop_after_first(msg: str) -> None:
        if msg.startswith("[1/"):
            raise KeyboardInterrupt

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(
                spec, out=tmp_path / "out", scheduler=cluster.scheduler_address, progress=stop_after_first
            )
        assert _point_dirs(tmp_path / "out") == ["p000"]
        time.sleep(SLOW_S + 1.5)  # the points that were running finish on the worker
    # one or two slow points had started (a thread freed by p000 may take the next before the cancel
    # arrives) and ran on; the last one, still queued, never started
    assert FINISHED[0] == "p000" and len(FINISHED) > 1 and "p003" not in FINISHED
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [p["label"] for p in saved["points"]] == ["p000"]
    assert _point_dirs(tmp_path / "out") == ["p000"]


def test_a_reused_out_loses_the_point_directories_of_an_earlier_sweep_with_a_note(
    tmp_path, monkeypatch, capsys
):
    import simcore.runner

    monkeypatch.setattr(simcore.runner, "run", fake_run)
    monkeypatch.setattr(sys.modules[__name__], "SLOW_S", 0.0)
    out = tmp_path / "out"
    for i in range(12):  # an earlier sweep of 12 points, and what a user put beside them
        write_json(out / "points" / f"p{i:03d}" / "summary.json", {"earlier": True})
    (out / "points" / "README.txt").write_text("mine")
    (out / "points" / "plots").mkdir()
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "removed 12 point directories (p000 ... p011) an earlier sweep left in" in err
    assert _point_dirs(out) == ["README.txt", "p000", "p001", "p002", "p003", "plots"]
    assert all(
        json.loads((out / "points" / f"p{i:03d}" / "summary.json").read_text()) == {} for i in range(4)
    )


def test_a_reused_out_whose_sweep_cannot_start_keeps_the_earlier_sweep(tmp_path, monkeypatch):
    """A Dask scheduler that does not answer is found before the sweep touches --out: the earlier sweep's
    sweep.json and its point directories stay as they were, still agreeing."""
    pytest.importorskip("distributed")
    import simcore.runner
    from simcore.errors import RacksimError

    monkeypatch.setattr(simcore.runner, "run", fake_run)
    monkeypatch.setattr(sys.modules[__name__], "SLOW_S", 0.0)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    spec, out = load_sweep(tmp_path / "sweep.yaml"), tmp_path / "out"
    run_sweep(spec, out=out, jobs=1)
    assert len(json.loads((out / "sweep.json").read_text())["points"]) == 4
    before = (out / "sweep.json").read_text()
    with pytest.raises(RacksimError, match="cannot reach the Dask scheduler"):
        run_sweep(spec, out=out, jobs=1, scheduler="tcp://127.0.0.1:1")
    assert (out / "sweep.json").read_text() == before
    assert [d for d in _point_dirs(out) if d.startswith("p")] == ["p000", "p001", "p002", "p003"]


@pytest.mark.parametrize(
    "key,bare,listed",
    [
        ("profiles", "gen1.yaml", "[gen1.yaml]"),
        ("workloads", "llama3-8b", "[llama3-8b]"),
        ("set", '"cooling.facility.outside_temp=30 degC"', '["cooling.facility.outside_temp=30 degC"]'),
        ("metrics", "mfu", "[mfu]"),
    ],
)
def test_every_list_field_takes_one_bare_entry(tmp_path, key, bare, listed):
    base = {"profiles": "[gen1.yaml]", "workloads": "[llama3-8b]", "steps": "1"}
    spec = {}
    for form, value in (("bare", bare), ("listed", listed)):
        text = "".join(f"{k}: {v}\n" for k, v in {**base, key: value}.items())
        spec[form] = load_sweep(_write_sweep(tmp_path / form, text))
    assert (
        spec["bare"].profiles == spec["listed"].profiles
        and spec["bare"].workloads == spec["listed"].workloads
    )
    assert spec["bare"].sets == spec["listed"].sets and spec["bare"].metrics == spec["listed"].metrics


@pytest.mark.parametrize(
    "text,where,says",
    [
        ("set: [1]\n", "set", 'expected "key.path=value" or a list of them'),
        ("set: parallelism.tp\n", "set[0]", "key.path=value"),
        ("metrics: []\n", "metrics", "a summary.json key or a list of them"),
        ("grid: {parallelism.tp: 4}\n", "grid.parallelism.tp", "a value every point shares goes in set:"),
    ],
)
def test_a_list_field_of_the_wrong_kind_is_one_line_naming_it(tmp_path, text, where, says):
    with pytest.raises(ConfigError) as info:
        load_sweep(_write_sweep(tmp_path, f"profiles: gen1.yaml\n{text}"))
    assert f"{where}: " in str(info.value) and says in str(info.value)


def _write_sweep(where: Path, text: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "sweep.yaml").write_text(text)
    return where / "sweep.yaml"
