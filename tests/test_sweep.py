"""``racksim sweep``: the grid expands in a fixed order, every point is an ordinary run (same seed, same
numbers), physics holds across the grid, infeasible points are results, and bad sweep files are one line."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest

from simcore.cli import main
from simcore.errors import ConfigError
from simcore.runner import RunOptions, run
from simcore.sweep import DEFAULT_METRICS, expand, load_sweep, run_sweep

NIC_SWEEP = """\
name: nic
profiles: [gen1.yaml]
workloads: [llama3-8b]
racks: 2
steps: 1
set: ["parallelism.tp=8"]
grid:
  scale_out.nic_bandwidth: ["100 Gb/s", "200 Gb/s", "400 Gb/s", "800 Gb/s"]
  parallelism.pp: [1, 3]
"""


def _write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expands_in_file_order_with_one_set_per_value(tmp_path):
    spec = load_sweep(_write(tmp_path, NIC_SWEEP))
    points = expand(spec, tmp_path / "out")
    assert spec.size == len(points) == 8
    assert [p.label for p in points] == [f"p{i:03d}" for i in range(8)]
    assert points[0].params == {
        "profile": "gen1", "workload": "llama3-8b", "scale_out.nic_bandwidth": "100 Gb/s", "parallelism.pp": 1
    }  # fmt: skip
    assert points[1].params["parallelism.pp"] == 3  # the last grid key varies fastest
    assert points[1].sets == ("parallelism.tp=8", 'scale_out.nic_bandwidth="100 Gb/s"', "parallelism.pp=3")
    assert points[5].out_dir == str(tmp_path / "out" / "points" / "p005")


def test_sweep_points_are_ordinary_runs_and_more_bandwidth_is_never_slower(tmp_path):
    spec = load_sweep(_write(tmp_path, NIC_SWEEP))
    result = run_sweep(spec, out=tmp_path / "out", jobs=1)
    by = {(p["params"]["scale_out.nic_bandwidth"], p["params"]["parallelism.pp"]): p for p in result.points}
    assert result.counts == {"ok": 4, "error": 4, "crashed": 0}
    # pp 3 does not divide llama3-8b's 32 layers: a result with its reason, not a failure
    assert all("pp" in by[(bw, 3)]["error"] for bw in ("100 Gb/s", "200 Gb/s", "400 Gb/s", "800 Gb/s"))
    steps = [by[(bw, 1)]["summary"]["step_time_s"] for bw in ("100 Gb/s", "200 Gb/s", "400 Gb/s", "800 Gb/s")]
    assert all(a >= b for a, b in itertools.pairwise(steps)) and steps[0] > steps[-1]
    # identical to running the point by hand (same seed, same options)
    direct = run(
        RunOptions(profile="gen1.yaml", workload="llama3-8b", racks=2, steps=1, write_trace=False,
                   sets=["parallelism.tp=8", "scale_out.nic_bandwidth=200 Gb/s", "parallelism.pp=1"])
    ).summary  # fmt: skip
    assert by[("200 Gb/s", 1)]["summary"]["step_time_s"] == direct["step_time_s"]
    assert by[("200 Gb/s", 1)]["summary"]["energy_per_token_j"] == direct["energy_per_token_j"]
    # outputs: sweep.json (all points), sweep.csv (one row each), each point's summary.json, no trace
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [p["label"] for p in saved["points"]] == [f"p{i:03d}" for i in range(8)]
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").open()))
    assert len(rows) == 8 and rows[0]["status"] == "ok" and float(rows[0]["step_time_s"]) == steps[0]
    assert rows[1]["status"] == "error" and rows[1]["step_time_s"] == ""
    assert (tmp_path / "out" / "points" / "p000" / "summary.json").is_file()
    assert not list((tmp_path / "out").rglob("trace.h5"))


def _numbers(result) -> list:
    return [(p["label"], p["status"], (p.get("summary") or {}).get("step_time_s")) for p in result.points]


def test_process_pool_and_dask_give_the_same_answers_as_one_process(tmp_path):
    spec = load_sweep(_write(tmp_path, NIC_SWEEP.replace('"100 Gb/s", "200 Gb/s", ', "")))
    inline = run_sweep(spec, out=tmp_path / "a", jobs=1)
    pooled = run_sweep(spec, out=tmp_path / "b", jobs=2)
    assert _numbers(pooled) == _numbers(inline)
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        on_dask = run_sweep(spec, out=tmp_path / "c", scheduler=cluster.scheduler_address)
    assert _numbers(on_dask) == _numbers(inline)


def test_a_crashing_point_keeps_the_others_and_the_command_exits_1(tmp_path, monkeypatch, capsys):
    import simcore.runner

    real = simcore.runner.run

    def flaky(opts):
        if "parallelism.pp=3" in opts.sets:
            raise ZeroDivisionError("boom")
        return real(opts)

    monkeypatch.setattr(simcore.runner, "run", flaky)
    path = _write(tmp_path, NIC_SWEEP.replace('"100 Gb/s", "200 Gb/s", "400 Gb/s", ', ""))
    code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "1 ran, 0 could not run, 1 crashed" in out and "ZeroDivisionError: boom" in err


@pytest.mark.parametrize(
    "text,where,says",
    [
        ("profiles: [gen22.yaml]\n", "profiles[0]", "did you mean 'gen2'?"),
        ("profiles: gen2.yaml\nworkload: llama3-8b\n", "workload", "did you mean workloads?"),
        ("profiles: gen2.yaml\nworkloads: [llama9]\n", "workloads[0]", "workload not found"),
        ("profiles: gen2.yaml\ngrid: {parallelism.tp: 4}\n", "grid.parallelism.tp", "e.g. [4, 8]"),
        ("profiles: gen2.yaml\nset: [parallelism.tp]\n", "set[0]", "key.path=value"),
        ("profiles: gen2.yaml\nsteps: 0\n", "steps", "a positive integer"),
        ("profiles: gen2.yaml\nsteps: 200000\n", "steps", "too many steps to simulate one by one"),
        ("profiles: gen2.yaml\nseed: -1\n", "seed", "a whole number >= 0"),
        ("profiles: gen2.yaml\nseed: null\n", "seed", "a whole number >= 0"),
        ("workloads: [llama3-8b]\n", "profiles", "one or more hardware profiles"),
        (
            "profiles: gen2.yaml\ngrid: {a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], b: "
            + str(list(range(1001)))
            + "}\n",
            "grid",
            "at most 10,000",
        ),
    ],
)
def test_bad_sweep_files_are_one_line_naming_the_field(tmp_path, capsys, text, where, says):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert f"{path}: {where}:" in str(info.value) and says in str(info.value)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("racksim: error:")


def test_a_directory_is_not_a_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path}: is a directory"):
        load_sweep(tmp_path)


def test_the_shipped_example_sweep_is_valid():
    spec = load_sweep(Path(__file__).parent.parent / "examples" / "sweep-nic-tp.yaml")
    assert spec.size == 8 and spec.profiles == ["gen1.yaml", "gen2.yaml"]


def test_the_host_bound_example_shows_launch_costs_micro_batches_and_cuda_graphs(tmp_path):
    spec = load_sweep(Path(__file__).parent.parent / "examples" / "sweep-host-bound.yaml")
    result = run_sweep(spec, out=tmp_path / "out", jobs=1)
    rows = {
        (
            p["params"]["calibration.host_kernel_time"],
            p["params"]["batch.micro"],
            p["params"]["kernels.cuda_graphs"],
        ): p
        for p in result.points
    }
    assert len(rows) == 12 and all(p["status"] == "ok" for p in rows.values())

    def step(host, micro, graphs):
        return rows[(host, micro, graphs)]["summary"]["step_time_s"]

    # No host cost: graphs change nothing; more host time per kernel never speeds a run up; graphs never
    # slow one down; a larger micro-batch amortises the launches.
    assert step("0 us", 1, False) == step("0 us", 1, True)
    for micro in (1, 2):
        for graphs in (False, True):
            s = [step(h, micro, graphs) for h in ("0 us", "35 us", "65 us")]
            assert s == sorted(s)
        assert step("65 us", micro, True) <= step("65 us", micro, False)
    assert step("65 us", 2, False) < step("65 us", 1, False)
    # Without launch costs the GPUs wait only for the host's per-step work (b200-dgx: 70 ms per step).
    no_launch = rows[("0 us", 1, False)]["summary"]
    assert no_launch["host_wait_fraction"] * no_launch["step_time_s"] == pytest.approx(0.070, rel=1e-6)
    assert rows[("65 us", 1, False)]["summary"]["host_wait_fraction"] > 0.5


def test_an_interrupted_sweep_keeps_the_points_it_finished(tmp_path):
    spec = load_sweep(_write(tmp_path, NIC_SWEEP))
    seen = []

    def stop_after_two(msg: str) -> None:
        seen.append(msg)
        if len(seen) == 3:  # the header line, then two finished points
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out=tmp_path / "out", jobs=1, progress=stop_after_two)
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert saved["complete"] is False and saved["points_total"] == 8
    assert [p["label"] for p in saved["points"]] == ["p000", "p001"]
    assert len((tmp_path / "out" / "sweep.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    "extra",
    ['set: ["cooling.inlt_temp=30 degC"]', 'grid:\n  scale_out.nic_bandwith: ["400 Gb/s", "800 Gb/s"]'],
)
def test_a_misspelt_set_or_grid_field_stops_the_sweep_before_any_point(tmp_path, extra):
    path = _write(tmp_path, f"name: typo\nprofiles: [gen2]\nworkloads: [llama3-8b]\nsteps: 1\n{extra}\n")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown field") as err:  # caught while reading the sweep file
        run_sweep(load_sweep(path), out=out, jobs=1)
    msg = str(err.value)
    assert "did you mean" in msg and ("sweep.yaml: set[0]:" in msg or "sweep.yaml: grid.scale_out" in msg)
    assert not out.exists()  # nothing ran, nothing written


def test_a_grid_value_with_a_bad_unit_stops_the_sweep_while_reading_it(tmp_path):
    path = _write(tmp_path, 'name: unit\nprofiles: [gen2]\nworkloads: [llama3-8b]\n'
                  'grid:\n  scale_out.nic_bandwidth: ["400 Gb/s", "800 Gbs"]\n')  # fmt: skip
    with pytest.raises(ConfigError, match="wrong unit") as err:
        load_sweep(path)
    assert "grid.scale_out.nic_bandwidth" in str(err.value) and "did you mean '800 Gb/s'" in str(err.value)


def test_a_field_only_some_workloads_have_keeps_the_sweep_running(tmp_path):
    """scheduler.* belongs to serving: the training points fail one by one, the serving points run."""
    serve = _write(tmp_path, "kind: inference\nmodel: llama3-8b\nprecision: fp8\n"
                   "requests: {count: 4, input_tokens: 64, output_tokens: 4}\n", "serve.yaml")  # fmt: skip
    path = _write(tmp_path, f"name: mixed\nprofiles: [h100-dgx]\nworkloads: [llama3-8b, {serve}]\n"
                  "grid:\n  scheduler.max_num_seqs: [8, 16]\n")  # fmt: skip
    result = run_sweep(load_sweep(path), out=tmp_path / "out", jobs=1)
    status = sorted(r["status"] for r in result.points)
    assert status == ["error", "error", "ok", "ok"]


def test_a_misspelt_metric_stops_the_sweep_before_any_point(tmp_path, capsys):
    path = _write(
        tmp_path, "name: m\nprofiles: [gen2]\nworkloads: [llama3-8b]\nmetrics: [step_time_s, mfuu]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert f"{path}: metrics[1]: " in str(err.value) and "got 'mfuu'" in str(err.value)
    assert "did you mean 'mfu'?" in str(err.value)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "metrics[1]" in err_text and "running" not in err_text
    assert not out.exists()


def test_a_metric_no_point_has_gets_a_note_and_long_errors_are_cut_at_a_word(tmp_path):
    """A key only serving summaries have, in a training sweep, is a note after the table; a dotted metric
    reads a nested value."""
    from simcore.sweep import _short_error, format_table

    path = _write(tmp_path, "name: m\nprofiles: [gen2]\nworkloads: [llama3-8b]\nsteps: 1\n"
                  "metrics: [ttft_s_p50, mfu, workload.parallelism.tp]\n")  # fmt: skip
    result = run_sweep(load_sweep(path), out=tmp_path / "out", jobs=1)
    table = format_table(result)
    assert "note: metric 'ttft_s_p50' is in no point's summary.json" in table
    assert "'mfu'" not in table and "'workload.parallelism.tp'" not in table  # those are there: no note
    tp = result.points[0]["summary"]["workload"]["parallelism"]["tp"]
    row = next(csv.DictReader((tmp_path / "out" / "sweep.csv").open()))
    assert row["workload.parallelism.tp"] == str(tp) and row["ttft_s_p50"] == ""
    cut = _short_error("error: " + "word " * 60)
    assert cut.endswith("word ... (full text in sweep.json)") and len(cut) <= 160


SERVE = "kind: inference\nmodel: llama3-8b\nprecision: fp8\nrequests: {count: 4, input_tokens: 64, output_tokens: 4}\n"


def test_summary_fields_are_the_keys_training_serving_and_job_summaries_hold(tmp_path):
    """The metric check's list is exact: every key of a real training, serving and multi-day-job summary is
    in it, and it holds no key none of them writes."""
    from simcore.sweep import SUMMARY_FIELDS

    serve = _write(tmp_path, SERVE, "serve.yaml")
    job = _write(
        tmp_path,
        "model: llama3-8b\nparallelism: {tp: 8}\nbatch: {global_seqs: 64}\njob: {steps: 1000}\n",
        "job.yaml",
    )
    opts = {"profile": "h100-dgx", "write_trace": False}
    train = run(RunOptions(workload="llama3-8b", steps=1, **opts)).summary
    serving = run(RunOptions(workload=str(serve), **opts)).summary
    replay = run(RunOptions(workload=str(job), steps=1, **opts)).summary
    assert set(train) | set(serving) | set(replay) <= SUMMARY_FIELDS
    assert not SUMMARY_FIELDS - set(train) - set(serving) - set(replay)


def test_sweep_steps_apply_to_training_workloads_only(tmp_path):
    """A serving run refuses --steps (it serves its request stream): in a mixed sweep `steps:` must not
    make every serving point fail."""
    serve = _write(tmp_path, SERVE, "serve.yaml")
    path = _write(tmp_path, f"name: mixed\nprofiles: [h100-dgx]\nworkloads: [llama3-8b, {serve}]\nsteps: 1\n")
    spec = load_sweep(path)
    assert [p.steps for p in expand(spec)] == [1, None]
    result = run_sweep(spec, out=tmp_path / "out", jobs=1)
    assert [r["status"] for r in result.points] == ["ok", "ok"], [r.get("error") for r in result.points]
    assert result.points[0]["summary"]["workload"]["steps"] == 1
    assert result.points[1]["summary"]["requests_completed"] == 4


def test_a_value_only_one_profile_rejects_fails_only_that_profiles_points(tmp_path):
    """A consistency check (a power cap below gen2's idle draw) is a point's error, not the sweep's."""
    path = _write(tmp_path, 'name: cap\nprofiles: [h100-dgx, gen2]\nworkloads: [llama3-8b]\nsteps: 1\n'
                  'grid:\n  accelerator.power_cap: ["120 W", "500 W"]\n')  # fmt: skip
    result = run_sweep(load_sweep(path), out=tmp_path / "out", jobs=1)
    status = {
        (r["params"]["profile"], r["params"]["accelerator.power_cap"]): r["status"] for r in result.points
    }
    assert status[("gen2", "120 W")] == "error"
    assert [s for k, s in status.items() if k != ("gen2", "120 W")] == ["ok", "ok", "ok"]


def test_the_layout_each_point_ran_is_in_the_csv_and_in_the_table_when_it_varies(tmp_path):
    """With a model preset racksim picks the layout per point: a sweep over scale-up domains must say which
    it chose (a user test had to add workload.parallelism.* metrics by hand to see it)."""
    import io

    from simcore.sweep import SweepResult, format_table, to_csv

    (tmp_path / "s.yaml").write_text(
        "name: l\nprofiles: [gen2.yaml]\nworkloads: [deepseek-v3]\ngrid: {scale_up.domain_size: [8, 72, 144]}\n"
    )
    spec = load_sweep(tmp_path / "s.yaml")
    par = {"tp": 1, "pp": 9, "dp": 32, "cp": 1, "ep": 8}
    points = [
        {"label": "p000", "params": {"scale_up.domain_size": 8}, "status": "error", "error": "x" * 60},
        {"label": "p001", "params": {"scale_up.domain_size": 72}, "status": "ok",
         "summary": {"workload": {"parallelism": par}}},
        {"label": "p002", "params": {"scale_up.domain_size": 144}, "status": "ok",
         "summary": {"workload": {"parallelism": {**par, "pp": 3, "dp": 96, "ep": 16}}}},
    ]  # fmt: skip
    result = SweepResult(spec, tmp_path, points, 1.0, 3)
    rows = list(csv.DictReader(io.StringIO(to_csv(result))))
    assert [r["layout"] for r in rows] == ["", "tp1 pp9 dp32 ep8", "tp1 pp3 dp96 ep16"]
    header = format_table(result).splitlines()[0]
    assert header.split()[:3] == ["point", "scale_up.domain_size", "layout"]
    # the layout column is as wide as its widest layout; the error message runs past it instead
    assert header.index(spec.metrics[0]) - header.index("layout") == len("tp1 pp3 dp96 ep16") + 2
    points[2]["summary"] = points[1]["summary"]
    assert "layout" not in format_table(result).splitlines()[0]  # the same layout everywhere: no column


def test_the_csv_has_each_quantity_grid_value_in_si_units_next_to_it(tmp_path):
    """A grid over a physical quantity gets a column in the SI unit the loaders convert it to, so a plot
    needs no unit parsing; a grid over a count or a choice gets none, and the other columns stay as they were."""
    path = _write(tmp_path, 'name: si\nprofiles: [gen1.yaml]\nworkloads: [llama3-8b]\nracks: 2\nsteps: 1\n'
                  'set: ["parallelism.tp=8"]\n'
                  'grid:\n  scale_out.nic_bandwidth: ["400 Gb/s", "0.1 TB/s"]\n  parallelism.pp: [1]\n')  # fmt: skip
    run_sweep(load_sweep(path), out=tmp_path / "out", jobs=1)
    with (tmp_path / "out" / "sweep.csv").open() as f:
        header, *rows = list(csv.reader(f))
    assert header == ["label", "profile", "workload", "scale_out.nic_bandwidth", "scale_out.nic_bandwidth [B/s]",
                      "parallelism.pp", "status", "layout", *DEFAULT_METRICS, "error"]  # fmt: skip
    by_name = [dict(zip(header, row, strict=True)) for row in rows]
    assert [r["scale_out.nic_bandwidth"] for r in by_name] == ["400 Gb/s", "0.1 TB/s"]  # as written
    assert [float(r["scale_out.nic_bandwidth [B/s]"]) for r in by_name] == [50e9, 100e9]
    assert [r["parallelism.pp"] for r in by_name] == ["1", "1"] and {r["status"] for r in by_name} == {"ok"}


@pytest.mark.parametrize(
    "key,values,column,si",
    [
        ("cooling.inlet_temp", ["45 degC", "113 degF"], "cooling.inlet_temp [degC]", [45.0, 45.0]),
        ("cooling.facility.approach", ["8 degC", "8 K"], "cooling.facility.approach [K]", [8.0, 8.0]),
        (
            "accelerator.peak_flops.bf16",
            ["1 PFLOP/s", "989 TFLOP/s"],
            "accelerator.peak_flops.bf16 [FLOP/s]",
            [1e15, 989e12],
        ),
        ("scale_up.latency", ["2 us", "500 ns"], "scale_up.latency [s]", [2e-6, 5e-7]),
        ("job.checkpoint_bytes", ["1 TB", "512 GiB"], "job.checkpoint_bytes [B]", [1e12, 512 * 2**30]),
        ("accelerator.hbm_capacity", ["80 GB", "80"], "accelerator.hbm_capacity [B]", [80e9, None]),
    ],
)
def test_si_columns_use_the_unit_the_loader_converts_each_field_to(tmp_path, key, values, column, si):
    """Profile and workload quantities alike, parsed by simcore.units as the loaders parse them (a degF
    inlet is 45 degC, an 8 degC approach is 8 K); a value that does not parse (that point's error) is empty."""
    import io

    from simcore.sweep import SweepResult, SweepSpec, to_csv

    spec = SweepSpec(file="s.yaml", name="s", profiles=["gen2.yaml"], workloads=[None], grid={key: values})
    points = [
        {"label": f"p{i:03d}", "params": {key: v}, "status": "ok", "summary": {}}
        for i, v in enumerate(values)
    ]
    rows = list(csv.DictReader(io.StringIO(to_csv(SweepResult(spec, tmp_path, points, 1.0, len(points))))))
    assert list(rows[0])[2:6] == ["workload", key, column, "status"]  # right after its grid column
    assert [r[key] for r in rows] == values
    assert [float(r[column]) if r[column] else None for r in rows] == pytest.approx(si)


@pytest.mark.parametrize(
    "key,values",
    [("parallelism.tp", [2, 8]), ("precision", ["bf16", "fp8"]), ("cooling.type", ["air", "liquid"]),
     ("scale_up.domain_size", [8, 72]), ("model.layers", [32, 64])],
)  # fmt: skip
def test_a_grid_over_a_count_or_a_choice_gets_no_si_column(tmp_path, key, values):
    from simcore.sweep import SweepResult, SweepSpec, to_csv

    spec = SweepSpec(file="s.yaml", name="s", profiles=["gen2.yaml"], workloads=[None], grid={key: values})
    points = [
        {"label": f"p{i:03d}", "params": {key: v}, "status": "ok", "summary": {}}
        for i, v in enumerate(values)
    ]
    header = to_csv(SweepResult(spec, tmp_path, points, 1.0, len(points))).splitlines()[0].split(",")
    assert header[:5] == ["label", "profile", "workload", key, "status"]
