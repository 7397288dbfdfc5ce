"""``compare``: the same workload on several profiles, the co-design table, and its fleet-sizing formulas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simcore.compare import CompareOptions, default_target, format_table, row_metrics, run_compare, size_fleet
from simcore.trace_cli import main as trace_cli

HALF_NVLINK = """\
extends: gen2.yaml
name: gen2-half-nvlink
scale_up:
  bandwidth: 450 GB/s
"""
TINY_HBM = """\
extends: gen2.yaml
name: gen2-tiny-hbm
accelerator:
  hbm_capacity: 1 GB
"""


def test_fleet_sizing_formulas() -> None:
    m = {"tokens_per_s_per_rack": 3.0e5, "racks_used": 2.0, "full_rack_it_power_w": 1.2e5, "pue": 1.1}
    size_fleet(m, 1e7)
    assert m["racks_needed"] == math.ceil(1e7 / 3.0e5) == 34
    assert m["mw_needed"] == pytest.approx(34 * 1.2e5 * 1.1 / 1e6)
    m = {
        "tokens_per_s_per_rack": 3.0e5,
        "full_rack_it_power_w": 1.2e5,
        "fabric_power_per_rack_w": 4e3,
        "pue": 1.1,
    }
    size_fleet(m, 1e7)  # a rack's share of the scale-out fabric is powered and cooled with it
    assert m["mw_needed"] == pytest.approx(34 * 1.24e5 * 1.1 / 1e6)
    m = {"tokens_per_s_per_rack": None, "racks_used": None, "full_rack_it_power_w": None, "pue": None}
    size_fleet(m, 1e7)
    assert m["racks_needed"] is None and m["mw_needed"] is None
    rows = [{"metrics": {"tokens_per_s": 1.2e5}}, {"metrics": None}, {"metrics": {"tokens_per_s": 3.4e7}}]
    assert default_target(rows) == 1e8
    assert default_target(rows[:2]) == 1e7


def test_row_metrics_normalise_per_rack() -> None:
    summary = {
        "gpus": 144,
        "profile": {"gpus_per_rack": 72},
        "tokens_per_s": 2.0e5,
        "tokens_per_s_per_gpu": 2.0e5 / 144,
        "avg_it_power_w": 2.4e5,
        "full_rack_it_power_w": 1.2e5,
        "facility_power_w": 2.7e5,
        "pue": 1.125,
        "power_swing_w": 3.0e4,
        "energy_per_token_j": 1.35,
        "mfu": 0.4,
        "step_time_s": 2.0,
    }
    m = row_metrics(summary, None)
    assert m["racks_used"] == 2.0
    assert m["tokens_per_s_per_rack"] == 1.0e5
    assert m["rack_kw"] == pytest.approx(120.0)
    summary["pue"] = None
    assert row_metrics(summary, None)["pue"] is None
    # a one-GPU job is 1/32 of a rack; its rack power is a full rack of such GPUs (the summary's key)
    one = {**summary, "gpus": 1, "profile": {"name": "h100-dgx", "gpus_per_rack": 32, "gpus_per_tray": 8}}
    assert row_metrics(one, None)["racks_used"] == 1 / 32
    assert row_metrics(one, None)["rack_kw"] == pytest.approx(120.0)
    # a summary written before full_rack_it_power_w: the IT power over the whole racks the run powered
    old = {k: v for k, v in one.items() if k != "full_rack_it_power_w"}
    assert row_metrics(old, None)["rack_kw"] == pytest.approx(240.0)


def test_a_missing_profile_stops_compare_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in --profiles is the user's error (exit 2, one line), as in a sweep file: not a row of the table
    after the other profiles have run."""
    out = tmp_path / "cmp"
    code = trace_cli(["compare", "--profiles", "gen2.yaml", str(tmp_path / "nope.yaml"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "nope.yaml: profile not found" in err and "running" not in err
    assert not out.exists()


def test_compare_two_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    variant = tmp_path / "gen2-half-nvlink.yaml"
    variant.write_text(HALF_NVLINK)
    tiny = tmp_path / "nope.yaml"  # loads, but no layout of the model fits 1 GB
    tiny.write_text(TINY_HBM)
    out = tmp_path / "cmp"
    code = trace_cli(
        [
            "compare",
            *("--profiles", "gen2.yaml", str(variant), str(tiny)),
            *("--workload", "llama3-8b", "--steps", "1", "--out", str(out), "--no-trace"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "racks for target" in printed and "gen2-half-nvlink" in printed
    assert "nope: " in printed and "error" in printed  # a profile that cannot run is reported, not fatal
    table = json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert [r["label"] for r in table["profiles"]] == ["gen2", "gen2-half-nvlink", "nope"]
    base, half, bad = table["profiles"]
    assert bad["metrics"] is None and "GB" in bad["error"]
    assert (out / "gen2" / "summary.json").is_file() and not (out / "gen2" / "trace.h5").exists()
    target = table["target_tokens_per_s"]
    assert target == default_target(table["profiles"])
    for r in (base, half):
        m = r["metrics"]
        assert m["racks_needed"] == math.ceil(target / (m["tokens_per_s"] / m["racks_used"]))
        rack_w = m["full_rack_it_power_w"] + m["fabric_power_per_rack_w"]
        assert m["mw_needed"] == pytest.approx(m["racks_needed"] * rack_w * m["pue"] / 1e6)
    # half the scale-up bandwidth cannot make a TP-heavy job faster
    assert half["metrics"]["step_time_s"] >= base["metrics"]["step_time_s"]
    assert table["target_formula"] == "max(1e7, 10**ceil(log10(best tokens_per_s)))"


def test_an_interrupted_compare_names_the_runs_it_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the second profile: the first run's directory is complete and the message says so (not
    "no partial outputs were kept"), and that the table was not written; exit code 130."""
    import simcore.runner as runner

    real_run, calls = runner.run, []

    def ctrl_c_on_the_second_run(opts: runner.RunOptions) -> runner.RunResult:
        calls.append(opts.profile)
        if len(calls) == 2:
            Path(opts.out).mkdir(parents=True)  # the stopped run may have made its folder
            raise KeyboardInterrupt
        return real_run(opts)

    monkeypatch.setattr(runner, "run", ctrl_c_on_the_second_run)
    out = tmp_path / "cmp"
    code = trace_cli(
        [
            "compare",
            *("--profiles", "gen1.yaml", "gen2.yaml", "gen3.yaml"),
            *("--workload", "llama3-8b", "--steps", "1", "--out", str(out)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 130 and "no partial outputs" not in err
    line = err.strip().splitlines()[-1]
    assert f"complete runs kept: {out / 'gen1'} (summary.json and trace.h5 each)" in line
    assert "2 of 3 profile(s) did not run or finish" in line
    assert "compare.json and compare.png were not written" in line
    assert (out / "gen1" / "summary.json").is_file() and (out / "gen1" / "trace.h5").is_file()
    assert not (out / "gen2").exists() and not (out / "compare.json").exists()


def _table(profiles: list[dict]) -> dict:
    """A compare table around ``profiles`` (the formula and assumption lines are placeholders)."""
    return {
        "target_tokens_per_s": 1e7,
        "target_formula": "f",
        "racks_formula": "r",
        "mw_formula": "m",
        "assumption": "a",
        "profiles": profiles,
    }


def test_format_table_prints_na_for_missing_values() -> None:
    table = _table([{"label": "genX", "metrics": dict.fromkeys(("step_time_s", "pue", "power_swing_w"))}])
    text = format_table(table)
    assert "n/a" in text and "genX" in text and "PUE" in text


def test_the_table_says_how_hot_each_profile_ran_and_which_throttled() -> None:
    """A generation that is slower only because it is hot or power-limited says so beside its step time."""
    base = {"step_time_s": 1.62, "max_junction_temp_c": 71.28, "throttle_time_fraction": 0.0}
    hot = {"step_time_s": 2.14, "max_junction_temp_c": 90.97, "throttle_time_fraction": 0.4617}
    table = _table(
        [
            {"label": "cool", "metrics": row_metrics({**base, "throttle_cause": None}, None)},
            {"label": "hot", "metrics": row_metrics({**hot, "throttle_cause": "thermal"}, None)},
            {"label": "capped", "metrics": row_metrics({**hot, "throttle_cause": "rack power limit"}, None)},
        ]
    )
    lines = format_table(table).splitlines()
    [temps] = [line for line in lines if line.startswith("max junction temperature (degC)")]
    assert temps.split()[-3:] == ["71.3", "91.0", "91.0"]
    [throttle] = [line for line in lines if line.startswith("throttled (%, cause)")]
    assert throttle.split()[-5:] == ["0", "46.2", "heat", "46.2", "rack"]
    assert any(line.startswith("throttled: share of GPU-time") for line in lines)
    table["profiles"] = table["profiles"][:1]
    assert "throttled" not in format_table(table)


def test_a_job_workload_shows_its_goodput_and_sizes_the_fleet_on_it(tmp_path: Path) -> None:
    """compare on a spec with a job: section: goodput, job days, failures and lost work per profile, and the
    fleet sized on tokens/s x goodput (the formula says so)."""
    m = {"tokens_per_s_per_rack": 1.0e6, "goodput": 0.8, "full_rack_it_power_w": 1.0e5, "pue": 1.0}
    size_fleet(m, 1e7)
    assert m["racks_needed"] == math.ceil(1e7 / 0.8e6) == 13
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "model: llama3-8b\nparallelism: {tp: 8}\nbatch: {global_seqs: 64}\nsteps: 1\njob: {steps: 100000}\n"
    )
    out = tmp_path / "cmp"
    table = run_compare(
        CompareOptions(
            profiles=["gen2.yaml"],
            workload=str(spec),
            out=out,
            sets=["reliability.node_failures_per_1000_node_days=650"],
            write_trace=False,
        )
    )
    row = json.loads((out / "compare.json").read_text())["profiles"][0]["metrics"]
    summary = json.loads((out / "gen2" / "summary.json").read_text())
    assert row["goodput"] == summary["goodput"] < 1 and row["job_days"] == summary["job_days"]
    assert row["job_failures"] == summary["job_failures"] > 0
    assert row["job_lost_work_s"] == summary["job_lost_work_s"] > 0
    assert row["goodput_tokens_per_s"] == pytest.approx(summary["tokens_per_s"] * summary["goodput"])
    target = table["target_tokens_per_s"]
    assert row["racks_needed"] == math.ceil(target / (row["tokens_per_s_per_rack"] * row["goodput"]))
    text = format_table(table)
    assert "tokens_per_s * goodput" in table["racks_formula"] and "tokens_per_s * goodput" in text
    for label in (
        "job goodput (%)",
        "tokens/s x goodput",
        "job wall time (days)",
        "work lost to failures (h)",
    ):
        assert any(line.startswith(label) for line in text.splitlines()), label


def test_all_profiles_failing_is_one_clear_error(tmp_path: Path) -> None:
    from simcore.errors import RacksimError

    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY_HBM)
    with pytest.raises(RacksimError, match="no profile could run"):
        run_compare(CompareOptions(profiles=[str(tiny)], workload="llama3-8b", out=tmp_path / "cmp"))


def test_sub_rack_job_is_not_charged_the_idle_rest_of_its_rack(tmp_path: Path) -> None:
    """A 1-GPU serving job powers its whole (mostly idle) rack; the fleet table must not bill that idle
    draw to every GPU: a full rack of such GPUs stays under the rack's power limit and above its idle floor."""
    from simcore.profile import load_profile

    spec = tmp_path / "serve.yaml"
    spec.write_text(
        "kind: inference\nmodel: llama3-8b\nparallelism: {tp: 1, replicas: 1}\n"
        "requests: {rate: 5, count: 20, input_tokens: 256, output_tokens: 64}\n"
    )
    out = tmp_path / "cmp"
    code = trace_cli(
        ["compare", "--profiles", "h100-dgx.yaml", "--workload", str(spec), "--out", str(out), "--no-trace"]
    )
    assert code == 0
    m = json.loads((out / "compare.json").read_text())["profiles"][0]["metrics"]
    prof = load_profile("h100-dgx.yaml")
    gpr = prof.gpus_per_rack
    assert m["racks_used"] == pytest.approx(1 / gpr)
    # the run itself powered a whole rack: more than a full rack of idle GPUs, i.e. not per-GPU power
    assert m["avg_it_power_w"] > gpr * prof.accelerator.idle_power
    assert gpr * prof.accelerator.idle_power < m["full_rack_it_power_w"] < prof.rack.power_limit
    # at most a full rack of GPUs at TDP beyond the run's own rack
    assert m["full_rack_it_power_w"] <= m["avg_it_power_w"] + gpr * (
        prof.accelerator.tdp - prof.accelerator.idle_power
    )
