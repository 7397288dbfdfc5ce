"""Findings of the user-facing input audit: each bad input here once crashed with a traceback, or was
accepted into a nonsense run, and must now be one ConfigError line naming the file, the field and the value."""

from __future__ import annotations

import pytest

from simcore.errors import ConfigError
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
