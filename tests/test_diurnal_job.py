"""The weather in a multi-day job (DESIGN.md: diurnal temperature is a job-level event).

Where a dry cooler's supply follows the outside temperature, the step is simulated at several times of
day and the replay runs each part of the day at its own step time (reliability.StepClock). These tests
hold the clock to closed forms (a whole day of steps takes a day; durations add up), the replay to the
constant-step replay when the day does not vary, and a hot-climate run to the physics: the afternoon's
step is the day's slowest, and the job takes longer than its coolest step and less than its hottest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from simcore.errors import ConfigError
from simcore.reliability import DAY_S, JobPlan, StepClock, day_mean_step_s, replay_job
from simcore.runner import RunOptions, run

DAY = (1.0, 1.0, 1.1, 1.2, 1.3, 1.25, 1.15, 1.05)  # step time per 3 h of the day, from midnight


def _plan(**kw) -> JobPlan:
    base = dict(steps=50_000, step_time_s=1.0, checkpoint_s=30.0, checkpoint_every=2_000, nodes=64)
    base.update(kw)
    base.setdefault("node_mtbf_s", 2e6)
    return JobPlan(**base)


def _failure_free_day_plan(steps: int) -> JobPlan:
    """``steps`` over DAY's day, no failures, one checkpoint at the end."""
    return _plan(
        steps=steps,
        step_time_s=day_mean_step_s(DAY),
        day_step_s=DAY,
        checkpoint_every=steps,
        node_mtbf_s=math.inf,
    )


def test_a_day_of_steps_takes_a_day_from_any_time():
    """The steps a day holds (each 3 h bin's length over its step time) take exactly one day, whatever
    time of day they start; the day's mean step is the day over those steps."""
    plan = _plan(step_time_s=day_mean_step_s(DAY), day_step_s=DAY)
    clock = StepClock(plan)
    per_day = sum(3 * 3600.0 / s for s in DAY)
    assert DAY_S / per_day == pytest.approx(plan.step_time_s, rel=1e-12)
    for now in (0.0, 1234.5, 5 * 3600.0, 0.7 * DAY_S, 3.3 * DAY_S):
        assert clock.duration(now, per_day) == pytest.approx(DAY_S, rel=1e-12)
        assert clock.duration(now, 2.5 * per_day) == pytest.approx(2.5 * DAY_S, rel=0.05)


def test_step_durations_add_up_and_follow_the_bins():
    """Steps inside one bin take that bin's step time each (the job starts at 15:00: the bin centred on
    15:00 runs at 1.25 s); n steps then m steps take as long as n + m."""
    clock = StepClock(_plan(day_step_s=DAY, step_time_s=day_mean_step_s(DAY)))
    assert clock.duration(0.0, 100) == pytest.approx(125.0, rel=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(50):
        now, a, b = rng.uniform(0, 3 * DAY_S), rng.uniform(0, 40_000), rng.uniform(0, 40_000)
        first = clock.duration(now, a)
        assert clock.duration(now, a + b) == pytest.approx(first + clock.duration(now + first, b), rel=1e-9)
        assert min(DAY) * (a + b) <= clock.duration(now, a + b) * (1 + 1e-12)
        assert clock.duration(now, a + b) <= max(DAY) * (a + b) * (1 + 1e-12)


def test_a_flat_day_replays_as_the_constant_step():
    """A day whose every part has the same step replays like a constant step: same failures, checkpoints
    and (to rounding) wall time."""
    flat = replay_job(_plan(day_step_s=(1.0,) * 8))
    const = replay_job(_plan())
    assert flat.failures == const.failures > 0
    assert flat.checkpoints == const.checkpoints
    assert flat.wall_s == pytest.approx(const.wall_s, rel=1e-9)
    assert flat.summary()["job_step_time_min_s"] == flat.summary()["job_step_time_max_s"] == 1.0


def test_a_failure_free_job_over_whole_days_has_goodput_one_less_checkpoints():
    """With no failures and one checkpoint at the end, steps that fill whole days take those days: the
    replay's wall time is the days plus the checkpoint."""
    per_day = sum(3 * 3600.0 / s for s in DAY)
    assert per_day == pytest.approx(round(per_day), abs=0.5)
    days = 3
    plan = _failure_free_day_plan(round(days * per_day))
    result = replay_job(plan)
    assert result.failures == 0
    assert result.wall_s == pytest.approx(days * DAY_S + plan.checkpoint_s, rel=1e-4)


JOB = """kind: training
model: llama3-70b
parallelism: {tp: 4, pp: 1, dp: 18, recompute: selective, tp_comm_overlap: true}
batch: {global_seqs: 144, micro: 1}
steps: 1
job: {steps: 100000, checkpoint_every: 100000}
"""


def _job_run(tmp_path: Path, name: str, outside: str) -> dict:
    spec = tmp_path / "job.yaml"
    spec.write_text(JOB)
    sets = [f"cooling.facility.outside_temp={outside}", "reliability.node_failures_per_1000_node_days=0"]
    out = tmp_path / name
    run(RunOptions(profile="gen3.yaml", workload=str(spec), out=out, sets=sets, write_trace=False))
    return json.loads((out / "summary.json").read_text())


def test_a_hot_afternoon_slows_the_job_but_not_the_night(tmp_path):
    """gen3's dry cooler holds a 45 degC supply until the outside passes 37 degC: at a 42 degC mean (+-5 K,
    warmest at 15:00) the afternoon supply reaches 55 degC and the GPUs throttle, the night's does not.
    The run's own step (15:00) is the day's slowest; the job takes longer than at its fastest step and
    less than at 15:00's all day. In a mild climate (20 degC) nothing changes over the day."""
    hot = _job_run(tmp_path, "hot", "42 degC")
    fast, slow = hot["job_step_time_min_s"], hot["job_step_time_max_s"]
    assert slow == pytest.approx(hot["step_time_s"], rel=1e-12)  # 15:00 is the hottest time of day
    assert slow > fast * 1.01
    ckpt = hot["job_checkpoint_s"]
    assert hot["job_steps"] * fast + ckpt < hot["job_wall_s"] < hot["job_steps"] * slow + ckpt
    mild = _job_run(tmp_path, "mild", "20 degC")
    assert mild["job_step_time_min_s"] == mild["job_step_time_max_s"] == mild["step_time_s"]
    assert mild["job_wall_s"] == pytest.approx(mild["job_steps"] * mild["step_time_s"] + ckpt, rel=1e-9)
    assert mild["step_time_s"] <= fast * (1 + 1e-9)  # a 45 degC supply all day: the night's step


def test_a_job_shorter_than_a_day_accounts_for_its_wall_time():
    """A failure-free job of a few afternoon hours (15:00 on: the 1.25 s then 1.15 s bins) computes for
    its wall time less its one checkpoint: goodput is that share, and the wall time splits exactly into
    computing and checkpointing, each priced at its own power (not the day's mean step times the steps,
    which is shorter than the afternoon's steps take)."""
    steps = 10_000
    plan = _failure_free_day_plan(steps)
    result = replay_job(plan)
    # 1.5 h to 16:30 at 1.25 s (4,320 steps), the other 5,680 at 1.15 s
    computing = 5400.0 + (steps - 5400.0 / 1.25) * 1.15
    assert result.wall_s == pytest.approx(computing + plan.checkpoint_s, rel=1e-12)
    assert result.goodput == pytest.approx(computing / result.wall_s, rel=1e-12)
    energy = result.energy(1000.0, 100.0, tokens_per_step=1.0)
    assert energy["job_energy_j"] == pytest.approx(1000.0 * computing + 100.0 * plan.checkpoint_s, rel=1e-12)


def test_an_hour_too_hot_to_run_names_the_weather_and_the_hour(tmp_path):
    """An outside temperature that peaks at 21:00 (85 degC: supply 93 degC past gen3's dry cooler) leaves
    the 15:00 run cool (30 degC outside: the 45 degC set point) but the job replay's 21:00 pass cannot hold
    the GPUs below shutdown even at min_clock. The error blames the weather file at that hour, not
    cooling.inlet_temp (45 degC, which is fine)."""
    csv = tmp_path / "night.csv"
    csv.write_text("hour,temp_c\n0,30\n12,30\n15,30\n18,50\n21,85\n23,40\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "kind: training\nmodel: {preset: llama3-8b, layers: 8}\nparallelism: {tp: 2, pp: 1, dp: 4}\n"
        "batch: {global_seqs: 8, micro: 1}\nsteps: 1\njob: {steps: 1000, checkpoint_every: 1000}\n"
    )
    sets = [f"cooling.facility.outside_temp_csv={csv}"]
    with pytest.raises(ConfigError) as err:
        run(RunOptions(profile="gen3.yaml", workload=str(spec), out=tmp_path / "o", sets=sets))
    text = str(err.value)
    assert err.value.path == "cooling.facility.outside_temp_csv" and "cooling.inlet_temp" not in text
    assert "21:00" in text and "85 degC" in text and "93 degC" in text


def test_a_day_that_cannot_throttle_is_not_simulated_again(tmp_path, capsys):
    """gen3 at a 33 degC mean: the supply moves (45-46 degC) but 15:00 is the day's warmest and nothing
    throttles, so no hour's step can differ: no extra simulation, the run's step all day, and a note."""
    spec = tmp_path / "job.yaml"
    spec.write_text(JOB)
    lines: list[str] = []
    sets = ["cooling.facility.outside_temp=33 degC", "reliability.node_failures_per_1000_node_days=0"]
    summary = run(
        RunOptions(
            profile="gen3.yaml", workload=str(spec), sets=sets, write_trace=False, progress=lines.append
        )
    ).summary
    assert summary["throttle_thermal_fraction"] == 0.0
    assert summary["job_step_time_min_s"] == summary["job_step_time_max_s"] == summary["step_time_s"]
    assert any("the run's hour is the warmest" in line for line in lines)
    assert not any("times of day" in line for line in lines)
