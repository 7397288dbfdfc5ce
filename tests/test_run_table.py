"""The short table every run prints: each row shows the summary value its label names."""

from __future__ import annotations

import io
from typing import Any

import pytest

from simcore.errors import ConfigError
from simcore.runner import print_table


def _summary(kind: str, **values: Any) -> dict[str, Any]:
    par = {"tp": 1, "pp": 1, "dp": 8, "cp": 1, "ep": 8, "replicas": 1}
    base: dict[str, Any] = {
        "workload": {"kind": kind, "name": "m", "precision": "bf16", "parallelism": par},
        "profile": {"name": "p"},
        "gpus": 8,
        "requests_completed": 10,
        "iterations": 5,
    }
    return {**base, **values}


def _table(summary: dict[str, Any]) -> dict[str, str]:
    out = io.StringIO()
    print_table(summary, None, out)
    rows = {}
    for line in out.getvalue().splitlines():
        label, _, value = line.strip().partition("  ")
        rows[label.strip()] = value.strip()
    return rows


def test_training_idle_row_is_the_bubble_fraction_and_says_it_holds_the_host_wait() -> None:
    rows = _table(_summary("training", bubble_fraction=0.367, host_wait_fraction=0.35, idle_fraction=0.0))
    assert rows["idle (bubble, waits)"] == "36.7 %"
    assert (
        rows["waiting for the host"].startswith("35 %") and "counted in idle" in rows["waiting for the host"]
    )


def test_serving_idle_row_is_the_idle_fraction_not_the_zero_bubble() -> None:
    rows = _table(_summary("inference", bubble_fraction=0.0, idle_fraction=0.048, host_wait_fraction=0.0))
    assert rows["idle (waiting for requests, host)"] == "4.8 %"
    assert not any("bubble" in label for label in rows)
    assert "waiting for the host" not in rows  # below 0.1 %: no row


def test_serving_host_row_says_it_is_counted_in_idle() -> None:
    """Most of a host-bound server's idle time is its host: the lines must not read as two shares."""
    rows = _table(_summary("inference", bubble_fraction=0.0, idle_fraction=0.202, host_wait_fraction=0.2))
    assert rows["idle (waiting for requests, host)"] == "20.2 %"
    assert rows["waiting for the host"] == (
        "20 %  (launches, per-iteration host work; counted in idle or exposed communication)"
    )


def test_counts_agree_with_their_nouns_and_large_powers_read_in_mw() -> None:
    """Not "1 GPUs", "1 replicas", "1 iterations", "1 events", nor "6.321e+04 kW"."""
    one = _summary("inference", idle_fraction=0.1, iterations=1, gpus=1, avg_it_power_w=6.321e7, events=1)
    one["workload"]["parallelism"] = {**one["workload"]["parallelism"], "tp": 1, "replicas": 1}
    one["peak_it_power_w"], one["facility_power_w"] = 2.5e10, 9_999.0
    out = io.StringIO()
    print_table(one, None, out, wall_s=0.5)
    rows = _table(one)
    assert rows["workload"].endswith("tp1 x 1 replica, 1 GPU on p")
    assert rows["iteration time"].endswith("(1 iteration)")
    assert rows["IT power avg / peak"] == "63.21 MW / 25 GW"
    assert rows["facility power, PUE"].startswith("9.999 kW")
    last = out.getvalue().splitlines()[-1]
    assert last.split("simulated in")[1].strip() == "0.50 s wall, 1 event"
    assert last.index("0.50") == out.getvalue().splitlines()[0].index("m (bf16)")  # aligned with the table


def test_a_job_run_prints_its_wall_time_goodput_and_failures() -> None:
    job = {
        "goodput": 0.912,
        "job_days": 41.3,
        "job_failures": 57,
        "job_lost_work_s": 36000.0,
        "job_down_s": 18000.0,
        "job_checkpoints": 310,
        "job_checkpoint_every_steps": 640,
    }
    rows = _table(_summary("training", bubble_fraction=0.1, **job))
    assert rows["job wall time, goodput"] == "41.3 days, goodput 91.2 %"
    assert (
        rows["failures, checkpoints"]
        == "57 failures (10 h of work lost, 5 h down), 310 checkpoints every 640 steps"
    )
    single = {**job, "job_failures": 1, "job_checkpoints": 1, "job_checkpoint_every_steps": 1}
    assert _table(_summary("training", bubble_fraction=0.1, **single))["failures, checkpoints"] == (
        "1 failure (10 h of work lost, 5 h down), 1 checkpoint every step"
    )
    assert "job wall time, goodput" not in _table(_summary("training", bubble_fraction=0.1))


def test_setting_tp_on_an_auto_laid_out_preset_keeps_its_gpus(gen2: object) -> None:
    """`--set parallelism.tp=4` on a preset: dp takes the GPUs tp gave up (the job does not shrink)."""
    from simcore.runner import RunOptions, run

    def gpus_and_layout(*sets: str) -> tuple[int, int, int]:
        s = run(
            RunOptions(profile="gen2.yaml", workload="llama3-8b", steps=1, sets=list(sets), write_trace=False)
        )
        par = s.summary["workload"]["parallelism"]
        return s.summary["gpus"], par["tp"], par["dp"]

    gpus, tp, _ = gpus_and_layout()
    assert tp == 1  # the automatic layout: llama3-8b fits a GB200-class GPU without TP
    assert gpus_and_layout("parallelism.tp=4") == (gpus, 4, gpus // 4)
    assert gpus_and_layout("parallelism.tp=4", "parallelism.dp=2") == (8, 4, 2)  # dp given: honoured
    assert gpus_and_layout("parallelism.tp=4", "batch.micro=2") == (
        gpus,
        4,
        gpus // 4,
    )  # micro: still refilled
    with pytest.raises(ConfigError, match="does not divide the 72 GPUs"):  # not a silent second rack
        gpus_and_layout("parallelism.pp=16")


def test_set_model_on_a_spec_that_names_its_preset_overrides_it() -> None:
    from workloads.spec import apply_workload_overrides

    raw = {"kind": "training", "preset": "llama3-8b", "batch": {"global_seqs": 8, "micro": 1}}
    assert apply_workload_overrides(dict(raw), ["model=llama3-70b"])["model"] == "llama3-70b"
    layered = apply_workload_overrides(dict(raw), ["model.layers=4"])
    assert layered["model"] == {"preset": "llama3-8b", "layers": 4} and "preset" not in layered


def test_the_table_always_says_how_hot_and_why_a_run_throttled() -> None:
    """max_junction_temp_c beside the slowdown temperature on every run; a throttled run says what share
    of GPU-time it ran slow and which limiter held it (a thermal and a power-limited run read alike before)."""
    cool = _table(
        _summary("training", max_junction_temp_c=71.3, slowdown_temp_c=90.0, throttle_time_fraction=0)
    )
    assert cool["max junction temperature"] == "71.3 degC (slowdown at 90 degC)"
    assert "throttled" not in cool
    hot = _summary(
        "training",
        max_junction_temp_c=90.97,
        slowdown_temp_c=90.0,
        throttle_time_fraction=0.4617,
        throttle_thermal_fraction=0.4617,
        min_clock_factor=0.9699,
    )
    rows = _table(hot)
    assert rows["max junction temperature"] == "91.0 degC (slowdown at 90 degC)"
    assert rows["throttled"] == (
        "46.2 % of GPU-time, by heat (junction past accelerator.slowdown_temp); clock down to 0.97 of max"
    )
    both = {**hot, "throttle_thermal_fraction": 0.3, "throttle_rack_power_fraction": 0.1617}
    assert _table(both)["throttled"].startswith(
        "46.2 % of GPU-time, by heat (junction past accelerator.slowdown_temp) 30 %, "
        "the rack power limit (rack.power_limit) 16.2 %"
    )
    assert _table(_summary("training"))["max junction temperature"] == "n/a (not modelled yet)"


@pytest.mark.parametrize(
    ("sets", "cause", "key"),
    [
        (["accelerator.tdp=2000 W", "cooling.inlet_temp=65 degC"], "thermal", "throttle_thermal_fraction"),
        (["accelerator.power_cap=1400 W"], "power cap", "throttle_power_cap_fraction"),
        (
            ["accelerator.tdp=2000 W", "scale_up.domain_size=144", "rack.gpus_per_tray=8"],
            "rack power limit",
            "throttle_rack_power_fraction",
        ),
    ],
)
def test_a_throttled_run_records_what_held_its_clock(sets: list[str], cause: str, key: str) -> None:
    """Heat, the GPU power cap and the rack power limit each slow a gen3 run; the summary names the one
    (throttle_cause) and its share, and the shares add up to throttle_time_fraction."""
    from simcore.runner import THROTTLE_CAUSES, RunOptions, run

    s = run(
        RunOptions(profile="gen3.yaml", workload="llama3-8b", steps=1, sets=sets, write_trace=False)
    ).summary
    assert s["throttle_time_fraction"] > 0.5 and s["throttle_cause"] == cause
    assert s[key] == pytest.approx(s["throttle_time_fraction"])
    assert sum(s[k] for k in THROTTLE_CAUSES) == pytest.approx(s["throttle_time_fraction"])
    assert s["min_clock_factor"] < 1.0 and s["slowdown_temp_c"] == 90.0


def test_setting_tp_on_a_preset_brings_sequence_parallelism_and_tp_overlap_along(gen2: object) -> None:
    """The automatic layout runs TP with sequence parallelism and overlapped TP communication: `--set
    parallelism.tp=8` on llama3-8b (laid out without TP) gets both, unless they are set too."""
    from simcore.runner import RunOptions, _training_spec

    def par(*sets: str) -> object:
        return _training_spec(RunOptions(profile="gen2.yaml", workload="llama3-8b"), gen2, list(sets))[
            0
        ].parallelism

    assert (par().tp, par().sequence_parallel, par().tp_comm_overlap) == (1, False, False)
    wide = par("parallelism.tp=8")
    assert (wide.tp, wide.sequence_parallel, wide.tp_comm_overlap) == (8, True, True)
    exposed = par("parallelism.tp=8", "parallelism.tp_comm_overlap=false")
    assert (exposed.sequence_parallel, exposed.tp_comm_overlap) == (True, False)
