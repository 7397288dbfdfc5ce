"""Physics audit of the power, thermal and cooling model: energy balances and known answers that whole runs
must satisfy (each test failed before the fix it names)."""

from __future__ import annotations

import pytest

from simcore.runner import RunOptions, run


def _run(tmp_path, name="r", profile="gen2.yaml", workload="llama3-8b", steps=1, **kw):
    return run(RunOptions(profile=profile, workload=workload, out=tmp_path / name, steps=steps, **kw))


def test_a_full_rack_is_sized_at_the_input_its_own_run_measured(tmp_path):
    """llama3-8b fills one 72-GPU gen2 rack, so the fleet-sizing rack (every GPU at the job's mean power,
    the static load, the conversion loss in the run's proportion) is that rack: its input power. The
    fabric's share (outside the racks, no conversion loss) diluted the loss factor: 0.5 % low."""
    s = _run(tmp_path, write_trace=False).summary
    assert s["gpus"] == 72 and s["fabric_power_w"] > 0.0
    assert s["full_rack_it_power_w"] == pytest.approx(s["rack_power_w"], rel=1e-9)
