"""Findings of the user-facing input audit: each bad input here once crashed with a traceback, or was
accepted into a nonsense run, and must now be one ConfigError line naming the file, the field and the value."""

from __future__ import annotations

import pytest

from simcore.errors import ConfigError, RacksimError
from simcore.profile import load_profile
from simcore.schema import MAX_COUNT, PLAUSIBLE_MAXIMUM


def profile_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_profile("gen2.yaml", overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# A huge count reached numpy (OverflowError in the cluster's tier blocks and the power model's rack mix),
# a huge bus voltage overflowed float ** 2 in the distribution-loss check; others ran with 1e299 W fabrics.
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("rack.gpus_per_tray=1e300", "rack.gpus_per_tray"),
        ("rack.trays_per_rack=1e300", "rack.trays_per_rack"),
        ("cluster.racks=1e300", "cluster.racks"),
        (f"cluster.racks={MAX_COUNT + 1}", "cluster.racks"),
        ("rack.bus_voltage=1e300 V", "rack.bus_voltage"),
        ("accelerator.shutdown_temp=1e300 degC", "accelerator.shutdown_temp"),
        ("scale_out.nic_bandwidth=1e300 Gb/s", "scale_out.nic_bandwidth"),
        ("rack.psu_rated_power=1e300 W", "rack.psu_rated_power"),
        ("cooling.c_plate=1e300 J/K", "cooling.c_plate"),
        ("reliability.detect_time=1e300 s", "reliability.detect_time"),
    ],
)
def test_huge_profile_values_are_refused(override: str, field: str) -> None:
    message = profile_error(override)
    assert f"--set {override}" in message
    assert f"{field}: implausibly large" in message


def test_ceilings_leave_every_shipped_value_far_below() -> None:
    """The generic ceilings must not bite real hardware: gen3 (the largest shipped numbers) is 100x under."""
    p = load_profile("gen3.yaml")
    assert p.rack.power_limit * 100 < PLAUSIBLE_MAXIMUM["power"]
    assert p.accelerator.hbm_bandwidth * 100 < PLAUSIBLE_MAXIMUM["bandwidth"]
    assert max(p.accelerator.peak_flops.values()) * 100 < PLAUSIBLE_MAXIMUM["flops_rate"]
    assert p.cluster.racks * p.rack.gpus_per_tray * p.rack.trays_per_rack * 100 < MAX_COUNT


def test_largest_count_still_loads() -> None:
    """MAX_COUNT itself is accepted (the ceiling is not off by one)."""
    p = load_profile("gen2.yaml", [f"cluster.racks={MAX_COUNT}"])
    assert p.cluster.racks == MAX_COUNT


# Each of these ran forever: one op took years of simulated time and the power model's 50 ms control tick
# stepped through all of it (tiny efficiencies divide every op's time; a huge half_dim makes GEMMs ~0 %
# efficient; a huge oversubscription divides the fabric's uplinks).
@pytest.mark.parametrize(
    ("override", "field", "expected"),
    [
        ("calibration.gemm.bf16.max_efficiency=1e-300", "calibration.gemm.bf16.max_efficiency", "[0.01, 1]"),
        ("calibration.gemm.bf16.half_dim=1e9", "calibration.gemm.bf16.half_dim", "[0, 1000000]"),
        ("calibration.attention_half_head_dim=1e9", "calibration.attention_half_head_dim", "[0, 1000000]"),
        ("calibration.hbm_efficiency=1e-12", "calibration.hbm_efficiency", "[0.01, 1]"),
        ("calibration.attention_efficiency=0.001", "calibration.attention_efficiency", "[0.01, 1]"),
        ("scale_up.efficiency=1e-12", "scale_up.efficiency", "[0.01, 1]"),
        ("scale_up.in_switch_efficiency=1e-12", "scale_up.in_switch_efficiency", "[0.01, 1]"),
        ("scale_out.efficiency=0.0094", "scale_out.efficiency", "[0.01, 1]"),
    ],
)
def test_time_stretching_calibration_is_refused(override: str, field: str, expected: str) -> None:
    message = profile_error(override)
    assert f"{field}: out of range" in message and f"expected a number in {expected}" in message


def test_huge_oversubscription_is_refused(tmp_path) -> None:
    import yaml

    from simcore.profile import PROFILES_DIR

    data = yaml.safe_load((PROFILES_DIR / "gen2.yaml").read_text())
    data["scale_out"]["tiers"][1]["oversubscription"] = 1e300
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_profile(tmp_path / "over.yaml")
    assert "over.yaml: scale_out.tiers[1].oversubscription: out of range" in str(info.value)
    assert "[1, 1000]" in str(info.value)


def _spec_error(tmp_path, text: str) -> str:
    from simcore.runner import RunOptions, build_training_spec

    (tmp_path / "job.yaml").write_text(text)
    opts = RunOptions(profile="h100-dgx.yaml", workload=str(tmp_path / "job.yaml"))
    with pytest.raises(ConfigError) as info:
        build_training_spec(opts, load_profile("h100-dgx.yaml"), [])
    message = str(info.value)
    assert "\n" not in message and "job.yaml" in message
    return message


SPEC = """\
kind: training
model: {{preset: llama3-8b, layers: {layers}}}
parallelism: {{tp: 2, dp: 2}}
batch: {{global_seqs: {seqs}, micro: 1}}
steps: 1
"""


def test_mistyped_layer_count_is_refused(tmp_path) -> None:
    """layers: 10**18 hung the loader (per-layer tables); 10,000 is ~80x the deepest preset."""
    message = _spec_error(tmp_path, SPEC.format(layers=10**18, seqs=4))
    assert "model.layers: implausibly large; got 1000000000000000000" in message
    assert "1 to 10,000" in message


def test_mistyped_global_batch_is_refused(tmp_path) -> None:
    """global_seqs: 2e9 on dp 2 is 1e9 micro-batches per step, each simulated event by event: it ran for days."""
    message = _spec_error(tmp_path, SPEC.format(layers=2, seqs=2_000_000_000))
    assert "batch.global_seqs: too many micro-batches per step" in message
    assert "here 1,000,000,000" in message


def test_largest_micro_batch_count_is_allowed(tmp_path) -> None:
    """The cap is on micro-batches, not sequences: 100,000 per replica still builds."""
    from simcore.runner import RunOptions, build_training_spec

    (tmp_path / "job.yaml").write_text(SPEC.format(layers=2, seqs=200_000))
    opts = RunOptions(profile="h100-dgx.yaml", workload=str(tmp_path / "job.yaml"))
    spec, _ = build_training_spec(opts, load_profile("h100-dgx.yaml"), [])
    assert spec.microbatches == 100_000


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # a grid key with an empty part ran every point into the same error (exit 0); `set` keys were checked
        ("grid: {scale_out..efficiency: [0.9]}", "bad.yaml: grid: --set key path has an empty part"),
        # a list or an empty name was turned into the text "[1]" or replaced silently
        ("name: [1]", "bad.yaml: name: got [1]; expected a non-empty text"),
        ("name: ''", "bad.yaml: name: got ''; expected a non-empty text"),
    ],
)
def test_sweep_file_mistakes_stop_before_running(tmp_path, body: str, expected: str) -> None:
    from simcore.sweep import load_sweep

    (tmp_path / "bad.yaml").write_text(f"profiles: [gen2.yaml]\nworkloads: [llama3-8b]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        load_sweep(tmp_path / "bad.yaml")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("calibration.hbm_efficiency=2", "calibration.hbm_efficiency: out of range; got 2"),
        ("rack.bogus=1", "rack.bogus: unknown field"),
    ],
)
def test_validate_stops_on_a_set_no_profile_accepts(capsys, option: str, expected: str) -> None:
    """Every row came out "not runnable" and validate exited 0; now one line, exit 2, before any row."""
    from simcore.cli import main

    rc = main(["validate", "--set", option, "--rows", "megatron-sc21-t1-1.7B", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and f"--set {option}" in err[0] and expected in err[0]


def test_validate_keeps_a_set_some_profiles_accept(capsys) -> None:
    """fp8 calibration is refused by the A100 profile only: the row says so, the command still runs."""
    from simcore.cli import main

    rc = main(
        ["validate", "--set", "calibration.gemm.fp8.max_efficiency=0.5", "--rows", "megatron-sc21-t1-1.7B"]
    )
    assert rc == 0
    assert "not runnable (1)" in capsys.readouterr().out


def test_a_sweep_that_cannot_reach_its_scheduler_leaves_nothing(tmp_path) -> None:
    """It left OUT/points/.sweep-<id>.stopped (the stop file for Dask stragglers, of which there are none
    when no point was sent) and so the directories it had made."""
    from simcore.sweep import load_sweep, run_sweep

    (tmp_path / "s.yaml").write_text("profiles: [gen2.yaml]\nworkloads: [llama3-8b]\nsteps: 1\n")
    with pytest.raises(RacksimError) as info:
        run_sweep(load_sweep(tmp_path / "s.yaml"), out=tmp_path / "out", scheduler="notaurl")
    assert "cannot reach the Dask scheduler" in str(info.value) or "needs Dask" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_sweep_into_a_file_says_so_first(tmp_path) -> None:
    """--out naming a file failed only after the sweep's first progress line, on a raw OSError."""
    from simcore.sweep import load_sweep, run_sweep

    (tmp_path / "s.yaml").write_text("profiles: [gen2.yaml]\nworkloads: [llama3-8b]\nsteps: 1\n")
    (tmp_path / "afile").write_text("mine")
    said: list[str] = []
    with pytest.raises(ConfigError) as info:
        run_sweep(load_sweep(tmp_path / "s.yaml"), out=tmp_path / "afile", jobs=1, progress=said.append)
    assert "--out: exists and is not a directory" in str(info.value)
    assert said == [] and (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("option", ["scale_out.tiers.0.latency=2 us", "scale_out.tiers[0].latency=2 us"])
def test_set_into_a_list_says_to_replace_it_whole(option: str) -> None:
    """tiers.0 printed the whole tiers list as 'a field that is not a section'; tiers[0] was 'unknown field,
    did you mean tiers?'. Lists are replaced whole (docs/profiles.md), and the error now says so."""
    message = profile_error(option)
    assert f"--set {option}: scale_out.tiers: --set cannot" in message
    assert "--set 'scale_out.tiers=[...]'" in message
    assert "span_gpus" not in message  # not the list's contents
