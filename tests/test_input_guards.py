"""Inputs that used to run into nonsense or a traceback: each is now one line naming the field, exit 2."""

from __future__ import annotations

import pytest

from simcore.cli import main


def _error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]  # progress lines come first on stderr
    assert last.startswith("racksim") and "error" in last and "Traceback" not in err, err
    return last


def test_a_rack_limit_below_the_idle_draw_is_refused(capsys, tmp_path):
    err = _error(capsys, ["--profile", "h100-dgx", "--set", "rack.power_limit=5 kW", "--steps", "1",
                          "--out", str(tmp_path / "o")])  # fmt: skip
    assert "rack.power_limit" in err and "idle draw" in err and "expected >=" in err


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("calibration.host_kernel_time=35 s", "implausibly large"),
        ("accelerator.kernel_overhead=1000 s", "implausibly large"),
        ("calibration.step_host_time=1e9 s", "implausibly large"),
        ("cooling.inlet_temp=-300 degC", "below absolute zero"),
        ("cooling.inlet_temp=300 degC", "implausibly large"),  # a Kelvin value written as degC
        ("cooling.facility.outside_temp=293 degC", "implausibly large"),
        ("cooling.facility.outside_temp=-120 degC", "implausibly small"),
        ("scale_up.bandwidth=1 MB/s", "implausibly small"),  # collectives of hours: the run had no end
        ("scale_out.nic_bandwidth=1 Mb/s", "implausibly small"),
        ("accelerator.hbm_bandwidth=3.35 MB/s", "implausibly small"),
    ],
)
def test_unit_slips_are_caught_before_a_run_of_hours(capsys, tmp_path, setting, words):
    err = _error(
        capsys, ["--profile", "gen2", "--set", setting, "--steps", "1", "--out", str(tmp_path / "o")]
    )
    assert setting.split("=")[0] in err and words in err


def test_empty_names_are_errors_not_defaults(capsys):
    assert "empty profile name" in _error(capsys, ["--profile", ""])
    assert "empty workload name" in _error(capsys, ["--profile", "gen2", "--workload", ""])
    assert "empty output directory" in _error(capsys, ["--profile", "gen2", "--out", " "])


def test_an_output_path_that_is_a_file_is_one_line(capsys, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    err = _error(
        capsys, ["--profile", "gen2", "--workload", "llama3-8b", "--steps", "1", "--out", str(taken)]
    )
    assert str(taken) in err and "--out" in err and "not a directory" in err


def test_an_unknown_workload_kind_lists_both_kinds(capsys, tmp_path):
    spec = tmp_path / "w.yaml"
    spec.write_text("kind: serving\nmodel: llama3-8b\n")
    err = _error(capsys, ["--profile", "gen2", "--workload", str(spec)])
    assert "kind" in err and "training or inference" in err


@pytest.mark.parametrize(
    ("setting", "field", "words"),
    [
        ("rack.bus_voltage=1e-9 V", "rack.bus_voltage", "exceed the rack's power"),
        ("rack.distribution_resistance=5 mohm", "rack.bus_voltage", "% of the rack's power"),
        ("rack.psu_rated_power=1 W", "rack.psu_rated_power", "idle draw"),
    ],
)
def test_a_rack_that_cannot_deliver_its_power_is_refused(capsys, tmp_path, setting, field, words):
    err = _error(
        capsys, ["--profile", "gen2", "--set", setting, "--steps", "1", "--out", str(tmp_path / "o")]
    )
    assert field in err and words in err


def test_a_trace_without_steps_is_one_line(capsys, tmp_path):
    import h5py

    out = tmp_path / "run"
    assert main(["--profile", "gen2", "--workload", "llama3-8b", "--steps", "1", "--out", str(out)]) == 0
    with h5py.File(out / "trace.h5", "a") as f:
        del f["steps"]
    capsys.readouterr()
    assert "no /steps" in _error(capsys, ["analyze", str(out / "trace.h5")])


def test_validate_with_a_misspelt_set_stops_before_any_row(capsys):
    err = _error(capsys, ["validate", "--rows", "mpt-1b", "--set", "calibrtion.host_kernel_time=0us"])
    assert "--set calibrtion" in err and "did you mean 'calibration'" in err


def test_a_request_longer_than_the_cache_blames_the_request_not_the_weights(capsys, tmp_path):
    spec = tmp_path / "serve.yaml"
    spec.write_text("kind: inference\nmodel: llama3-8b\nprecision: fp8\n"
                    "requests: {count: 2, input_tokens: 100000000, output_tokens: 8}\n")  # fmt: skip
    err = _error(capsys, ["--profile", "h100-dgx", "--workload", str(spec), "--out", str(tmp_path / "o")])
    assert "one request of 100,000,008 tokens" in err and "shorter requests" in err


def test_an_empty_rank_list_and_a_missing_golden_dir_are_one_line(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["--profile", "gen2", "--workload", "llama3-8b", "--steps", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    err = _error(
        capsys, ["export-perfetto", str(out / "trace.h5"), "--ranks", ",", "--out", str(tmp_path / "p.json")]
    )
    assert "--ranks" in err and "no rank class" in err
    assert "no such directory" in _error(
        capsys, ["bench", "check-golden", "--golden-dir", str(tmp_path / "none")]
    )


def test_recompute_layers_beyond_the_model_is_one_line(capsys, tmp_path):
    err = _error(capsys, ["--profile", "gen2", "--workload", "llama3-8b", "--set", "parallelism.recompute=full",
                          "--set", "parallelism.recompute_layers=100", "--out", str(tmp_path / "o")])  # fmt: skip
    assert "parallelism.recompute_layers" in err and "more layers" in err


def test_an_empty_only_is_an_error_and_a_layout_too_big_for_the_row_says_racks(capsys, tmp_path):
    assert "--only" in _error(capsys, ["bench", "check-golden", "--only", ""])
    from workloads.validation import load_table, select_rows, validate

    table, _ = load_table()
    report = validate(
        {"runs": select_rows(table, ["megatron-sc21-t1-1.7B"])}, extra_sets=["parallelism.tp=3"]
    )
    (row,) = report.rows
    assert not row.runnable and row.reason.startswith("does not fit the row's racks: the job needs")


_SPEC_TAIL = "parallelism: {tp: 8}\nbatch: {global_seqs: 8, micro: 1}\n"


@pytest.mark.parametrize(
    ("head", "words"),
    [
        ("model: llama3-8B\n", ("spec.yaml: model: unknown model preset", "did you mean 'llama3-8b'")),
        ("preset: llama3-8B\n", ("spec.yaml: preset: unknown model preset",)),
        ("model: llama3-8b\npreset: llama3-70b\n", ("spec.yaml: preset: the model is given twice",)),
        ("model: llama3-8b\nprecision: fp4\n", ("spec.yaml: precision:", "H100", "no fp4 tensor throughput")),
    ],
)
def test_workload_mistakes_name_the_workload_file_and_its_field(capsys, tmp_path, head, words):
    """The fix belongs in the workload, so the error names the workload file and field, not the profile."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: training\n" + head + _SPEC_TAIL)
    err = _error(capsys, ["--profile", "h100-dgx", "--workload", str(spec), "--out", str(tmp_path / "o")])
    for word in words:
        assert word in err, err


@pytest.mark.parametrize(
    ("name", "words"), [("missing.yaml", "missing.yaml: no such file"), ("DIR", "is a directory")]
)
def test_a_workload_path_that_is_not_a_file_says_so_before_listing_presets(capsys, tmp_path, name, words):
    name = str(tmp_path) if name == "DIR" else name
    err = _error(capsys, ["--profile", "h100-dgx", "--workload", name, "--out", str(tmp_path / "o")])
    assert words in err and "deepseek-v3" not in err


def test_a_misspelled_set_key_is_neither_blamed_on_the_profile_nor_ignored(capsys, tmp_path):
    err = _error(capsys, ["--profile", "gen2", "--set", "paralelism.tp=4", "--out", str(tmp_path / "o")])
    assert "--set: unknown field 'paralelism'" in err and "did you mean 'parallelism'" in err
    assert "a workload field" in err and "a profile section" in err
