"""Every bad profile input gives one clear ConfigError: the file, the field path, the value and what was
expected (docs/profiles.md, "Errors"). Messages are asserted on content, not only on type."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from simcore.errors import ConfigError
from simcore.profile import PROFILES_DIR, load_profile, parse_set_option, profile_from_mapping

BASE: dict[str, Any] = yaml.safe_load((PROFILES_DIR / "gen1.yaml").read_text())


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()


def write_profile(tmp_path: Path, changes: dict[str, Any], name: str = "bad.yaml") -> Path:
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        _set(data, path, value)
    target = tmp_path / name
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def load_error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_profile(path, overrides)
    message = str(info.value)
    assert "\n" not in message, "an error is one line"
    return message


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ------------------------------------------------------------------------------------------ files
def test_missing_file(tmp_path):
    message = load_error(tmp_path / "nope.yaml")
    assert_names(message, "nope.yaml", "profile not found", "expected", "gen1")


def test_missing_builtin_name_suggests_the_closest():
    message = load_error(Path("gen4"))
    assert_names(message, "gen4", "profile not found", "did you mean 'gen")


def test_path_with_directories_never_falls_back_to_a_builtin(tmp_path):
    message = load_error(tmp_path / "configs" / "gen1.yaml")
    assert_names(message, "gen1.yaml", "profile not found")


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "syntax.yaml"
    bad.write_text("name: x\naccelerator:\n  name: H100\n   tdp: 700 W\n")
    message = load_error(bad)
    assert_names(message, "syntax.yaml", "YAML syntax error", "line 4")


def test_top_level_must_be_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- accelerator\n- scale_up\n")
    assert_names(load_error(bad), "list.yaml", "mapping", "expected")


# ------------------------------------------------------------------------------------------ fields
def test_unknown_field_suggests_the_right_one(tmp_path):
    message = load_error(write_profile(tmp_path, {"scale_up.bandwdith": "900 GB/s"}))
    assert_names(message, "bad.yaml", "scale_up.bandwdith", "unknown field", "did you mean 'bandwidth'?")


def test_unknown_section(tmp_path):
    message = load_error(write_profile(tmp_path, {"colling": {"type": "air"}}))
    assert_names(message, "bad.yaml", "colling", "unknown field", "did you mean 'cooling'?")


def test_unknown_field_in_a_list_item(tmp_path):
    tiers = [{"name": "leaf", "span_gpus": 256, "latncy": "1 us"}]
    message = load_error(write_profile(tmp_path, {"scale_out.tiers": tiers}))
    assert_names(message, "bad.yaml", "scale_out.tiers[0].latncy", "did you mean 'latency'?")


@pytest.mark.parametrize(
    ("changes", "path", "wrote"),
    [
        ({"scale_up.latency": "5 ms"}, "scale_up.latency", "5"),
        ({"scale_out.latency": "2 s"}, "scale_out.latency", "2"),
        (
            {"scale_out.tiers": [{"name": "leaf", "span_gpus": 256, "latency": "1.5 s"}]},
            "scale_out.tiers[0].latency",
            "1.5",
        ),
        ({"calibration.host_kernel_time": "35 s"}, "calibration.host_kernel_time", "35"),
    ],
)
def test_latencies_in_seconds_are_unit_slips(tmp_path, changes, path, wrote):
    """Every collective would wait seconds per step: refused, with the microseconds most likely meant."""
    message = load_error(write_profile(tmp_path, changes))
    assert_names(message, "bad.yaml", path, "implausibly large (a unit slip?)", "expected at most")
    assert_names(message, f"(microseconds were probably meant: {wrote} us)")


def test_a_millisecond_latency_is_still_accepted(tmp_path):
    load_profile(write_profile(tmp_path, {"scale_out.latency": "1 ms", "scale_up.latency": "900 us"}))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("accelerator.tdp", 'a quantity like "700 W"'),
        ("scale_up.domain_size", "a whole number >= 1"),
        ("cluster", "ClusterShape"),
    ],
)
def test_missing_required_field(tmp_path, path, expected):
    message = load_error(write_profile(tmp_path, {path: _DELETE}))
    assert_names(message, "bad.yaml", path, "missing required field", expected)


def test_wrong_unit_for_a_bandwidth(tmp_path):
    message = load_error(write_profile(tmp_path, {"scale_out.nic_bandwidth": "400 GB"}))
    assert_names(
        message,
        "bad.yaml",
        "scale_out.nic_bandwidth",
        "wrong unit for a bandwidth",
        "'400 GB'",
        "GB/s",
        "did you mean '400 GB/s'?",
    )


@pytest.mark.parametrize(
    ("path", "value", "wrong"),
    [
        ("accelerator.hbm_capacity", "80 GB/s", "a size in bytes"),
        ("accelerator.peak_flops.bf16", "989 TB/s", "a FLOP rate"),
        ("accelerator.tdp", "700 J", "a power"),
        ("cooling.inlet_temp", "25 W", "a temperature"),
        ("cooling.r_plate_coolant", "0.04 K", "a thermal resistance"),
    ],
)
def test_wrong_unit_dimension(tmp_path, path, value, wrong):
    message = load_error(write_profile(tmp_path, {path: value}))
    assert_names(message, "bad.yaml", path, f"wrong unit for {wrong}", repr(value), "expected")


def test_unknown_unit(tmp_path):
    message = load_error(write_profile(tmp_path, {"accelerator.tdp": "700 Wats"}))
    assert_names(message, "bad.yaml", "accelerator.tdp", "unknown unit 'Wats'", 'e.g. "700 W"')


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("accelerator.tdp", 700),
        ("accelerator.tdp", "700"),
        ("scale_up.bandwidth", 900),
        ("cooling.inlet_temp", 25.0),
        ("accelerator.peak_flops.bf16", 989.5),
    ],
)
def test_bare_number_where_a_unit_is_needed(tmp_path, path, value):
    message = load_error(write_profile(tmp_path, {path: value}))
    assert_names(
        message, "bad.yaml", path, "a unit is required", f"got {value!r}", "expected a string with a unit"
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("scale_up.bandwidth", "-900 GB/s"),
        ("scale_up.bandwidth", "0 GB/s"),
        ("scale_out.nic_bandwidth", "0 Gb/s"),
        ("accelerator.hbm_bandwidth", "-3.35 TB/s"),
        ("accelerator.hbm_capacity", "0 GB"),
        ("accelerator.hbm_capacity", "-80 GB"),
        ("accelerator.tdp", "0 W"),
        ("accelerator.tdp", "-700 W"),
        ("accelerator.idle_power", "-70 W"),
        ("rack.cpu_power", "0 W"),
        ("rack.power_limit", "-42 kW"),
        ("accelerator.peak_flops.fp8", "0 TFLOP/s"),
    ],
)
def test_zero_or_negative_bandwidth_memory_power(tmp_path, path, value):
    message = load_error(write_profile(tmp_path, {path: value}))
    assert_names(message, "bad.yaml", path, "must be positive", repr(value), "expected")


def test_zero_is_allowed_where_a_part_may_be_absent_but_negative_is_not(tmp_path):
    assert load_profile(write_profile(tmp_path, {"rack.fan_power": "0 W"})).rack.fan_power == 0.0
    message = load_error(write_profile(tmp_path, {"rack.fan_power": "-5 W"}))
    assert_names(message, "bad.yaml", "rack.fan_power", "must not be negative", "'-5 W'", "zero or more")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("scale_up.efficiency", 1.2),
        ("scale_up.efficiency", 0),
        ("scale_up.in_switch_efficiency", -0.1),
        ("scale_out.efficiency", 1.5),
        ("calibration.hbm_efficiency", 0.0),
        ("calibration.gemm.bf16.max_efficiency", 1.01),
    ],
)
def test_efficiency_outside_zero_one(tmp_path, path, value):
    message = load_error(write_profile(tmp_path, {path: value}))
    assert_names(
        message, "bad.yaml", path, "out of range", f"got {value!r}", "expected a number in [0.01, 1]"
    )


def test_efficiency_in_an_optional_section(tmp_path):
    storage = {"capacity": "100 kJ", "max_power": "50 kW", "efficiency": 1.1}
    message = load_error(write_profile(tmp_path, {"rack.energy_storage": storage}))
    assert_names(message, "bad.yaml", "rack.energy_storage.efficiency", "out of range", "1.1", "(0, 1]")


def test_negative_flow(tmp_path):
    message = load_error(
        write_profile(tmp_path, {"cooling.type": "liquid", "cooling.flow_per_kw": "-1.5 L/min/kW"})
    )
    assert_names(
        message, "bad.yaml", "cooling.flow_per_kw", "must be positive", "'-1.5 L/min/kW'", "L/min/kW"
    )


def test_liquid_cooling_needs_a_flow(tmp_path):
    message = load_error(write_profile(tmp_path, {"cooling.type": "liquid"}))
    assert_names(message, "bad.yaml", "cooling.flow_per_kw", "needs a coolant flow", "L/min/kW")


def test_inlet_temperature_above_the_throttle_temperature(tmp_path):
    message = load_error(write_profile(tmp_path, {"cooling.inlet_temp": "95 degC"}))
    assert_names(
        message, "bad.yaml", "cooling.inlet_temp", "slowdown temperature", "'95 degC'", "below 89 degC"
    )


def test_power_cap_below_idle_power(tmp_path):
    message = load_error(write_profile(tmp_path, {"accelerator.power_cap": "50 W"}))
    assert_names(
        message,
        "bad.yaml",
        "accelerator.power_cap",
        "at or below idle power",
        "'50 W'",
        "more than idle_power (70 W)",
    )


def test_power_cap_below_what_a_busy_gpu_draws_at_min_clock(tmp_path):
    """gen1 at its 600 MHz floor still draws 70 + 630 x (0.6/1.83)^2.5 = 108.8 W when busy: a 100 W cap
    cannot hold, and the GPU would silently run above it."""
    message = load_error(write_profile(tmp_path, {"accelerator.power_cap": "100 W"}))
    assert_names(message, "bad.yaml", "accelerator.power_cap", "'100 W'", "draws 108.8 W at min_clock")
    assert_names(message, "expected at least 108.8 W")
    load_profile(write_profile(tmp_path, {"accelerator.power_cap": "108.8 W"}, name="ok.yaml"))
    # the clock floor the cap can reach is what decides: a lower min_clock lets 100 W hold
    load_profile(
        write_profile(tmp_path, {"accelerator.power_cap": "100 W", "accelerator.min_clock": "0.5 GHz"})
    )
    message = load_error(PROFILES_DIR / "gen1.yaml", ("accelerator.power_cap=100 W",))
    assert message.startswith("--set accelerator.power_cap=100 W (over ")


def test_idle_power_at_or_above_tdp(tmp_path):
    message = load_error(write_profile(tmp_path, {"accelerator.idle_power": "800 W"}))
    assert_names(
        message, "bad.yaml", "accelerator.idle_power", "below the TDP", "800 W", "less than tdp (700 W)"
    )


@pytest.mark.parametrize(
    ("changes", "path", "says"),
    [
        ({"accelerator.min_clock": "3 GHz"}, "accelerator.min_clock", "at most 1.83 GHz"),
        ({"accelerator.slowdown_temp": "95 degC"}, "accelerator.slowdown_temp", "below 92 degC"),
        (
            {"scale_out.tiers": [{"name": "leaf", "span_gpus": 100}]},
            "scale_out.tiers[0].span_gpus",
            "multiple of scale_up.domain_size (8)",
        ),
        (
            {"scale_out.tiers": [{"name": "leaf", "span_gpus": 256}, {"name": "spine", "span_gpus": 128}]},
            "scale_out.tiers",
            "strictly increasing",
        ),
        (
            {"scale_up.domain_size": 3},
            "scale_up.domain_size",
            "multiple or divisor of rack.gpus_per_tray (8)",
        ),
        (
            {"calibration.gemm.fp4": {"max_efficiency": 0.5}},
            "calibration.gemm.fp4",
            "accelerator.peak_flops keys",
        ),
        (
            {
                "accelerator.peak_flops": {"fp8": "1979 TFLOP/s"},
                "calibration.gemm": {"fp8": {"max_efficiency": 0.6}},
            },
            "accelerator.peak_flops",
            "a bf16 entry",
        ),
    ],
)
def test_cross_field_rules(tmp_path, changes, path, says):
    message = load_error(write_profile(tmp_path, changes))
    assert_names(message, "bad.yaml", path, "expected", says)


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("rack.trays_per_rack", "4", "must be a number"),
        ("rack.trays_per_rack", 4.5, "must be a whole number"),
        ("scale_up.efficiency", float("nan"), "must be a finite number"),
        ("accelerator.tdp", "1e999 W", "not a finite number"),
        ("scale_up.in_switch_reduction", "yes", "must be true or false"),
        ("cooling.type", "liqiud", "did you mean 'liquid'?"),
        ("scale_out.topology", "dragonfly", "one of rail_optimized_fat_tree, fat_tree"),
        ("accelerator.peak_flops.bf61", "1 PFLOP/s", "did you mean 'bf16'?"),
        ("rack.psu_efficiency", [[0.5, 0.96], [0.2, 0.94]], "x must increase"),
        ("scale_out.tiers", [], "must be a non-empty list"),
        ("rack", "a rack", "must be a mapping of fields"),
    ],
)
def test_wrong_types_and_choices(tmp_path, path, value, says):
    message = load_error(write_profile(tmp_path, {path: value}))
    assert_names(message, "bad.yaml", path.split(".bf61")[0], says)


# ------------------------------------------------------------------------------------------ extends, --set
def test_extends_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    message = load_error(tmp_path / "a.yaml")
    assert_names(message, "a.yaml", "extends", "cycle", "a.yaml -> b.yaml -> a.yaml", "expected")


def test_extends_self(tmp_path):
    (tmp_path / "self.yaml").write_text("extends: self.yaml\nname: s\n")
    assert_names(load_error(tmp_path / "self.yaml"), "self.yaml -> self.yaml", "cycle")


def test_a_local_profile_named_like_a_shipped_one_extends_the_shipped_one(tmp_path):
    """`gen2.yaml` in the working directory saying `extends: gen2.yaml` is "gen2 but ...", not a cycle."""
    (tmp_path / "gen2.yaml").write_text("extends: gen2.yaml\ncooling:\n  inlet_temp: 45 degC\n")
    local, shipped = load_profile(tmp_path / "gen2.yaml"), load_profile("gen2.yaml")
    assert local.cooling.inlet_temp == 45.0 != shipped.cooling.inlet_temp
    assert local.accelerator == shipped.accelerator


def test_extends_a_missing_parent(tmp_path):
    (tmp_path / "child.yaml").write_text("extends: nothere.yaml\nname: c\n")
    message = load_error(tmp_path / "child.yaml")
    assert_names(message, "child.yaml", "extends", "'nothere.yaml'", "not found", "expected")


def test_extends_must_name_a_file(tmp_path):
    (tmp_path / "child.yaml").write_text("extends: [gen1.yaml]\nname: c\n")
    assert_names(load_error(tmp_path / "child.yaml"), "child.yaml", "extends", "must name a profile file")


def test_error_in_an_extending_file_names_that_file(tmp_path):
    (tmp_path / "hot.yaml").write_text("extends: gen1.yaml\nname: hot\ncooling:\n  inlet_temp: 45\n")
    message = load_error(tmp_path / "hot.yaml")
    assert_names(message, "hot.yaml", "cooling.inlet_temp", "a unit is required", "got 45")


def test_syntax_error_in_a_parent_names_the_parent(tmp_path):
    (tmp_path / "parent.yaml").write_text("name: p\nrack: {gpus_per_tray: 8\n")
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\nname: c\n")
    assert_names(load_error(tmp_path / "child.yaml"), "parent.yaml", "YAML syntax error", "line")


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("cooling.inlet_temp=45", "a unit is required"),
        ("scale_up.bandwdith=900 GB/s", "did you mean 'bandwidth'?"),
        ("scale_out.efficiency=2", "out of range"),
        ("name.first=x", "not a section"),
    ],
)
def test_bad_set_overrides(option, says):
    message = load_error(PROFILES_DIR / "gen1.yaml", (option,))
    assert_names(message, option.split("=")[0].split(".first")[0], says)


def test_set_option_syntax():
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_set_option("cooling.inlet_temp")
    with pytest.raises(ConfigError, match="key path"):
        parse_set_option("=3")


def test_in_memory_mapping_errors_name_the_source():
    data = copy.deepcopy(BASE)
    data["scale_up"]["bandwidth"] = "900 GB"
    with pytest.raises(ConfigError) as info:
        profile_from_mapping(data, file="<sweep point 3>")
    assert_names(str(info.value), "<sweep point 3>", "scale_up.bandwidth", "wrong unit")


@pytest.mark.parametrize(
    ("option", "path", "says"),
    [
        ("calibration.host_kernel_time=0", "calibration.host_kernel_time", "a unit is required"),
        ("accelerator.idle_power=2000 W", "accelerator.idle_power", "below the TDP"),  # a cross-field rule
        # cross-field rules about another field than the one set: the option that broke them is named
        ("accelerator.tdp=50 W", "accelerator.idle_power", "below the TDP"),
        ("rack.power_limit=5 MW", "rack.bus_voltage", "distribution would burn"),
        ("accelerator.shutdown_temp=60 degC", "accelerator.slowdown_temp", "below shutdown"),
        ("cooling=3", "cooling", "mapping"),
    ],
)
def test_a_rejected_set_value_names_the_option_not_only_the_file(option, path, says):
    message = load_error(PROFILES_DIR / "gen1.yaml", (option,))
    assert message.startswith(f"--set {option} (over ")
    assert_names(message, "gen1.yaml", path, says)


def test_a_files_own_mistake_names_the_file_whatever_else_set_changed(tmp_path):
    (tmp_path / "hot.yaml").write_text("extends: gen1.yaml\nname: hot\ncooling:\n  inlet_temp: 45\n")
    message = load_error(tmp_path / "hot.yaml", ("name=x", "scale_up.bandwidth=900 GB/s"))
    assert "--set" not in message
    assert_names(message, "hot.yaml", "cooling.inlet_temp", "a unit is required")


@pytest.mark.parametrize(
    ("option", "path"),
    [
        ("rack.psu_efficiency=[[0.5, 0.9], [1.0, x]]", "rack.psu_efficiency[1]"),  # a list element
        ("accelerator.kernel_overhead.x=1", "accelerator.kernel_overhead"),  # reaching into a value
        ("name.first=x", "name"),  # through a field that is not a section (apply_overrides itself)
    ],
)
def test_set_errors_name_the_option_inside_lists_values_and_sections(option, path):
    message = load_error(PROFILES_DIR / "gen1.yaml", (option,))
    assert message.startswith(f"--set {option}") and path in message
    assert "over None" not in message


def test_a_set_option_with_a_newline_stays_one_line():
    message = load_error(PROFILES_DIR / "gen1.yaml", ("cooling.inlet_temp=45\n",))
    assert message.startswith("--set cooling.inlet_temp=45\\n (over ")


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("accelerator.tdp", "1200 w", "did you mean '1200 W'?"),
        ("accelerator.peak_flops.bf16", "2.5 PFLOPS", "did you mean '2.5 PFLOP/s'?"),
        ("scale_up.bandwidth", "900 gb/s", "did you mean '900 GB/s' or '900 Gb/s'?"),
        ("scale_out.nic_bandwidth", "400 Gbs", "did you mean '400 Gb/s'?"),
        ("accelerator.peak_flops.bf16", "2.5 pflops", "did you mean '2.5 PFLOP/s'?"),  # not pico
        ("accelerator.peak_flops.bf16", "989 tflops", "did you mean '989 TFLOP/s'?"),
    ],
)
def test_unit_misspellings_get_a_respelling(tmp_path, path, value, says):
    assert_names(load_error(write_profile(tmp_path, {path: value})), "bad.yaml", path, says)


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("accelerator.tdp", "2 kWh", "'2 kWh' is an energy; drop the time factor: did you mean '2 kW'?"),
        ("accelerator.tdp", "700 W*s", "did you mean '700 W'?"),
        (
            "accelerator.tdp",
            "700 W/s",
            "'700 W/s' is a power ramp rate; drop the time factor: did you mean '700 W'?",
        ),
        (
            "accelerator.hbm_capacity",
            "80 GB/s",
            "'80 GB/s' is a bandwidth; drop the time factor: did you mean '80 GB'?",
        ),
        (
            "scale_out.nic_bandwidth",
            "400 Gb",
            "'400 Gb' is a size; a rate needs a time unit: did you mean '400 Gb/s'?",
        ),
    ],
)
def test_a_unit_one_time_factor_off_gets_the_unit_meant(tmp_path, path, value, says):
    """An energy written for a power is the power meant ('2 kWh' -> '2 kW', not '2 kWh/s'); a bandwidth
    for a size drops its /s; a size for a bandwidth still gains one."""
    assert_names(load_error(write_profile(tmp_path, {path: value})), "bad.yaml", path, says)


def test_a_profile_name_in_the_wrong_case_is_suggested():
    with pytest.raises(ConfigError, match="did you mean 'gen2'"):
        load_profile("GEN2")


@pytest.mark.parametrize(
    ("path", "value", "example"),
    [
        ("reliability.detect_time", 5, '"5 min"'),
        ("reliability.restart_time", "-1 min", '"10 min"'),
        ("reliability.replace_time", "2 W", '"4 h"'),
        ("accelerator.min_clock", 0.6, '"0.6 GHz"'),
        ("accelerator.min_clock", "0 GHz", '"0.6 GHz"'),
        ("calibration.step_host_time", 70, '"70 ms"'),
        ("scale_out.nic_bandwidth", 400, '"400 Gb/s"'),
        ("rack.nic_power", 30, '"30 W"'),
    ],
)
def test_error_examples_fit_the_field(tmp_path, path, value, example):
    """A failure detection time is minutes, not the microseconds of a latency; min_clock is the governor's
    floor (0.5-0.6 GHz in the shipped profiles), not a boost clock."""
    assert_names(load_error(write_profile(tmp_path, {path: value})), path, f"e.g. {example}")


def test_every_field_example_is_a_value_the_field_accepts():
    """Each quantity field's example (its own, or its kind's) parses to its kind and sits inside the field's
    bounds, so the example an error or the docs show could be pasted in as is."""
    import dataclasses
    import typing

    from simcore.profile import Profile
    from simcore.schema import _example_of
    from simcore.units import parse_quantity

    def quantity_fields(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, typing.Any]]:
        hints = typing.get_type_hints(cls)
        for fld in dataclasses.fields(cls):
            meta, path = fld.metadata, f"{prefix}{fld.name}"
            if meta.get("kind") == "quantity":
                yield path, meta
            for arg in (hints[fld.name], *typing.get_args(hints[fld.name])):
                if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                    yield from quantity_fields(arg, f"{path}.")

    checked = 0
    for path, meta in quantity_fields(Profile):
        value = parse_quantity(_example_of(meta), meta["unit_kind"], path=path)
        assert meta.get("minimum") is None or value >= meta["minimum"], path
        assert meta.get("maximum") is None or value <= meta["maximum"], path
        checked += 1
    assert checked > 30
