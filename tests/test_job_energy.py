"""The multi-day job's energy: its wall time priced at the step-level facility power while it computes and at
its racks' idle facility power while it checkpoints or recovers."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simcore.profile import Profile
from simcore.reliability import JobPlan, JobResult, replay_job
from simcore.runner import RunOptions, _job_rows, run

HOUR = 3600.0
# one gen2 rack (72 GPUs = 18 compute trays), a 0.8 s step: a 50,000-step job is ~11 h of steps
SPEC = "model: llama3-8b\nparallelism: {tp: 8, dp: 9}\nbatch: {global_seqs: 72}\nsteps: 1\njob: {JOB}\n"
JOB = "{steps: 50000, checkpoint_every: 1000}"


@pytest.fixture(scope="module")
def job_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Any]]:
    """Summaries of the one-rack job, run once per (job section, failure rate) for the module."""
    tmp = tmp_path_factory.mktemp("job_energy")
    runs: dict[tuple[str, float | None], dict[str, Any]] = {}

    def summary(job: str = JOB, rate: float | None = None) -> dict[str, Any]:
        if (job, rate) not in runs:
            spec = tmp / f"job{len(runs)}.yaml"
            spec.write_text(SPEC.replace("{JOB}", job))
            sets = [] if rate is None else [f"reliability.node_failures_per_1000_node_days={rate}"]
            opts = RunOptions(profile="gen2.yaml", workload=str(spec), sets=sets, write_trace=False)
            runs[job, rate] = run(opts).summary
        return runs[job, rate]

    return summary


def _tokens_per_step(s: dict[str, Any]) -> float:
    return s["tokens_per_s"] * s["step_time_s"]


def test_the_job_energy_is_its_compute_time_at_step_power_and_its_pauses_at_idle_power(job_run) -> None:
    s = job_run(rate=100.0)  # 30x RSC-1's per-GPU rate: a job MTBF of ~13 h, a few failures in ~11 h of steps
    assert s["job_failures"] >= 1 and s["job_lost_work_s"] > 0 and s["job_down_s"] > 0
    compute_s = s["job_steps"] * s["step_time_s"] + s["job_lost_work_s"]
    paused_s = s["job_checkpoint_total_s"] + s["job_down_s"]
    # the wall time is exactly those: every second of the job is priced once
    assert compute_s + paused_s == pytest.approx(s["job_wall_s"], rel=1e-12)
    step_w, idle_w = s["facility_power_w"], s["job_idle_facility_power_w"]
    assert s["job_energy_j"] == pytest.approx(step_w * compute_s + idle_w * paused_s, rel=1e-12)
    lost_j = step_w * s["job_lost_work_s"] + idle_w * paused_s
    assert s["job_energy_lost_j"] == pytest.approx(lost_j, rel=1e-12)
    tokens = s["job_steps"] * _tokens_per_step(s)
    assert s["job_energy_per_token_j"] == pytest.approx(s["job_energy_j"] / tokens, rel=1e-12)


def test_a_job_that_never_fails_nor_pauses_costs_the_steps_energy_per_token(job_run) -> None:
    # no failures, one checkpoint of 1 kB at the end (7 ns): nothing but the steps
    s = job_run("{steps: 50000, checkpoint_every: 50000, checkpoint_bytes: 1 kB}", rate=0.0)
    assert s["job_failures"] == 0 and s["job_checkpoint_total_s"] < 1e-8
    assert s["goodput"] == pytest.approx(1.0, rel=1e-12)
    assert s["job_energy_per_token_j"] == pytest.approx(s["energy_per_token_j"], rel=1e-9)
    assert s["job_energy_lost_j"] == pytest.approx(0.0, abs=1e-9 * s["job_energy_j"])


def test_more_failures_never_lower_the_energy_per_token(job_run) -> None:
    per_token = [job_run(rate=rate)["job_energy_per_token_j"] for rate in (0.0, 3.25, 30.0, 100.0)]
    assert per_token == sorted(per_token)
    # 100 per 1000 tray-days on 18 trays: ~0.8 failures in 11 h, each ~half an interval (7 min) lost and a
    # 15 min restart; the 50 checkpoints of ~0.8 s idle: at least a few tenths of a percent above no failures
    assert per_token[-1] > per_token[0] * 1.001


def test_idle_facility_power_is_below_step_power_and_above_the_idle_gpus(job_run, gen2: Profile) -> None:
    s = job_run()
    idle_w = s["job_idle_facility_power_w"]
    # facility >= IT >= the rack's GPUs at idle power plus the fabric share; below the working racks' draw
    floor_w = s["gpus"] * gen2.accelerator.idle_power + s["fabric_power_w"]
    assert floor_w < idle_w < s["facility_power_w"]
    assert s["job_energy_per_token_j"] > s["energy_per_token_j"]  # checkpoints (and any failure) cost energy


def test_job_energy_keys_are_present_exactly_with_the_job_keys(tmp_path: Path) -> None:
    spec = tmp_path / "plain.yaml"
    spec.write_text(SPEC.rsplit("job:", 1)[0])
    s = run(RunOptions(profile="gen2.yaml", workload=str(spec), write_trace=False)).summary
    assert not any(k.startswith("job_") for k in s)
    result = replay_job(
        JobPlan(
            steps=10, step_time_s=1.0, checkpoint_s=0.5, checkpoint_every=5, nodes=1, node_mtbf_s=math.inf
        )
    )
    assert result.energy(None, None, 100.0) == dict.fromkeys(
        ("job_energy_j", "job_energy_per_token_j", "job_energy_lost_j", "job_idle_facility_power_w")
    )
    # 10 s of steps at 1 kW, two 0.5 s checkpoints at 400 W: 10.4 kJ over 1,000 tokens
    e = result.energy(1000.0, 400.0, 100.0)
    assert e["job_energy_j"] == pytest.approx(10_400.0) and e["job_energy_lost_j"] == pytest.approx(400.0)
    assert e["job_energy_per_token_j"] == pytest.approx(10.4)


def test_a_result_prices_lost_work_at_step_power() -> None:
    plan = JobPlan(
        steps=100, step_time_s=2.0, checkpoint_s=1.0, checkpoint_every=50, nodes=1, node_mtbf_s=1.0
    )
    result = JobResult(
        plan,
        50,
        wall_s=200.0 + 2.0 + 30.0 + 60.0,
        failures=1,
        checkpoints=2,
        lost_work_s=30.0,
        down_s=60.0,
        checkpoint_total_s=2.0,
    )
    e = result.energy(1000.0, 250.0, 10.0)
    assert e["job_energy_j"] == pytest.approx(1000.0 * 230.0 + 250.0 * 62.0)
    assert e["job_energy_lost_j"] == pytest.approx(1000.0 * 30.0 + 250.0 * 62.0)
    assert e["job_energy_per_token_j"] == pytest.approx(e["job_energy_j"] / 1000.0)


def test_the_run_table_prints_the_job_energy_and_its_share_lost() -> None:
    job = {"goodput": 0.96, "job_days": 0.48, "job_failures": 1, "job_checkpoints": 50}
    energy = {"job_energy_j": 4.54e9, "job_energy_per_token_j": 0.154, "job_energy_lost_j": 1.135e8}
    rows = dict(_job_rows({**job, **energy, "job_checkpoint_every_steps": 1000}))
    assert rows["job energy, per token"] == (
        "4.54 GJ, 0.154 J per token (2.5 % on lost work, recoveries and checkpoints)"
    )
    no_power = dict.fromkeys(energy)  # no power model: the job lines without an energy line
    assert "job energy, per token" not in dict(_job_rows({**job, **no_power}))
