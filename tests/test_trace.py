"""Trace format v1: schema read with plain h5py, streamed writing, atomic finalize, clear errors.

The schema test runs a real (small, pipelined) simulation so it checks what the runner actually writes;
the SIGINT test interrupts a real ``run_sim.py`` and checks that no partial trace is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from simcore.activity import EVENT_DTYPE, GROUPS, KIND_NAMES, OPS
from simcore.errors import TraceError
from simcore.trace import (
    CHUNK_INDEX_DTYPE,
    FORMAT_VERSION,
    Trace,
    TraceWriter,
    open_trace,
    synthetic_events,
    write_synthetic_trace,
)
from simcore.trace_cli import main as trace_cli

REPO = Path(__file__).resolve().parents[1]


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".trace.h5") or p.name == "trace.h5")


# ---------------------------------------------------------------------------------------------- schema


def test_real_trace_schema_with_plain_h5py(real_trace: Path) -> None:
    with h5py.File(real_trace, "r") as f:
        a = f.attrs
        assert a["format"] == "racksim-trace"
        assert a["format_version"] == FORMAT_VERSION
        assert bool(a["complete"]) is True
        for key in (
            "racksim_version",
            "seed",
            "profile_name",
            "workload_name",
            "fidelity",
            "gpus",
            "event_rows",
        ):
            assert key in a, key
        for name in (
            "events",
            "event_chunks",
            "names",
            "class_names",
            "class_places",
            "streams",
            "classes",
            "steps",
        ):
            assert name in f, name
        for name in ("profile_yaml", "workload_yaml", "summary_json"):
            assert f"meta/{name}" in f
        json.loads(f["meta/summary_json"][()])

        ev = f["events"]
        assert ev.dtype == EVENT_DTYPE
        assert ev.shape[0] == int(a["event_rows"]) > 0
        assert ev.compression == "gzip" and ev.shuffle and ev.chunks is not None
        assert set(json.loads(ev.attrs["units"])) == set(EVENT_DTYPE.names)
        assert json.loads(ev.attrs["units"])["t_start"] == "s"
        assert json.loads(ev.attrs["units"])["nbytes"] == "B"
        assert json.loads(ev.attrs["kind_names"]) == list(KIND_NAMES)
        assert json.loads(ev.attrs["group_names"]) == list(GROUPS)
        assert json.loads(ev.attrs["op_names"]) == list(OPS)

        for table in ("events", "classes", "steps", "event_chunks"):
            units = json.loads(f[table].attrs["units"])
            assert set(units) == set(f[table].dtype.names), table
            assert set(json.loads(f[table].attrs["long_names"])) == set(f[table].dtype.names), table
        assert "skip chunks" in f["event_chunks"].attrs["long_name"]  # kept for readers of older files
        counts = f["timeseries/power/rack_w"].attrs["racks_per_type"]
        assert counts.dtype.kind == "i" and counts.sum() >= 1  # the documented int array, not float64
        assert json.loads(f["classes"].attrs["units"])["multiplicity"] == "GPUs"
        assert json.loads(f["steps"].attrs["units"])["t_end"] == "s"
        assert f["event_chunks"].dtype == CHUNK_INDEX_DTYPE
        for s in ("names", "class_names", "class_places", "streams"):
            assert h5py.check_string_dtype(f[s].dtype) is not None, s

        n_classes = len(f["class_names"])
        assert len(f["classes"]) == len(f["class_places"]) == n_classes == 2
        assert f["class_places"][0].decode().startswith("pod0/rack")
        streams = [s.decode() for s in f["streams"][()]]
        assert {"compute", "tp", "pp_send", "pp_recv", "dp"} <= set(streams)

        # power / thermal series, when present, are time-aligned with units on every dataset
        for group in ("timeseries/power", "timeseries/thermal"):
            if group not in f:
                continue
            g = f[group]
            assert g["time"].attrs["units"] == "s"
            for name, ds in g.items():
                assert "units" in ds.attrs, f"{group}/{name}"
                assert ds.shape[0] == g["time"].shape[0]

        events = ev[()]
    # indexes stay in range
    assert events["rank_class"].max() < n_classes
    assert events["stream"].max() < len(streams)
    assert np.all(events["t_end"] >= events["t_start"])
    # sorted by start and non-overlapping on every (class, stream)
    order = np.lexsort((np.arange(len(events)), events["stream"], events["rank_class"]))
    e = events[order]
    same = (e["rank_class"][1:] == e["rank_class"][:-1]) & (e["stream"][1:] == e["stream"][:-1])
    assert np.all(e["t_start"][1:][same] >= e["t_start"][:-1][same]), "events not sorted by start per stream"
    assert np.all(e["t_start"][1:][same] >= e["t_end"][:-1][same] - 1e-12), "overlapping events on a stream"


def test_chunk_index_covers_every_row(real_trace: Path) -> None:
    with Trace(real_trace) as tr:
        idx = tr.chunk_index
        ev = tr.read_events()
    assert idx is not None
    assert int(idx["rows"].sum()) == len(ev)
    for row in idx:
        part = ev[int(row["row_start"]) : int(row["row_start"] + row["rows"])]
        assert part["t_start"].min() == row["t_start_min"]
        assert part["t_end"].max() == row["t_end_max"]
        assert part["rank_class"].min() == row["class_min"] and part["rank_class"].max() == row["class_max"]


# ---------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("compression", "background"), [("gzip", True), ("gzip", False), ("lzf", True), (None, True)]
)
def test_writer_roundtrip_any_block_sizes(tmp_path: Path, compression: str | None, background: bool) -> None:
    events, _ends, _names = synthetic_events(20_000, n_classes=4, n_steps=2)
    rng = np.random.default_rng(3)
    w = TraceWriter(tmp_path / "trace.h5", chunk_rows=4096, compression=compression, background=background)
    pos = 0
    while pos < len(events):
        n = int(rng.integers(1, 9000))
        w.append_events(events[pos : pos + n])
        pos += n
    w.append_events(events[:0])
    assert w.close() == tmp_path / "trace.h5"
    assert _leftovers(tmp_path) == ["trace.h5"]
    with Trace(tmp_path / "trace.h5") as tr:
        back = tr.read_events()
        assert tr.n_events == len(events)
        assert int(tr.attrs["event_rows"]) == len(events)
        assert len(tr.chunk_index) == -(-len(events) // 4096)
        np.testing.assert_array_equal(back, events)
        # a plain h5py read goes through HDF5's own filter pipeline and must agree
        np.testing.assert_array_equal(tr.file["events"][()], events)


def test_writer_is_deterministic(tmp_path: Path) -> None:
    events, _ends, _names = synthetic_events(30_000, n_classes=4, n_steps=2)
    for name in ("a", "b"):
        with TraceWriter(tmp_path / name / "trace.h5", chunk_rows=4096) as w:
            for i in range(0, len(events), 5000):
                w.append_events(events[i : i + 5000])
            w.write_strings("names", ["x"])
            w.write_meta({"seed": 1}, {"profile_yaml": "p"})
    a = (tmp_path / "a" / "trace.h5").read_bytes()
    assert a == (tmp_path / "b" / "trace.h5").read_bytes()


def test_write_table_fills_units_and_series_labels(tmp_path: Path) -> None:
    path = write_synthetic_trace(tmp_path / "trace.h5", 5_000, n_classes=3, n_steps=2, racks=2)
    with h5py.File(path, "r") as f:
        assert json.loads(f["classes"].attrs["units"]) == {
            "index": "1",
            "multiplicity": "GPUs",
            "first_gpu": "1",
            "stage": "1",
        }
        gpu = f["timeseries/power/gpu_w"]
        assert gpu.attrs["units"] == "W"
        assert gpu.dims[0].label == "time" and gpu.dims[1].label == "class"
        assert f["timeseries/thermal/t_junction_c"].attrs["units"] == "degC"
        assert np.array_equal(gpu.dims[0][0][()], f["timeseries/power/time"][()])


def test_abort_leaves_no_trace_and_no_temp_file(tmp_path: Path) -> None:
    events, _ends, _names = synthetic_events(50_000, n_classes=4, n_steps=2)
    w = TraceWriter(tmp_path / "trace.h5", chunk_rows=4096)
    w.append_events(events)
    assert any(p.name.startswith(".trace.h5") for p in tmp_path.iterdir())  # the temp file exists meanwhile
    w.abort()
    w.abort()  # idempotent
    assert _leftovers(tmp_path) == []


def test_exception_mid_write_leaves_nothing(tmp_path: Path) -> None:
    events, _ends, _names = synthetic_events(50_000, n_classes=4, n_steps=2)
    with (
        pytest.raises(RuntimeError, match="simulated crash"),
        TraceWriter(tmp_path / "trace.h5", chunk_rows=4096) as w,
    ):
        w.append_events(events[:20_000])
        raise RuntimeError("simulated crash")
    assert _leftovers(tmp_path) == []


def test_storage_error_on_worker_surfaces_and_cleans_up(tmp_path: Path) -> None:
    events, _ends, _names = synthetic_events(50_000, n_classes=4, n_steps=2)
    w = TraceWriter(tmp_path / "trace.h5", chunk_rows=4096)

    def broken(*_args: object) -> bytes:
        raise OSError("disk full")

    w._compress = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        w.append_events(events)
        w.close()
    w.abort()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [
        (signal.SIGINT, 130, "racksim: interrupted"),
        # what `timeout`, `kill` and job schedulers send: Ctrl-C's clean-up path, exit 128 + 15
        (signal.SIGTERM, 143, "racksim: interrupted by SIGTERM; no partial outputs were kept"),
    ],
    ids=["sigint", "sigterm"],
)
def test_a_signal_during_a_real_run_leaves_no_trace(tmp_path: Path, sig: int, code: int, said: str) -> None:
    out = tmp_path / "out"

    def default_signals() -> None:
        # a shell's background job (`pytest &`) ignores SIGINT and a test runner may handle SIGTERM: give
        # the command the dispositions a terminal or a job scheduler would
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    proc = subprocess.Popen(
        [
            *(sys.executable, str(REPO / "run_sim.py"), "--profile", "gen2.yaml"),
            *("--workload", "llama3-70b", "--steps", "50", "--out", str(out)),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        deadline = time.monotonic() + 60
        # the trace's temporary file appears right before the simulation starts
        while not (out.is_dir() and any(p.name.startswith(".trace.h5") for p in out.iterdir())):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "run did not start"
            time.sleep(0.05)
        time.sleep(0.5)  # well into the simulation
        assert proc.poll() is None, "run finished before it could be interrupted"
        proc.send_signal(sig)
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert stderr.splitlines()[-1].startswith(said)
    assert "Traceback" not in stderr
    assert not out.exists()  # the run made the folder: no trace, no summary, and no empty folder are left


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed one
def test_a_ctrl_c_swallowed_during_the_run_still_stops_it_before_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt raised inside a finalizer is printed and dropped by Python; the handler racksim
    installs counts the request, and the run checks before it writes its trace or summary. A Ctrl-C from
    before the run (or one its caller handled) does not stop a later run."""
    from simcore import interrupts
    from simcore.engine import Machine
    from simcore.runner import RunOptions, run

    class Dies:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGINT)  # delivered here: "Exception ignored in ..."

    def opts(name: str) -> RunOptions:
        return RunOptions(profile="gen2.yaml", workload="llama3-8b", steps=1, out=tmp_path / name)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the test runner set
    interrupts.install()
    try:
        Dies()  # a request before the run, swallowed: not this run's
        assert run(opts("before")).summary["step_time_s"] > 0
        plain_run = Machine.run

        def run_then_swallow(self: Machine, *args: object, **kwargs: object) -> None:
            plain_run(self, *args, **kwargs)
            Dies()  # during the run, swallowed

        monkeypatch.setattr(Machine, "run", run_then_swallow)
        with pytest.raises(KeyboardInterrupt):
            run(opts("during"))
        assert not (tmp_path / "during").exists()  # nothing written, and the folder the run made is gone
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_wrapped_by_compiled_code_exits_as_an_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT delivered while numba's dispatcher calls back into Python (unpickling a cached kernel) comes
    out as a SystemError caused by the KeyboardInterrupt. After a counted Ctrl-C the CLI exits 130 with the
    interrupt message; the same SystemError without one is a crash and propagates."""
    from simcore import cli

    def wrapped_interrupt(_args: object) -> int:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc
        raise AssertionError("SIGINT was not delivered")

    def plain_crash(_args: object) -> int:
        raise SystemError("returned a result with an exception set")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the test runner set
    try:
        monkeypatch.setattr(cli, "cmd_run", wrapped_interrupt)
        assert cli.main(["--profile", "gen2.yaml"]) == 130
        assert "interrupted" in capsys.readouterr().err
        monkeypatch.setattr(cli, "cmd_run", plain_crash)
        with pytest.raises(SystemError):
            cli.main(["--profile", "gen2.yaml"])
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_ctrl_c_handler_leaves_an_ignored_sigint_alone() -> None:
    from simcore import interrupts

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert interrupts.install() is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------- reading


def test_truncated_and_foreign_files_give_one_line_errors(
    tmp_path: Path, real_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = real_trace.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    cases = {
        cut: "truncated",
        foreign: "not a racksim trace",
        tmp_path / "missing.h5": "no such trace file",
    }
    for path, message in cases.items():
        for command in (["analyze", str(path)], ["export-perfetto", str(path)], ["plot", str(path)]):
            assert trace_cli(command) == 2
            err = capsys.readouterr().err
            assert message in err and "Traceback" not in err
            assert err.count("\n") == 1


def test_cli_exit_code_2_in_a_real_process(tmp_path: Path, real_trace: Path) -> None:
    cut = tmp_path / "cut.h5"
    cut.write_bytes(real_trace.read_bytes()[:4096])
    proc = subprocess.run(
        [sys.executable, "-m", "simcore.trace_cli", "analyze", str(cut)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("racksim: error:") and "Traceback" not in proc.stderr


def test_unknown_major_version_and_unfinished_trace_are_rejected(tmp_path: Path) -> None:
    path = write_synthetic_trace(tmp_path / "trace.h5", 2_000, n_classes=2, n_steps=1, series=False)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = "2.0"
    with pytest.raises(TraceError, match=r"format version 2\.0 is not supported.*reads 1\.x"):
        open_trace(path)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = "1.7"  # a newer minor version only adds things: still readable
    open_trace(path).close()
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(TraceError, match="never finished"):
        open_trace(path)


def test_reader_works_without_chunk_index_or_fast_path(tmp_path: Path) -> None:
    """An older v1 file (no /event_chunks, other chunking) reads the same through HDF5."""
    events, ends, _names = synthetic_events(12_000, n_classes=3, n_steps=2)
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "racksim-trace"
        f.attrs["format_version"] = "1.0"
        f.create_dataset("events", data=events, chunks=(1000,), compression="gzip")
        f.create_dataset("steps", data=np.rec.fromarrays([np.arange(len(ends)), ends], names="step,t_end"))
    with Trace(path) as tr:
        assert tr.chunk_index is None
        np.testing.assert_array_equal(tr.read_events(), events)
        lo, hi = tr.step_bounds[1]
        got = tr.read_events(t_lo=lo, t_hi=hi, classes=[1], fields=["t_start", "t_end", "kind"])
    want = events[(events["t_start"] < hi) & (events["t_end"] > lo) & (events["rank_class"] == 1)]
    from simcore.export import export_perfetto
    from simcore.report import analyze

    report = analyze(path)
    assert [c["name"] for c in report["classes"]] == ["class0", "class1", "class2"]
    doc = json.loads(export_perfetto(path, tmp_path / "old.json").path.read_text())
    assert {e["args"]["name"].strip() for e in doc["traceEvents"] if e["name"] == "process_name"} == {
        "class0",
        "class1",
        "class2",
    }
    assert got.dtype.names == ("t_start", "t_end", "kind")
    np.testing.assert_array_equal(got["t_start"], want["t_start"])
    np.testing.assert_array_equal(got["kind"], want["kind"])


def test_filtered_reads_match_numpy(tmp_path: Path) -> None:
    path = write_synthetic_trace(
        tmp_path / "trace.h5", 60_000, n_classes=6, n_steps=3, series=False, block_rows=7000
    )
    with Trace(path) as tr:
        full = tr.read_events()
        lo, hi = tr.step_bounds[1]
        for classes in (None, [0], [2, 5]):
            got = tr.read_events(t_lo=lo, t_hi=hi, classes=classes, chunk_rows=8192)
            m = (full["t_start"] < hi) & (full["t_end"] > lo)
            if classes is not None:
                m &= np.isin(full["rank_class"], classes)
            np.testing.assert_array_equal(got, full[m])
        cols = tr.read_events(fields=["nbytes", "rank_class"])
        np.testing.assert_array_equal(cols["nbytes"], full["nbytes"])
        np.testing.assert_array_equal(cols["rank_class"], full["rank_class"])
        assert tr.read_events(classes=[]).shape == (0,)


def test_series_weights_are_exact_for_even_samples() -> None:
    from simcore.trace import Series

    mid = (np.arange(10) + 0.5) * 0.005
    s = Series(mid, {}, {}, {})
    np.testing.assert_allclose(s.weights_s(), 0.005)
    assert np.isclose(s.weights_s().sum(), 0.05)


def test_trace_writer_keeps_target_permissions_sane(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "trace.h5") as w:
        w.append_events(np.zeros(3, dtype=EVENT_DTYPE))
    mode = (tmp_path / "trace.h5").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
