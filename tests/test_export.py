"""Perfetto / Chrome trace-event export: valid per phase, consistent pids/tids, flows paired, limits work."""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simcore.errors import ConfigError
from simcore.export import export_perfetto, parse_ranks, parse_steps
from simcore.trace import Trace, write_synthetic_trace
from simcore.trace_cli import main as trace_cli


def validate_trace_events(doc: dict[str, Any]) -> Counter[str]:
    """Check the JSON against the Trace Event Format; returns the count of events per phase."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    assert doc.get("displayTimeUnit") in (None, "ms", "ns")
    phases: Counter[str] = Counter()
    process_names: dict[int, str] = {}
    thread_names: dict[tuple[int, int], str] = {}
    used_threads: set[tuple[int, int]] = set()
    used_pids: set[int] = set()
    flows: dict[int, dict[str, Any]] = {}
    for ev in doc["traceEvents"]:
        ph = ev["ph"]
        phases[ph] += 1
        assert isinstance(ev["pid"], int) and ev["pid"] > 0
        if ph == "X":
            assert isinstance(ev["name"], str) and ev["name"]
            assert isinstance(ev["tid"], int) and ev["tid"] > 0
            for key in ("ts", "dur"):
                assert isinstance(ev[key], (int, float)) and math.isfinite(ev[key]), ev
            assert ev["dur"] >= 0
            args = ev["args"]
            assert {"bytes", "group", "op", "step"} <= set(args)
            assert isinstance(args["bytes"], (int, float))
            if ev["cat"] == "compute":
                assert isinstance(args["flops"], (int, float))
            used_threads.add((ev["pid"], ev["tid"]))
            used_pids.add(ev["pid"])
        elif ph == "C":
            assert isinstance(ev["name"], str) and isinstance(ev["ts"], (int, float))
            assert ev["args"] and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in ev["args"].values()
            )
            used_pids.add(ev["pid"])
        elif ph == "M":
            assert ev["name"] in ("process_name", "process_sort_index", "thread_name", "thread_sort_index")
            if ev["name"] == "process_name":
                assert isinstance(ev["args"]["name"], str) and ev["args"]["name"]
                process_names[ev["pid"]] = ev["args"]["name"]
            elif ev["name"] == "thread_name":
                thread_names[(ev["pid"], ev["tid"])] = ev["args"]["name"]
            else:
                assert isinstance(ev["args"]["sort_index"], int)
        elif ph in ("s", "f"):
            assert (
                isinstance(ev["id"], int)
                and isinstance(ev["ts"], (int, float))
                and isinstance(ev["tid"], int)
            )
            slot = flows.setdefault(ev["id"], {})
            assert ph not in slot, f"duplicate flow {ph} for id {ev['id']}"
            slot[ph] = ev
            if ph == "f":
                assert ev.get("bp") == "e"
            used_threads.add((ev["pid"], ev["tid"]))
        else:
            raise AssertionError(f"unexpected phase {ph}")
    assert used_pids <= set(process_names), "events in processes without a process_name"
    assert used_threads <= set(thread_names), "events on threads without a thread_name"
    for fid, pair in flows.items():
        assert set(pair) == {"s", "f"}, f"flow {fid} is not a s/f pair"
        assert pair["s"]["name"] == pair["f"]["name"] and pair["s"]["cat"] == pair["f"]["cat"]
        assert pair["s"]["pid"] != pair["f"]["pid"]
    return phases


def _load(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_trace(
        tmp_path_factory.mktemp("synth") / "trace.h5", 40_000, n_classes=4, n_steps=3, racks=2
    )


def test_export_is_valid_and_complete(synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    result = export_perfetto(synth, out)
    doc = _load(out)
    phases = validate_trace_events(doc)
    with Trace(synth) as tr:
        ev = tr.read_events()
        names = tr.class_names
        places = tr.class_places
    assert phases["X"] == len(ev) == result.events
    assert phases["s"] == phases["f"] == result.flows == int(np.sum(ev["kind"] == 2))
    assert phases["C"] == result.counters > 0
    process = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    for c, name in enumerate(names):
        assert process[c + 1].startswith(f"{places[c]} {name}")
    assert "cluster power and cooling" in process.values()
    threads = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert threads == {"compute", "tp", "pp_send", "pp_recv", "dp"}
    counters = {e["name"] for e in doc["traceEvents"] if e["ph"] == "C"}
    assert {"GPU power", "junction temperature", "clock factor", "IT power", "facility power"} <= counters
    units = {e["name"]: next(iter(e["args"])) for e in doc["traceEvents"] if e["ph"] == "C"}
    assert units["GPU power"] == "W" and units["IT power"] == "kW" and units["junction temperature"] == "degC"
    first = next(e for e in doc["traceEvents"] if e["ph"] == "X")
    assert first["ts"] == pytest.approx(ev["t_start"][0] * 1e6, abs=1e-3)
    assert first["dur"] == pytest.approx((ev["t_end"][0] - ev["t_start"][0]) * 1e6, abs=2e-3)
    assert doc["otherData"]["profile"] == "synthetic"


def test_flows_connect_send_to_matching_recv(synth: Path, tmp_path: Path) -> None:
    doc = _load(export_perfetto(synth, tmp_path / "t.json", counters=False).path)
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"
    }
    pairs: dict[int, dict[str, Any]] = {}
    for e in doc["traceEvents"]:
        if e["ph"] in ("s", "f"):
            pairs.setdefault(e["id"], {})[e["ph"]] = e
    assert pairs
    for pair in pairs.values():
        s, f = pair["s"], pair["f"]
        assert threads[(s["pid"], s["tid"])] == "pp_send" and threads[(f["pid"], f["tid"])] == "pp_recv"
        assert f["pid"] == s["pid"] + 1  # the synthetic pipeline sends to the next stage
        assert s["ts"] == f["ts"]


def test_steps_and_ranks_limit_the_export(synth: Path, tmp_path: Path) -> None:
    with Trace(synth) as tr:
        ev = tr.read_events()
        lo, hi = tr.step_bounds[1]
    out = tmp_path / "t.json.gz"
    result = export_perfetto(synth, out, steps="1-1", ranks="stage1,3")
    doc = _load(out)
    validate_trace_events(doc)
    want = ev[(ev["t_start"] < hi) & (ev["t_end"] > lo) & np.isin(ev["rank_class"], [1, 3])]
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == len(want) == result.events
    assert {e["pid"] for e in xs} == {2, 4}
    assert result.steps == (1, 1) and result.classes == [1, 3]
    for e in doc["traceEvents"]:
        if e["ph"] == "C":
            assert lo * 1e6 - 1e-3 <= e["ts"] <= hi * 1e6 + 1e-3
    # flows only where both ends were exported (stage 1 -> 2 and 3 -> 4 leave the selection)
    assert not [e for e in doc["traceEvents"] if e["ph"] in ("s", "f")]


def test_large_traces_are_limited_by_default(synth: Path, tmp_path: Path) -> None:
    result = export_perfetto(synth, tmp_path / "t.json", max_events=15_000)
    assert result.steps == (0, 0)
    assert result.notes and "first 1 of 3 steps" in result.notes[0]
    validate_trace_events(_load(result.path))
    everything = export_perfetto(synth, tmp_path / "all.json", max_events=15_000, steps="all")
    assert everything.steps is None and everything.events > result.events


def test_asking_for_more_steps_than_the_trace_has_says_what_was_exported(synth: Path, tmp_path: Path) -> None:
    result = export_perfetto(synth, tmp_path / "t.json", steps="5")
    assert result.steps == (0, 2)
    assert any("the trace has 3 steps; exporting steps 0-2" in n for n in result.notes)
    assert not export_perfetto(synth, tmp_path / "u.json", steps="2").notes  # within the trace: no note


def test_real_run_export(tmp_path: Path) -> None:
    from simcore.runner import RunOptions, run

    spec = tmp_path / "pp.yaml"
    spec.write_text(
        "kind: training\npreset: llama3-8b\n"
        "parallelism: {tp: 8, pp: 2, dp: 4, cp: 1, ep: 1, vp: 1, sequence_parallel: true, zero: 1}\n"
        "batch: {global_seqs: 16, micro: 1}\nprecision: bf16\nsteps: 2\n"
    )
    run(RunOptions(profile="gen2.yaml", workload=str(spec), out=tmp_path / "out"))
    result = export_perfetto(tmp_path / "out" / "trace.h5")
    assert result.path == tmp_path / "out" / "trace.perfetto.json"
    doc = _load(result.path)
    phases = validate_trace_events(doc)
    assert phases["s"] == phases["f"] > 0
    process = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"]
    assert any(p.startswith("pod0/rack00/tray") and "stage1" in p for p in process)


def test_selection_parsing_errors() -> None:
    names = ["stage0", "stage1", "stage2"]
    assert parse_ranks("0,2", names) == [0, 2]
    assert parse_ranks("1-2", names) == [1, 2]
    assert parse_ranks("stage2,0", names) == [0, 2]
    assert parse_ranks(None, names) is None and parse_ranks("all", names) is None
    with pytest.raises(ConfigError, match="--ranks"):
        parse_ranks("7", names)
    with pytest.raises(ConfigError, match="stage9"):
        parse_ranks("stage9", names)
    assert parse_steps("2", 5) == (0, 1)
    assert parse_steps("1-3", 5) == (1, 3)
    assert parse_steps("all", 5) is None
    assert parse_steps("5", 1) == (0, 0)  # the first 5 steps of a 1-step trace: the one step
    assert parse_steps("0-9", 3) == (0, 2)  # B beyond the last step: up to it
    with pytest.raises(ConfigError, match="--steps") as err:
        parse_steps("6-7", 5)
    assert "the first N of the trace's 5 steps" in str(err.value) and "starting within 0..4" in str(err.value)
    with pytest.raises(ConfigError, match="--steps"):
        parse_steps("0", 5)
    with pytest.raises(ConfigError, match="--steps"):
        parse_steps("x", 5)


def test_cli_and_atomic_output(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cli.json"
    assert trace_cli(["export-perfetto", str(synth), "-o", str(out), "--steps", "1", "--no-counters"]) == 0
    assert "wrote" in capsys.readouterr().out
    doc = _load(out)
    assert not [e for e in doc["traceEvents"] if e["ph"] == "C"]
    assert trace_cli(["export-perfetto", str(synth), "--ranks", "99"]) == 2
    assert "--ranks" in capsys.readouterr().err

    import simcore.export as export

    def boom(*_args: Any, **_kwargs: Any) -> list[str]:
        raise RuntimeError("disk trouble")

    monkeypatch.setattr(export, "_flows", boom)
    target = tmp_path / "partial.json"
    with pytest.raises(RuntimeError):
        export_perfetto(synth, target)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
