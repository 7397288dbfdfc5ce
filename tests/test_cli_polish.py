"""Small user-facing defects of the CLI: SIGTERM (``timeout``, ``kill``, Slurm) takes Ctrl-C's clean-up path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from simcore.trace import write_synthetic_trace

REPO = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGTERM are POSIX")

# Runs racksim's CLI with its slow parts replaced by waits that say on MARK when they started: while an
# output is being written to its temporary file (plot, export-perfetto, analyze --json), in a run (compare),
# in a row of validate (in the pool's worker processes, one line with the worker's pid each).
DRIVER = """\
import contextlib, os, sys, time
from pathlib import Path

import simcore.atomic as atomic
import simcore.runner as runner
import workloads.validation as validation

MARK = Path(sys.argv[1])

def say(line):
    with open(MARK, "a") as fh:
        fh.write(line + "\\n")

real_path, real_paths = atomic.atomic_path, atomic.atomic_paths

@contextlib.contextmanager
def slow_path(target):
    with real_path(target) as tmp:
        say(f"tmp {tmp}")
        time.sleep(60)
        yield tmp

@contextlib.contextmanager
def slow_paths(targets, **kwargs):
    with real_paths(targets, **kwargs) as tmps:
        say(f"tmp {tmps[0]}")
        time.sleep(60)
        yield tmps

def slow_run(opts):
    say(f"run {os.getpid()}")
    time.sleep(60)

def slow_row(plan, extra):
    say(f"row {os.getpid()}")
    time.sleep(60)

atomic.atomic_path, atomic.atomic_paths = slow_path, slow_paths
runner.run = slow_run
validation.run_plan = slow_row
from simcore.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_trace(
        tmp_path_factory.mktemp("synth") / "run" / "trace.h5", 4_000, n_classes=2, n_steps=2, racks=1
    )


def _default_signals() -> None:
    """A shell's background job (`pytest &`) ignores SIGINT, and a test runner may have set its own SIGTERM
    handler: give the command the dispositions a terminal or a job scheduler would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _terminate_when_marked(
    args: list[str], mark: Path, tmp_path: Path, *, lines: int = 1, group: bool = True
) -> tuple[int, str, float]:
    """Start the driver on ``args``, wait until ``lines`` lines are on ``mark``, send SIGTERM (to the
    command's process group, as ``timeout`` and Slurm do, or to the command alone, as ``kill PID`` does);
    return the exit code, stderr and how long the command took to exit."""
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(mark), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    try:
        deadline = time.monotonic() + 120
        while not (mark.is_file() and len(mark.read_text().splitlines()) >= lines):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command did not get there"
            time.sleep(0.05)
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err, took


def _hidden_temps(where: Path) -> list[str]:
    return sorted(p.name for p in where.rglob(".*.tmp"))


@POSIX
@pytest.mark.parametrize(
    "command",
    [
        ["export-perfetto", "{trace}", "-o", "{out}/x.json"],
        ["plot", "{trace}", "--out", "{out}/figs"],
        ["analyze", "{trace}", "--json", "{out}/report.json"],
    ],
    ids=["export-perfetto", "plot", "analyze"],
)
def test_sigterm_removes_the_temporary_output_and_exits_143_with_one_line(synth, tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(trace=synth, out=out) for a in command]
    code, err, took = _terminate_when_marked(args, tmp_path / "mark", tmp_path)
    assert code == 143, err
    assert took < 10
    assert err.splitlines() == ["racksim: interrupted by SIGTERM; no partial outputs were kept"]
    tmp = Path(next(line for line in (tmp_path / "mark").read_text().splitlines()).split(" ", 1)[1])
    assert tmp.parent.is_relative_to(out) and not tmp.exists()
    assert _hidden_temps(out) == [] and not any(p.is_file() for p in out.rglob("*"))


@POSIX
def test_sigterm_stops_compare_and_says_what_it_kept(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--profiles", "gen1.yaml", "gen2.yaml", "--workload", "llama3-8b", "--out", str(out)]
    code, err, _ = _terminate_when_marked(args, tmp_path / "mark", tmp_path)
    assert code == 143, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "racksim: error: compare interrupted by SIGTERM; no profile's run finished; 2 of 2 profile(s)"
    )


@POSIX
@pytest.mark.parametrize("group", [True, False], ids=["process-group", "parent-only"])
def test_sigterm_stops_validate_and_its_workers_at_once(tmp_path, group):
    """Before, the workers inherited the handler: each row's KeyboardInterrupt ended only that row, the
    workers took the next, and the command waited for the whole table (or, with SIGTERM to the parent alone,
    racksim died and left the workers running)."""
    args = ["validate", "--jobs", "2", "--rows", "megatron-sc21*", "--quiet"]
    code, err, took = _terminate_when_marked(args, tmp_path / "mark", tmp_path, lines=2, group=group)
    assert code == 143, err
    # each row sleeps 60 s: waiting for the table would take minutes (the margin is for a loaded CI machine;
    # a dying worker's pool may add a line of its own before racksim's)
    assert took < 25, (took, err)
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "racksim: interrupted by SIGTERM; no partial outputs were kept", err
    workers = [int(line.split()[1]) for line in (tmp_path / "mark").read_text().splitlines()]
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------ an output whose temporary file cannot be made
def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from simcore.cli import main

    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_output_in_proc_is_one_line_naming_the_path_given(synth, capsys):
    """Before: `racksim: error: /proc/.x.json.bydvvwps.tmp: No such file or directory (...)`."""
    for args in (
        ["export-perfetto", str(synth), "-o", "/proc/x.json"],
        ["analyze", str(synth), "--json", "/proc/x.json"],
    ):
        code, err = _cli(args, capsys)
        assert code == 2
        assert err.startswith("racksim: error: /proc/x.json: ") and len(err.splitlines()) == 1, err
        assert ".tmp" not in err


def test_a_read_only_directory_is_named_by_the_path_given(synth, tmp_path, monkeypatch, capsys):
    """mkstemp's error names the random temporary file (a non-root user's read-only directory: EACCES on
    `<dir>/.x.json.<random>.tmp`); racksim names the output the user asked for."""
    import tempfile

    from simcore.trace import TraceWriter

    def refuse(prefix: str = "", suffix: str = "", dir: str | None = None) -> tuple[int, str]:
        name = os.path.join(str(dir), f"{prefix}k3j2h1g0{suffix}")
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    target = tmp_path / "ro" / "x.json"
    for args in (
        ["export-perfetto", str(synth), "-o", str(target)],
        ["plot", str(synth), "--out", str(tmp_path / "ro")],
    ):
        code, err = _cli(args, capsys)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert ".tmp" not in err and "Permission denied" in err
    assert (
        f"racksim: error: {target}: Permission denied"
        in _cli(["export-perfetto", str(synth), "-o", str(target)], capsys)[1]
    )
    with pytest.raises(PermissionError) as info:  # a run's trace
        TraceWriter(tmp_path / "run" / "trace.h5")
    assert info.value.filename == str(tmp_path / "run" / "trace.h5")


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root writes into read-only directories"
)
def test_a_real_read_only_directory(synth, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = _cli(["export-perfetto", str(synth), "-o", str(ro / "x.json")], capsys)
    finally:
        ro.chmod(0o755)
    assert code == 2 and err.startswith(f"racksim: error: {ro / 'x.json'}: Permission denied"), err


# ------------------------------------------------------------------ plot into a reused directory
def test_plot_of_a_trace_without_series_removes_an_earlier_plots_power_figures_and_says_so(
    synth, tmp_path, capsys
):
    """Before: power.png, thermal.png and energy.png of the earlier trace stayed beside the new timeline."""
    bare = write_synthetic_trace(tmp_path / "bare" / "trace.h5", 2_000, n_classes=2, n_steps=2, series=False)
    figs = tmp_path / "figs"
    assert _cli(["plot", str(synth), "--out", str(figs)], capsys)[0] == 0
    assert sorted(p.name for p in figs.iterdir()) == [
        "breakdown.png", "energy.png", "power.png", "thermal.png", "timeline.png"
    ]  # fmt: skip
    (figs / "mine.png").write_bytes(b"a user's figure")
    (figs / "power.png.txt").write_text("notes")
    code, err = _cli(["plot", str(bare), "--out", str(figs)], capsys)
    assert code == 0
    assert sorted(p.name for p in figs.iterdir()) == [
        "breakdown.png",
        "mine.png",
        "power.png.txt",
        "timeline.png",
    ]
    assert err == (
        f"racksim: note: removed power.png, thermal.png, energy.png that an earlier plot left in {figs}: "
        "this trace has no data for them\n"
    )
    code, err = _cli(["plot", str(bare), "--out", str(figs)], capsys)  # nothing stale: no note
    assert code == 0 and err == ""


# ------------------------------------------------------------------ compare with a bad workload
@pytest.mark.parametrize(
    "workload,says",
    [
        ("nosuch.yaml", "racksim: error: nosuch.yaml: no such file; expected a workload spec YAML file"),
        ("{bad}", "racksim: error: compare: no profile could run the workload: {bad}: bogus: unknown field"),
    ],
    ids=["missing-file", "unknown-field"],
)
def test_compare_with_a_bad_workload_says_its_error_once_before_any_run(tmp_path, capsys, workload, says):
    """Before: `[1/2] gen1: <error>`, `[2/2] gen2: <error>`, then `error: compare: no profile could run the
    workload: <error>; <error>`: the same line four times for two profiles."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: training\npreset: llama3-8b\nbogus: 1\n")
    out = tmp_path / "cmp"
    args = ["compare", "--profiles", "gen1.yaml", "gen2.yaml", "gen3.yaml", "--workload"]
    code, err = _cli([*args, workload.format(bad=bad), "--out", str(out)], capsys)
    assert code == 2
    assert err.splitlines() == [err.strip()] and err.startswith(says.format(bad=bad)), err
    assert err.count("unknown field") + err.count("no such file") == 1
    assert not out.exists()


def test_compare_says_an_error_it_already_gave_by_naming_the_profile(tmp_path, capsys, monkeypatch):
    """An error the runs meet alike (here every run's) is given in full once: later profiles say `the same
    error as gen1`, and the final error lists it once."""
    import simcore.runner as runner
    from simcore.errors import CapacityError

    def no_room(opts: runner.RunOptions) -> runner.RunResult:
        raise CapacityError("the job needs 4096 GPUs; the cluster has 72")

    monkeypatch.setattr(runner, "run", no_room)
    args = ["compare", "--profiles", "gen1.yaml", "gen2.yaml", "--workload", "llama3-8b"]
    code, err = _cli([*args, "--out", str(tmp_path / "cmp")], capsys)
    assert code == 2
    assert err.count("4096 GPUs") == 2, err  # the first profile's line and the final error
    assert "racksim: [2/2] gen2: the same error as gen1" in err
    assert err.splitlines()[-1] == (
        "racksim: error: compare: no profile could run the workload: the job needs 4096 GPUs; the cluster has 72"
    )


# ------------------------------------------------------------------ analyze of a serving run
def test_analyze_of_a_serving_run_matches_idle_fraction_and_says_it_is_a_serving_run(tmp_path):
    """docs/trace-format.md said "all" matches the summary's bubble_fraction exactly; a serving run's
    bubble_fraction is 0 and analyze's idle is its idle_fraction. Before, the report also spoke of steps
    (`1 step`, `step time: mean ...`, `time per step window ... over steps`)."""
    import json

    from simcore.report import analyze, format_report
    from simcore.runner import RunOptions, run

    (tmp_path / "t.csv").write_text(
        "arrival_s,input_tokens,output_tokens\n0,256,16\n0.01,512,8\n0.5,128,32\n2.0,64,4\n"
    )
    spec = tmp_path / "serve.yaml"
    spec.write_text("kind: inference\nmodel: llama3-8b\nprecision: fp8\nrequests: {trace: t.csv}\n")
    result = run(RunOptions(profile="h100-dgx.yaml", workload=str(spec), out=tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["bubble_fraction"] == 0.0 and summary["idle_fraction"] > 0.01
    report = analyze(result.out_dir / "trace.h5")
    assert report["serving"] is True
    assert report["overall"]["idle"] == pytest.approx(summary["idle_fraction"], abs=1e-9)
    assert report["overall"]["exposed_comm"] == pytest.approx(summary["exposed_comm_fraction"], abs=1e-9)
    text = format_report(report)
    assert (
        ", a serving run\n" in text and "\nserving run: " in text and "step" not in text.split("slowest")[0]
    )
    assert "idle = waiting for requests or the host" in text
    doc = (REPO / "docs" / "trace-format.md").read_text()
    assert "`idle_fraction` for a serving run" in doc


# ------------------------------------------------------------------ analyze's ramp vs the summary's
def test_analyze_labels_the_ramp_it_measures_and_shows_the_summarys_demanded_ramp(tmp_path):
    """The summary's max_ramp_w_per_s is of the facility power demanded before GPU power smoothing, which the
    trace does not store; analyze measures the stored (drawn) series. Before, its `facility ... max ramp
    14.4 MW/s` sat unexplained against the summary's 15.6 MW/s (gen2 llama3-8b)."""
    import json

    from simcore.report import analyze, format_report
    from simcore.runner import RunOptions, run

    run(RunOptions(profile="gen2.yaml", workload="llama3-8b", steps=2, out=tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    report = analyze(tmp_path / "run" / "trace.h5")
    p = report["power"]
    assert p["summary_max_ramp_w_per_s"] == pytest.approx(summary["max_ramp_w_per_s"])
    drawn = p["facility_swing"]["max_ramp_w_per_s"]
    assert drawn < 0.99 * summary["max_ramp_w_per_s"]  # gen2 smooths: the drawn power ramps more slowly
    assert p["grid_swing"]["max_ramp_w_per_s"] == pytest.approx(
        summary["max_ramp_mitigated_w_per_s"], rel=1e-6
    )
    text = format_report(report)
    assert "power (the trace's series: IT and facility as drawn, smoothing burn included;" in text
    line = next(x for x in text.splitlines() if "as demanded" in x)
    assert "before GPU power smoothing (the summary's max_ramp_w_per_s; not in the trace): max ramp" in line
    report["power"]["summary_max_ramp_w_per_s"] = drawn  # no smoothing: the two agree, no extra line
    assert "as demanded" not in format_report(report)
