"""Audit of ``racksim sweep`` and ``racksim compare``: bad workload values in a sweep grid stop it before
anything runs (as bad profile values do), while points that do not fit stay results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simcore.cli import main
from simcore.errors import ConfigError
from simcore.sweep import load_sweep, run_sweep

SERVE = "kind: inference\nmodel: llama3-8b\nprecision: fp8\nrequests: {count: 4, input_tokens: 64, output_tokens: 4}\n"


def _write(where: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = where / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "grid,where,value,says",
    [
        ('parallelism.tp: [2, "x"]', "grid.parallelism.tp", "'x'", "must be a number"),
        ("batch.micro: [0]", "grid.batch.micro", "0", "expected a whole number >= 1"),
        ("parallelism.tpp: [2, 4]", "grid.parallelism.tpp", "2", "did you mean 'tp'?"),
        ("model.hidden: [4096, -5]", "grid.model.hidden", "-5", "out of range"),
        ("precision: [bf16, fp7]", "grid.precision", "'fp7'", "not an allowed value"),
    ],
)
def test_a_bad_workload_grid_value_stops_the_sweep_before_anything_runs(
    tmp_path, capsys, grid, where, value, says
):
    """As a bad profile value does: one line naming the sweep file, the grid key, the value and what was
    expected, exit code 2, no output directory (before: each such point was "could not run", exit 0)."""
    path = _write(tmp_path, f"profiles: [gen2]\nworkloads: [llama3-8b]\nsteps: 1\ngrid:\n  {grid}\n")
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {where}: ") and f"got {value}" in msg and says in msg
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("racksim: error:") and where in err
    assert not out.exists()


def test_a_bad_fixed_set_value_or_spec_file_is_named_as_such(tmp_path):
    spec = _write(tmp_path, "model: llama3-8b\nparallelism: {tp: 8}\nbatch: {global_seqs: 0}\n", "job.yaml")
    with pytest.raises(ConfigError, match=r"sweep\.yaml: workloads\[0\]: out of range .*batch\.global_seqs"):
        load_sweep(_write(tmp_path, f"profiles: [gen2]\nworkloads: [{spec}]\n"))
    with pytest.raises(ConfigError, match=r"sweep\.yaml: set\[1\]: out of range"):
        load_sweep(_write(tmp_path, 'profiles: [gen2]\nset: ["parallelism.tp=8", "batch.micro=-1"]\n'))


def test_a_field_no_workload_of_a_mixed_sweep_has_stops_it_one_some_have_does_not(tmp_path):
    serve = _write(tmp_path, SERVE, "serve.yaml")
    head = f"profiles: [h100-dgx]\nworkloads: [llama3-8b, {serve}]\ngrid:\n"
    with pytest.raises(ConfigError, match=r"grid\.scheduler\.max_num_seq: unknown field"):
        load_sweep(_write(tmp_path, head + "  scheduler.max_num_seq: [8]\n"))
    load_sweep(_write(tmp_path, head + "  scheduler.max_num_seqs: [8]\n"))  # serving has it: runs


def test_points_that_do_not_fit_stay_per_point_results(tmp_path):
    """Valid values that do not fit the HBM, need more racks than the sweep gives or do not divide the
    model are each point's result (status error with the reason), not the sweep's input error."""
    job = _write(tmp_path, "model: llama3-8b\nparallelism: {tp: 8}\nbatch: {global_seqs: 64}\n", "job.yaml")
    path = _write(tmp_path, f"profiles: [gen1]\nworkloads: [{job}]\nracks: 1\nsteps: 1\ngrid:\n"
                  "  parallelism.pp: [1, 3]\n  parallelism.dp: [1, 64]\n  model.hidden: [65536]\n")  # fmt: skip
    result = run_sweep(load_sweep(path), out=tmp_path / "out", jobs=1)
    errors = [p["error"] for p in result.points if p["status"] == "error"]
    assert len(errors) == 4 and not (tmp_path / "out" / "points").exists()
    assert "GB of 80.0 GB" in errors[0] and "use --racks 16" in errors[1]
    assert all("does not divide layers = 32" in e for e in errors[2:])


def test_without_the_dask_extra_a_reused_out_keeps_the_earlier_sweep(tmp_path, monkeypatch):
    """--scheduler without Dask installed cannot run anything: one error naming the extra, and the earlier
    sweep's sweep.json and points stay (before: its points were removed and sweep.json emptied first)."""
    import sys

    import simcore.runner
    from simcore.errors import RacksimError

    def fake_run(opts):
        Path(opts.out).mkdir(parents=True, exist_ok=True)
        (Path(opts.out) / "summary.json").write_text("{}")
        return type("R", (), {"summary": {"step_time_s": 1.0, "mfu": 0.5}})()

    monkeypatch.setattr(simcore.runner, "run", fake_run)
    path = _write(
        tmp_path,
        'profiles: [gen1]\nworkloads: [llama3-8b]\ngrid:\n  scale_out.nic_bandwidth: ["100 Gb/s", "200 Gb/s"]\n',
    )
    spec, out = load_sweep(path), tmp_path / "out"
    run_sweep(spec, out=out, jobs=1)
    before = (out / "sweep.json").read_text()
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(RacksimError, match=r"needs Dask: pip install -e '\.\[dask\]'"):
        run_sweep(spec, out=out, jobs=1, scheduler="tcp://127.0.0.1:8786")
    assert (out / "sweep.json").read_text() == before
    assert sorted(p.name for p in (out / "points").iterdir()) == ["p000", "p001"]


SMALL = ["model.layers=4", "parallelism.tp=8", "batch.micro=1"]
STRAGGLER = 'stragglers=[{"gpu": 3, "speed": 0.7}]'


def _per_gpu(dp: int, sets: list[str]) -> float:
    from simcore.runner import RunOptions, run

    opts = RunOptions(profile="gen2", workload="llama3-8b", steps=1, write_trace=False,
                      sets=[*SMALL, f"parallelism.dp={dp}", f"batch.global_seqs={8 * dp}", *sets])  # fmt: skip
    return run(opts).summary["tokens_per_s_per_gpu"]


def test_compare_says_how_a_workloads_stragglers_scale_to_the_fleet(tmp_path):
    """compare sizes the fleet on the run's per-GPU throughput, which with stragglers carries their
    slowdown. That is right for the weak-scaling assumption: in one synchronous job every replica waits for
    the straggler, so four replicas with one straggler deliver per GPU what one replica with it does (the
    fleet does not need one straggler per job-sized block to be that slow), well below a healthy job. The
    table and compare.json say so (before: nothing told the user how stragglers were scaled)."""
    from simcore.compare import CompareOptions, format_table, run_compare

    one, four, healthy = _per_gpu(1, [STRAGGLER]), _per_gpu(4, [STRAGGLER]), _per_gpu(4, [])
    assert four == pytest.approx(one, rel=0.01) and four < 0.9 * healthy
    table = run_compare(CompareOptions(profiles=["gen2"], workload="llama3-8b", out=tmp_path / "cmp",
                                       sets=[*SMALL, STRAGGLER], steps=1, write_trace=False))  # fmt: skip
    assert "stragglers slow every job-sized block" in table["assumption"]
    assert "one straggler in the whole fleet costs as much as one per block" in format_table(table)
    m = table["profiles"][0]["metrics"]
    assert m["racks_needed"] == math.ceil(
        table["target_tokens_per_s"] / (m["tokens_per_s"] / m["racks_used"])
    )
    plain = run_compare(CompareOptions(profiles=["gen2"], workload="llama3-8b", out=tmp_path / "plain",
                                       sets=SMALL, steps=1, write_trace=False))  # fmt: skip
    assert "straggler" not in plain["assumption"]


def test_an_interrupt_before_the_first_point_does_not_claim_an_earlier_sweeps_points(
    tmp_path, monkeypatch, capsys
):
    """Ctrl-C while the sweep is still checking its points (or connecting to Dask) into a reused --out: the
    message must not read the earlier sweep's sweep.json as this sweep's finished points (before: "sweep
    interrupted; 2 of 2 point(s) finished ...")."""
    import simcore.sweep

    earlier = {"points": [{"label": "p000"}, {"label": "p001"}], "points_total": 2}
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps(earlier))

    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(simcore.sweep, "preflight", stopped)
    path = _write(tmp_path, "profiles: [gen2]\nworkloads: [llama3-8b]\nsteps: 1\n")
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1"]) == 130
    err = capsys.readouterr().err
    assert "finished" not in err and "before its first point" in err and str(out) in err
    assert json.loads((out / "sweep.json").read_text()) == earlier


@pytest.mark.parametrize(
    "body,where,says",
    [
        ('workloads: [llama3-8b, ""]', "workloads[1]", "empty workload name"),
        (
            'grid: {"parallelism.tp ": [1], parallelism.tp: [2]}',
            "grid.parallelism.tp",
            "the same field path twice",
        ),
    ],
)
def test_more_sweep_file_mistakes_name_the_file_and_the_field(tmp_path, body, where, says):
    """An empty workload name was reported as "--workload: ..." (no sweep file, no field); a grid key given
    twice up to spaces silently dropped the first key's values (2 points expected, 1 run)."""
    path = _write(tmp_path, f"profiles: [gen2]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert str(info.value).startswith(f"{path}: {where}: {says}")


@pytest.mark.parametrize(
    "grid,says",
    [
        ("scale_up.domain_size: [72, 0]", "out of range"),
        ('scale_up.domain_size: [72, "x"]', "must be a number"),
        ('accelerator.tdp: ["-700 W"]', "must be positive"),
        ('cooling.inlet_temp: ["-300 degC"]', "below absolute zero"),
    ],
)
def test_a_profile_value_out_of_range_stops_the_sweep_too(tmp_path, grid, says):
    """Only some kinds of bad profile values (a unit that does not parse, an unknown field) were stopped up
    front; one out of range or not a number was each point's "could not run", exit 0."""
    path = _write(tmp_path, f"profiles: [gen2, h100-dgx]\nworkloads: [llama3-8b]\ngrid:\n  {grid}\n")
    key = grid.split(":")[0]
    with pytest.raises(ConfigError, match=f"sweep.yaml: grid.{key}: {says}"):
        load_sweep(path)


@pytest.mark.parametrize("metric", ["workload.", "workload..tp", ".mfu"])
def test_a_metric_with_an_empty_part_stops_the_sweep(tmp_path, metric):
    """A dotted metric with an empty part (``workload.``) passed the check by its first key and then showed
    '-' in every row; it is a typo, refused in one line before anything runs."""
    path = _write(tmp_path, f"profiles: [gen2]\nworkloads: [llama3-8b]\nmetrics: [mfu, '{metric}']\n")
    with pytest.raises(ConfigError, match="empty part") as err:
        load_sweep(path)
    assert f"{path}: metrics[1]: " in str(err.value)
