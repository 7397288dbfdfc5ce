"""End-to-end runs: summary contract, determinism, fidelity equivalence, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from simcore.errors import CapacityError, ConfigError
from simcore.runner import SUMMARY_KEYS, RunOptions, run

ROOT = Path(__file__).resolve().parent.parent


def _small(tmp_path: Path, name: str = "run", **kw) -> RunOptions:
    opts = dict(profile="gen2.yaml", workload="llama3-8b", out=tmp_path / name, steps=1)
    opts.update(kw)
    return RunOptions(**opts)


def test_summary_has_every_design_key(tmp_path):
    result = run(_small(tmp_path))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in summary, key
    for key in summary["not_modelled"]:
        assert summary[key] is None
    assert summary["gpus"] == 72
    assert 0.05 < summary["mfu"] < 0.9
    # tokens/s is global tokens per step over step time (definition, exact).
    tokens = summary["workload"]["global_seqs"] * 8192
    assert summary["tokens_per_s"] == pytest.approx(tokens / summary["step_time_s"], rel=1e-12)
    assert summary["tokens_per_s_per_gpu"] * 72 == pytest.approx(summary["tokens_per_s"], rel=1e-12)
    fractions = summary["compute_fraction"] + summary["exposed_comm_fraction"] + summary["bubble_fraction"]
    assert fractions == pytest.approx(1.0, abs=1e-9)
    assert 0 < summary["peak_hbm_bytes"] < 186e9
    with h5py.File(tmp_path / "run" / "trace.h5") as f:
        assert f.attrs["format_version"] == "1.0"
        assert len(f["events"]) == summary["events"] == result.summary["events"]
        assert "profile_yaml" in f["meta"] and "workload_yaml" in f["meta"]
    assert result.events is None  # not kept unless asked: memory stays bounded


def test_same_seed_gives_identical_results(tmp_path):
    a = run(_small(tmp_path, "a", seed=7))
    b = run(_small(tmp_path, "b", seed=7))
    strip = lambda s: {k: v for k, v in s.items() if k != "wall_time_s"}  # noqa: E731
    assert strip(a.summary) == strip(b.summary)
    with h5py.File(tmp_path / "a" / "trace.h5") as fa, h5py.File(tmp_path / "b" / "trace.h5") as fb:
        assert fa["events"][:].tobytes() == fb["events"][:].tobytes()


@pytest.mark.parametrize(
    "sets",
    [
        ["parallelism.tp=2", "parallelism.pp=2", "parallelism.dp=2", "batch.global_seqs=8", "batch.micro=1"],
        [
            "parallelism.tp=2",
            "parallelism.pp=4",
            "parallelism.dp=2",
            "parallelism.vp=2",
            "batch.global_seqs=16",
        ],
    ],
)
def test_representative_ranks_match_full_fidelity(tmp_path, sets):
    """Symmetric jobs: one class per stage gives the same step time as simulating every rank."""
    spec = tmp_path / "job.yaml"
    spec.write_text("kind: training\nmodel: llama3-8b\nbatch: {global_seqs: 8}\nsteps: 1\n")
    rep = run(_small(tmp_path, "rep", workload=str(spec), sets=sets, fidelity="representative"))
    full = run(_small(tmp_path, "full", workload=str(spec), sets=sets, fidelity="full"))
    assert full.summary["step_time_s"] == pytest.approx(rep.summary["step_time_s"], rel=1e-9)
    assert full.summary["events"] > rep.summary["events"]


def test_pipelined_steps_repeat_in_steady_state(tmp_path):
    """Several steps through a pipeline: p2p tags of one step never satisfy the next step's receives."""
    r = run(
        _small(tmp_path, profile="h100-dgx.yaml", workload="llama3-70b", racks=2, steps=3, write_trace=False)
    )
    assert r.summary["workload"]["parallelism"]["pp"] > 1
    t = r.summary["step_times_s"]
    assert len(t) == 3 and t[2] == pytest.approx(t[1], rel=1e-9)


def test_more_microbatches_shrink_the_bubble(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "kind: training\nmodel: llama3-8b\nparallelism: {tp: 2, pp: 4, dp: 1}\nbatch: {global_seqs: 4}\n"
    )
    few = run(_small(tmp_path, "few", workload=str(spec)))
    many = run(_small(tmp_path, "many", workload=str(spec), sets=["batch.global_seqs=32"]))
    assert many.summary["bubble_fraction"] < few.summary["bubble_fraction"]


def test_job_larger_than_cluster_names_racks(tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text(
        "kind: training\nmodel: llama3-8b\nparallelism: {tp: 8, dp: 2000}\nbatch: {global_seqs: 2000}\n"
    )
    with pytest.raises(CapacityError, match="needs 16000 GPUs = 223 racks") as err:
        run(_small(tmp_path, workload=str(spec)))
    # the workload file and the sizes that multiply to the GPU count: what to change besides --racks
    assert f"({spec}: parallelism tp 8 x pp 1 x dp 2000 x cp 1)" in str(err.value)
    assert str(err.value).endswith("use --racks 223 or smaller parallelism.tp/parallelism.dp")


@pytest.mark.parametrize(
    "body,match",
    [
        ("model: llama3-8b\nparallelism: {tp: 3}\nbatch: {global_seqs: 8}\n", "parallelism.tp"),
        ("model: llama3-8b\nparallelism: {pp: 5}\nbatch: {global_seqs: 8}\n", "parallelism.pp"),
        ("model: llama3-8b\nparallelism: {dp: 4}\nbatch: {global_seqs: 8, micro: 3}\n", "batch.micro"),
        ("model: llama3-8b\nparallelism: {dp: 3}\nbatch: {global_seqs: 8}\n", "batch.global_seqs"),
        ("model: llama3-8b\nparalelism: {tp: 2}\nbatch: {global_seqs: 8}\n", "did you mean 'parallelism'"),
        ("model: llama3-8b\nbatch: {global_seqs: 8}\nprecision: fp2\n", "precision"),
        ("model: llama3-8b\n", "batch"),
    ],
)
def test_bad_workloads_name_the_field(tmp_path, body, match):
    spec = tmp_path / "bad.yaml"
    spec.write_text(body)
    with pytest.raises(ConfigError, match=match) as err:
        run(_small(tmp_path, workload=str(spec)))
    assert "bad.yaml" in str(err.value)


def test_precision_the_accelerator_lacks(tmp_path):
    spec = tmp_path / "fp4.yaml"
    spec.write_text("model: llama3-8b\nbatch: {global_seqs: 8}\nprecision: fp4\n")
    with pytest.raises(ConfigError, match=r"H100.*no fp4 tensor throughput"):
        run(_small(tmp_path, profile="h100-dgx.yaml", workload=str(spec)))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_sim.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args,match",
    [
        (["--profile", "nope.yaml"], "profile not found"),
        (["--profile", "gen2.yaml", "--workload", "llama9-1t"], "workload not found"),
        (
            ["--profile", "gen2.yaml", "--set", 'scale_up.bandwidth="900 GB"'],
            '--set scale_up.bandwidth="900 GB" (over ',
        ),
        (
            ["--profile", "gen2.yaml", "--set", "parallelism.tp=3", "--workload", "llama3-8b"],
            "--set parallelism.tp=3 (over preset:llama3-8b): parallelism.tp",
        ),
        (  # not a number: the spec loader's one line, not a TypeError from the preset's layout follow-ups
            ["--profile", "gen2.yaml", "--set", "parallelism.tp=abc", "--workload", "llama3-8b"],
            "--set parallelism.tp=abc (over preset:llama3-8b): parallelism.tp: must be a number",
        ),
        (
            ["--profile", "gen2.yaml", "--set", "parallelism.pp=null", "--workload", "llama3-8b"],
            "--set parallelism.pp=null (over preset:llama3-8b): parallelism.pp: must be a number",
        ),
    ],
)
def test_cli_errors_are_one_line_exit_2_nothing_written(tmp_path, args, match):
    out = tmp_path / "out"
    proc = _cli(*args, "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert match in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (out / "trace.h5").exists() and not (out / "summary.json").exists()


def test_cli_main_run_writes_outputs(tmp_path):
    proc = _cli(
        "--profile", "gen2.yaml", "--workload", "llama3-8b", "--steps", "1", "--out", "o", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "step time" in proc.stdout
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert np.isfinite(summary["step_time_s"])
    assert not list((tmp_path / "o").glob(".*.tmp"))


def test_run_sim_without_its_dependencies_says_to_install(tmp_path):
    """A checkout run before `pip install -e .`: one line naming what is missing, exit 2, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "run_sim.py"
    hide = "import runpy, sys; sys.modules['simpy'] = None; sys.argv = ['run_sim.py', '--profile', 'gen2.yaml']; "
    out = subprocess.run(
        [sys.executable, "-c", hide + f"runpy.run_path({str(script)!r}, run_name='__main__')"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "not installed: simpy" in out.stderr and "pip install -e ." in out.stderr
    assert "Traceback" not in out.stderr


def test_set_reaches_into_a_model_named_by_preset(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "kind: training\nmodel: llama3-8b\nparallelism: {tp: 1, pp: 1, dp: 8}\n"
        "batch: {global_seqs: 8, micro: 1}\nsteps: 1\n"
    )

    def step(*sets: str) -> float:
        opts = RunOptions(
            profile="gen2.yaml",
            workload=str(spec),
            sets=["calibration.step_host_time=0 s", *sets],  # a fixed per-step cost would not halve
            write_trace=False,
            out=str(tmp_path / "o"),
        )
        return run(opts).summary["step_time_s"]

    # model.layers on a preset name: the preset with that one key changed (half the layers, ~half the step).
    assert step("model.layers=16") == pytest.approx(step() / 2, rel=0.1)
    with pytest.raises(ConfigError, match=r"--set model\.layers=0 \(over .*job\.yaml\): model\.layers"):
        step("model.layers=0")


def test_set_model_then_a_model_key_and_serving_errors_name_the_option(tmp_path):
    spec = tmp_path / "serve.yaml"
    spec.write_text("kind: inference\nmodel: llama3-8b\nrequests: {count: 4}\n")

    def serve(*sets: str) -> dict:
        opts = RunOptions(
            profile="h100-dgx.yaml",
            workload=str(spec),
            sets=list(sets),
            write_trace=False,
            out=str(tmp_path / "o"),
        )
        return run(opts).summary

    with pytest.raises(ConfigError, match=r"^--set scheduler\.max_num_seqs=0 \(over .*serve\.yaml\)"):
        serve("scheduler.max_num_seqs=0")
    with pytest.raises(ConfigError, match=r"^--set model\.layers=0 \(over .*serve\.yaml\): model\.layers"):
        serve("model=llama3-70b", "model.layers=0")  # a preset set by --set is reachable too
    assert serve("model=llama3-70b", "model.layers=8", "parallelism.tp=8")["requests_per_s"] > 0


def test_fsdp_is_recorded_as_the_zero3_it_simulates(tmp_path):
    """fsdp: true shards like ZeRO-3 whatever zero says: the summary and saved spec say so, not zero: 0."""
    spec = tmp_path / "fsdp.yaml"
    spec.write_text(
        "model: {preset: llama3-8b, layers: 2}\nparallelism: {tp: 8, dp: 2, fsdp: true, zero: 0}\n"
        "batch: {global_seqs: 4}\nsteps: 1\n"
    )
    r = run(_small(tmp_path, profile="h100-dgx.yaml", workload=str(spec), write_trace=False))
    par = r.summary["workload"]["parallelism"]
    assert (par["zero"], par["fsdp"]) == (3, True)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())["workload"]["parallelism"]
    assert (saved["zero"], saved["fsdp"]) == (3, True)


@pytest.mark.parametrize(
    "sets,starts",
    [
        (["rack.power_limit=5 kW"], "--set rack.power_limit=5 kW (over "),
        # the rack's idle floor reads many fields: the options that moved it are named beside the file
        (
            ["accelerator.idle_power=950 W", "accelerator.tdp=1000 W"],
            "gen1.yaml with --set accelerator.idle_power=950 W, --set accelerator.tdp=1000 W: rack.power_limit",
        ),
    ],
)
def test_power_model_checks_name_the_set_option(tmp_path, sets, starts):
    """A profile check made when the run starts blames the --set that broke it, not the shipped file."""
    with pytest.raises(ConfigError, match="below the rack's idle draw") as err:
        run(_small(tmp_path, profile="gen1.yaml", sets=sets, write_trace=False))
    assert starts in str(err.value) and "\n" not in str(err.value)
