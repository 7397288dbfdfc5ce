"""Validation against published training runs: row mapping, metric conventions, the error table, the CLI."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from simcore import validate_cli
from simcore.errors import ConfigError
from simcore.profile import load_profile
from workloads.model import megatron_flops_per_iteration, model_flops_per_token
from workloads.validation import (
    PLATFORMS,
    NotRunnable,
    Report,
    RowResult,
    format_report,
    load_table,
    map_row,
    precision_of,
    resolve_model,
    select_rows,
    validate,
    write_report_json,
)

TABLE, LABEL = load_table()


def _row(pattern: str) -> dict:
    rows = select_rows(TABLE, [pattern])
    assert len(rows) == 1, [r["id"] for r in rows]
    return rows[0]


def _plan(pattern: str):
    return map_row(_row(pattern), TABLE)


def test_packaged_table_is_the_shared_reference():
    assert len(TABLE["runs"]) == 124
    assert LABEL.endswith("reference/training_runs.yaml")
    assert set(TABLE) == {"schema_notes", "hardware_platforms", "model_catalog", "runs"}


def test_every_gpu_platform_of_the_table_is_mapped_and_loads():
    for ref in TABLE["hardware_platforms"]:
        if ref.startswith("tpu"):
            assert ref not in PLATFORMS
            continue
        platform = PLATFORMS[ref]
        profile = load_profile(platform.profile, list(platform.sets))
        assert profile.accelerator.peak_flops["bf16"] > 0
    a100_40 = load_profile(PLATFORMS["mosaic_a100_40"].profile, list(PLATFORMS["mosaic_a100_40"].sets))
    assert a100_40.accelerator.hbm_capacity == pytest.approx(40e9)
    jz = load_profile(PLATFORMS["jeanzay_a100"].profile, list(PLATFORMS["jeanzay_a100"].sets))
    assert jz.scale_out.nics_per_gpu == 0.5 and jz.scale_out.nic_bandwidth == pytest.approx(100e9 / 8)
    meta = load_profile(PLATFORMS["meta_llama3_h100"].profile, list(PLATFORMS["meta_llama3_h100"].sets))
    assert [t.span_gpus for t in meta.scale_out.tiers] == [16, 3072, 24576]
    assert meta.scale_out.tiers[1].oversubscription == 7


def test_sc21_rows_use_the_papers_flop_count_and_2021_megatron():
    plan = _plan("megatron-sc21-t1-145.6B")
    par = plan.spec["parallelism"]
    assert plan.profile == "a100-dgx.yaml" and plan.racks == 48
    assert (par["tp"], par["pp"], par["dp"], par["recompute"], par["zero"]) == (8, 8, 24, "full", 0)
    assert plan.spec["kernels"] == {"flash_attention": False, "dropout": True, "fused_cross_entropy": False}
    assert plan.spec["model"]["name"] == "gpt-145.6b"
    assert plan.convert == "tflops" and plan.metric.startswith("TFLOP/s")
    model, _ = resolve_model(_row("megatron-sc21-t1-145.6B"), TABLE)
    assert plan.scale == pytest.approx(megatron_flops_per_iteration(model, 2304, 2048, full_recompute=True))


def test_recompute_paper_rows_are_iteration_times_with_their_recompute():
    full = _plan("korthikanti-175B-full_recompute")
    sel = _plan("korthikanti-175B-seq_parallel+selective_recompute")
    assert full.metric == sel.metric == "iteration s"
    assert (
        full.spec["parallelism"]["recompute"] == "full" and not full.spec["parallelism"]["sequence_parallel"]
    )
    assert (
        sel.spec["parallelism"]["recompute"] == "selective" and sel.spec["parallelism"]["sequence_parallel"]
    )
    assert sel.spec["parallelism"]["vp"] == 3 and sel.spec["precision"] == "fp16"
    with pytest.raises(NotRunnable, match="global batch"):
        _plan("korthikanti-530B-2240gpu-dp8")


def test_megatron_core_rows_build_gpt_models_and_count_megatron_flops():
    plan = _plan("megatron-core-h100-462B")
    assert plan.profile == "h100-dgx.yaml"
    assert plan.spec["parallelism"]["tp_comm_overlap"] is True
    m = plan.spec["model"]
    assert (m["layers"], m["hidden"], m["heads"], m["vocab"], m["seq_len"]) == (112, 18432, 144, 131072, 4096)
    assert "72BSlh2" in plan.metric and plan.spec["precision"] == "bf16"


NEMO_ROWS = [r for r in TABLE["runs"] if r["id"].startswith("nemo2407")]


@pytest.mark.parametrize("row", NEMO_ROWS, ids=[r["id"] for r in NEMO_ROWS])
def test_nemo_models_reproduce_the_printed_flops_per_token(row):
    """NeMo prints model TFLOP/s and tokens/s: their ratio is FLOPs per token in racksim's own convention,
    so the mapped model (preset or NeMo config) must reproduce it."""
    model, _ = resolve_model(row, TABLE)
    printed = row["results"]["model_tflops_per_gpu"] * 1e12 / row["results"]["tokens_per_s_per_gpu"]
    assert model_flops_per_token(model) == pytest.approx(printed, rel=0.005)


def test_nemo_and_bridge_rows_map_precision_parallelism_and_platforms():
    plan = _plan("nemo2407-h100-LLAMA3-70B-64gpu")
    par = plan.spec["parallelism"]
    assert (par["tp"], par["pp"], par["cp"], par["vp"], par["dp"]) == (4, 4, 2, 5, 2)
    assert plan.spec["precision"] == "fp8" and plan.metric == "tokens/s/GPU"
    fsdp = _plan("mbridge-25.11-Pre-Training-LLAMA3_70B-DGX-GB200-64-FP8-CS-gbs256")
    assert fsdp.spec["parallelism"]["fsdp"] and fsdp.spec["parallelism"]["zero"] == 3
    assert fsdp.profile == "gb200-nvl72.yaml" and "scale_up.domain_size=64" in fsdp.profile_sets
    moe = _plan("mbridge-25.11-Pre-Training-Qwen3_235B_a22B-DGX-H100-256-FP8-CS-gbs2048")
    assert moe.spec["model"]["name"] == "qwen3-235b-a22b"
    assert (moe.spec["parallelism"]["ep"], moe.spec["parallelism"]["dp"]) == (32, 16)  # ep spans tp x dp
    # 61 layers on pp 4 x vp 4: the unprinted layout is the one Megatron-Bridge's recipe sets for (4, 4)
    ds = _plan("mbridge-25.11-Pre-Training-DeepSeekV3_(w/o_MTP)-DGX-GB200-256-BF16-gbs4096")
    assert ds.spec["parallelism"]["pipeline_layout"] == "Et*4|(t*4|)*14tL"
    mtp = _plan("mbridge-25.11-Pre-Training-DeepSeekV3_(w/_MTP)*")
    assert mtp.spec["model"]["mtp_layers"] == 1 and ds.spec["model"].get("mtp_layers", 0) == 0
    # 25.09 rows do not name MTP: Megatron-Bridge's DeepSeek-V3 recipe trains with one module
    unnamed = _plan("mbridge-25.09-Pre-Training-DeepSeekV3_(dropless)-DGX-H100-*")
    assert unnamed.spec["model"]["mtp_layers"] == 1
    assert any(a.startswith("MTP not named: the recipe's mtp_layers 1") for a in unnamed.assumptions)


def test_recompute_follows_the_recipe_then_the_least_that_fits():
    """Rows do not print their recompute. Megatron-Bridge's DeepSeek-V3 configs rebuild MLA's
    up-projections (H100: and the dense MLPs); that is used when it fits. Other MoE rows try the MoE
    recipes' selective [layernorm, moe_act] before any full recompute."""
    h100 = _plan("mbridge-25.09-Pre-Training-DeepSeekV3_(dropless)-DGX-H100-*").spec["parallelism"]
    assert (h100["recompute"], h100["recompute_modules"]) == ("selective", ["mla_up_proj", "mlp"])
    gb200 = _plan("mbridge-25.11-Pre-Training-DeepSeekV3_(w/o_MTP)-DGX-GB200-256-FP8-MX-gbs4096")
    assert gb200.spec["parallelism"]["recompute_modules"] == ["mla_up_proj"]
    assert any("the recipe's (Megatron-Bridge" in a for a in gb200.assumptions)
    oss = _plan("mbridge-25.11-Pre-Training-GPT_OSS_120B-DGX-B200-64-BF16-gbs512")
    par = oss.spec["parallelism"]
    assert (par["recompute"], par["recompute_modules"], par["recompute_layers"]) == (
        "selective",
        ["layernorm", "moe_act"],
        0,
    )
    assert any("selective, layernorm and moe_act (the least that fits" in a for a in oss.assumptions)
    dense = _plan("mbridge-25.11-Pre-Training-LLAMA3_70B-DGX-GB200-64-FP8-CS-gbs256").spec["parallelism"]
    assert dense["recompute"] == "full" and dense["recompute_layers"] > 0  # dense recipes: block recompute


def test_gradient_reduction_precision_follows_each_sources_recipes():
    """Megatron-Bridge's performance recipes reduce gradients in bf16 (grad_reduce_in_fp32 = False in every
    model's common config); NeMo 24.07 and Megatron-Core keep Megatron's fp32 default, except the NeMo
    Nemotron-340B layout, whose launcher config syncs gradients in bf16 (a recipe, stated in the row's
    assumptions)."""
    bridge = _plan("mbridge-25.11-Pre-Training-LLAMA3.1_405B-DGX-GB300-256-FP8-CS-gbs1536")
    assert bridge.spec["parallelism"]["grad_reduce"] == "bf16"
    assert (
        _plan("mbridge-25.09-Pre-Training-LLAMA3_70B-DGX-H100-64-*").spec["parallelism"]["grad_reduce"]
        == "bf16"
    )
    for other in ("nemo2407-h100-LLAMA3-70B-64gpu", "megatron-core-h100-7.1B"):
        assert _plan(other).spec["parallelism"]["grad_reduce"] == "fp32", other
    nemotron = _plan("nemo2407-h100-Nemotron-340B-128gpu")
    assert nemotron.spec["parallelism"]["grad_reduce"] == "bf16"
    assert any("nemotron_340b.yaml" in a and "grad_reduce: bf16" in a for a in nemotron.assumptions)
    # 16-bit gradient buffers leave the 405B on 288 GB without the recompute fp32 ones forced
    assert bridge.spec["parallelism"]["recompute"] == "none"


def test_mosaic_rows_run_fsdp_on_the_stated_a100():
    plan = _plan("llmfoundry-a100_40gb-mpt7b-seq2048-64gpu")
    par = plan.spec["parallelism"]
    assert par["fsdp"] and par["zero"] == 3 and par["grad_reduce"] == "bf16" and par["recompute"] == "full"
    assert plan.spec["batch"] == {"global_seqs": 1152, "micro": 18}
    assert "accelerator.hbm_capacity=40 GB" in plan.profile_sets
    assert _plan("llmfoundry-a100_40gb-mpt125m-seq2048-32gpu").spec["model"]["hidden"] == 768


def test_mlperf_rows_count_steps_to_target_and_skip_other_accelerators():
    plan = _plan("mlperf-train-v3.1-gpt3-NVIDIA-eos-dfw_n1344_ngc23.09_nemo")
    assert plan.convert == "minutes" and plan.spec["parallelism"]["vp"] == 12
    steps = 1211105280 / (2688 * 2048)
    assert steps == 220
    assert plan.scale == pytest.approx(steps * (1 + 5662 / 24576 / 3))
    with pytest.raises(NotRunnable, match="TPU"):
        _plan("mlperf-train-v3.1-gpt3-Google-cloud-tpu-v5e-4096-PAX")
    with pytest.raises(NotRunnable, match="Gaudi"):
        _plan("mlperf-train-v3.1-gpt3-Intel-HabanaLabs-HLS-Gaudi2-N32-PT")
    with pytest.raises(NotRunnable, match="parallelism not given"):
        _plan("megatron-sc21-gpt3-175b-1024gpu-estimate")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("FP8-CS (FP8-MX)", "fp8"),
        ("NVFP4", "fp4"),
        ("MXFP4 recipe", "fp4"),
        ("BF16", "bf16"),
        ("bf16", "bf16"),
        ("FP16 mixed precision (calculon encoding: float16)", "fp16"),
        ("mixed precision (FP16/BF16 tensor cores)", "bf16"),
        (None, "bf16"),
    ],
)
def test_precision_mapping(text, expected):
    assert precision_of(text)[0] == expected


def test_rows_whose_parallelism_does_not_divide_the_gpus_are_not_runnable():
    row = json.loads(json.dumps(_row("nemo2407-h100-LLAMA2-70B-64gpu")))
    row["hardware"]["gpus"] = 60
    with pytest.raises(NotRunnable, match="does not divide 60 GPUs"):
        map_row(row, TABLE)
    row = json.loads(json.dumps(_row("nemo2407-h100-LLAMA2-70B-64gpu")))
    row["parallelism"]["tp"] = 3
    with pytest.raises(NotRunnable, match="tp"):
        map_row(row, TABLE)


FAST = [
    "korthikanti-22B-*",
    "nemo2407-h100-LLAMA2-7B-8gpu",
    "llmfoundry-a100_40gb-mpt7b-seq2048-32gpu",
    "*Gaudi2-N32*",
]


@pytest.fixture(scope="module")
def report() -> Report:
    return validate(TABLE, label=LABEL, patterns=FAST)


def test_error_table_mape_is_the_mean_of_its_rows(report):
    rows = report.runnable
    assert len(rows) == 4 and len(report.rows) == 5
    for r in rows:
        assert r.error_pct == pytest.approx(100 * (r.predicted - r.measured) / r.measured)
        assert abs(r.error_pct) < 25
    assert report.mape == pytest.approx(sum(abs(r.error_pct) for r in rows) / len(rows))
    assert abs(report.worst.error_pct) == max(abs(r.error_pct) for r in rows)
    groups = report.by_group()
    assert groups["MLPerf Training v3.1 gpt3"][3] == 1  # the Gaudi row, skipped


def test_speed_error_flips_time_metrics():
    r = RowResult("x", "g", True, metric="iteration s", measured=2.0, predicted=1.0, error_pct=-50.0)
    assert r.speed_error_pct == pytest.approx(100.0)


def test_json_has_one_object_per_row_written_atomically(report, tmp_path):
    out = tmp_path / "sub" / "val.json"
    write_report_json(report, out)
    data = json.loads(out.read_text())
    assert [d["id"] for d in data] == [r.id for r in report.rows]
    for d in data:
        keys = {
            "id",
            "runnable",
            "reason",
            "metric",
            "measured",
            "predicted",
            "error_pct",
            "step_s",
            "measured_step_s",
        }
        assert keys <= set(d)
    skipped = [d for d in data if not d["runnable"]]
    assert skipped and skipped[0]["reason"] and skipped[0]["predicted"] is None
    assert not list(out.parent.glob(".*.tmp"))


def test_rows_report_their_step_in_seconds(report):
    """Each training row carries racksim's step and the step its measurement implies: an iteration-time row
    implies exactly its printed iteration time, a throughput row the same tokens per step at the measured
    rate."""
    for r in report.runnable:
        assert r.step_s and r.step_s > 0
        if r.metric.startswith("iteration"):
            assert r.measured_step_s == pytest.approx(r.measured, rel=1e-9)
        elif r.metric.startswith("tokens"):  # the row's tokens per GPU per step at its measured rate
            row = _row(r.id)
            tokens = row["batch"]["global_batch_seqs"] * row["model"]["seq_len"] / row["hardware"]["gpus"]
            assert r.measured_step_s == pytest.approx(tokens / r.measured, rel=1e-9)
    assert {r.metric.split()[0] for r in report.runnable} >= {"iteration", "tokens/s/GPU"}
    skipped = next(r for r in report.rows if not r.runnable)
    assert skipped.step_s is None and skipped.measured_step_s is None


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    validate_cli.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "v.json"
    args = parser.parse_args(
        ["validate", "--rows", "korthikanti-22B-full*,*Gaudi2-N48*", "--json", str(out), "--quiet"]
    )
    assert validate_cli.run(args) == 0
    text = capsys.readouterr().out
    assert "korthikanti-22B-full_recompute" in text and "MAPE over 1 runnable rows" in text
    assert "Intel Gaudi accelerators have no racksim profile" in text
    assert len(json.loads(out.read_text())) == 2


def test_specs_rerun_to_the_validated_prediction(tmp_path, capsys):
    """`validate --specs DIR` writes each runnable row's workload with its assumptions and the command that
    reruns it; that command reproduces the row's prediction exactly (unrunnable rows get no file)."""
    import shlex

    from simcore.cli import main

    parser = argparse.ArgumentParser()
    validate_cli.add_parser(parser.add_subparsers(dest="command"))
    # a row whose profile needs overrides with spaces in them (A100 40GB: "hbm_capacity=40 GB")
    rows = "llmfoundry-a100_40gb-mpt125m-seq2048-32gpu,*Gaudi2-N48*"
    args = parser.parse_args(
        ["validate", "--rows", rows, "--specs", str(tmp_path / "specs"), "--json", str(tmp_path / "v.json")]
    )
    assert validate_cli.run(args) == 0
    [spec] = sorted((tmp_path / "specs").iterdir())
    text = spec.read_text()
    assert "# assumption: " in text and "# measured: 127122 tokens/s/GPU" in text
    assert "--set 'accelerator.hbm_capacity=40 GB'" in text
    rerun = next(line for line in text.splitlines() if line.startswith("# rerun: python run_sim.py "))
    assert (
        main([*shlex.split(rerun.removeprefix("# rerun: python run_sim.py ")), "--out", str(tmp_path / "o")])
        == 0
    )
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    [validated] = [r for r in json.loads((tmp_path / "v.json").read_text()) if r["runnable"]]
    assert summary["tokens_per_s_per_gpu"] == pytest.approx(validated["predicted"], rel=1e-12)
    capsys.readouterr()


def test_cli_bad_inputs_are_one_line_errors(tmp_path):
    parser = argparse.ArgumentParser()
    validate_cli.add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(ConfigError, match="table not found"):
        validate_cli.run(parser.parse_args(["validate", "--table", str(tmp_path / "nope.yaml")]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: a mapping\n")
    with pytest.raises(ConfigError, match="runs"):
        validate_cli.run(parser.parse_args(["validate", "--table", str(bad)]))
    from simcore.errors import RacksimError

    with pytest.raises(RacksimError, match="no row"):
        validate_cli.run(parser.parse_args(["validate", "--rows", "no-such-row-anywhere"]))


def test_custom_table_rows_with_unknown_platforms_are_listed_with_a_reason(tmp_path):
    row = json.loads(json.dumps(_row("nemo2407-h100-LLAMA2-7B-8gpu")))
    row["id"], row["hardware"]["ref"] = "custom", "my_cluster"
    rep = validate({"runs": [row], "hardware_platforms": {}}, patterns=[])
    assert not rep.rows[0].runnable and "my_cluster" in rep.rows[0].reason
    assert rep.mape is None and math.isnan(rep.by_group()[row["group"]][1])


def test_validate_sets_reach_the_workload_and_errors_name_the_row_not_a_temp_file():
    """`validate --set` is split as `run` splits it: a workload field (CUDA graphs) changes a host-bound
    row's prediction, a profile field still applies, and a bad one is that row's reason without the
    temporary file it ran from."""
    from workloads.validation import run_plan

    plan = _plan("mbridge-25.11-Pre-Training-Qwen3_30B_a3B-DGX-B200-8-FP8-MX-gbs512")
    base = run_plan(plan)
    graphed = run_plan(plan, ["kernels.cuda_graphs=true"])
    assert base.runnable and graphed.runnable
    # micro-batch 1 of a 128-expert model: the step waits on kernel launches ~38 % of the time, and a graph
    # replays all but the dropless experts' launches as one
    assert graphed.predicted > 1.1 * base.predicted
    bad = run_plan(plan, ["parallelism.tp=3"])
    assert not bad.runnable
    assert "the row's workload" in bad.reason and "racksim-validate-" not in bad.reason
    assert "does not divide heads" in bad.reason
    small = run_plan(plan, ["accelerator.hbm_capacity=8 GB"])  # the 30B model's weights alone are larger
    assert not small.runnable and small.reason.startswith("does not fit in racksim's memory model: ")
    assert "racksim-validate-" not in small.reason


def test_gb300_outruns_gb200_on_the_same_layout_as_measured():
    """Blackwell Ultra (160 SMs, 1400 W) against GB200 (148 SMs, 1200 W) at the same FP8 spec peak: the 25.11
    table measures the same 8-GPU Llama 3 8B layout 1.19x faster on GB300. racksim's ratio within 10 % of it
    (1.10x; 1.03x before GB300 had a calibration of its own). The Qwen3-30B-A3B pair (1.22x measured) is left
    out: its memory-bound permutations and NVLink all-to-alls, the same on both, hold racksim's ratio to
    1.05x, and the table does not say what else sped that run up."""
    pattern = "*25.11*LLAMA3_8B-DGX-GB{}00-8-*"
    rows = validate(TABLE, label=LABEL, patterns=[pattern.format(3), pattern.format(2)]).runnable
    gb300, gb200 = sorted(rows, key=lambda r: "GB200" in r.id)
    assert "GB300" in gb300.id and "GB200" in gb200.id
    predicted, measured = gb300.predicted / gb200.predicted, gb300.measured / gb200.measured
    assert measured == pytest.approx(1.19, abs=0.01)
    assert abs(predicted / measured - 1) < 0.10


def test_rows_with_the_same_inputs_set_a_mape_floor(capsys):
    """The same configuration measured twice (say 100 and 200 tokens/s/GPU) gets one prediction, so no model
    of these inputs beats the better of p = 100 (errors 0 and 50 %) and p = 200 (100 and 0 %): a 25 % MAPE
    floor. Renaming a row keeps its inputs; changing its batch does not."""
    base = json.loads(json.dumps(_row("nemo2407-h100-LLAMA2-7B-8gpu")))
    first, second, other = (json.loads(json.dumps(base)) for _ in range(3))
    first["id"], second["id"], other["id"] = "first", "second", "other-batch"
    first["results"] = {"tokens_per_s_per_gpu": 100.0}
    second["results"] = {"tokens_per_s_per_gpu": 200.0}
    other["results"] = {"tokens_per_s_per_gpu": 150.0}
    other["batch"]["global_batch_seqs"] *= 2
    other["batch"].pop("grad_accum", None)
    rep = validate({**TABLE, "runs": [first, second, other]})
    assert [r.runnable for r in rep.rows] == [True, True, True]
    digests = [r.inputs for r in rep.rows]
    assert digests[0] == digests[1] != digests[2]
    assert rep.rows[0].predicted == rep.rows[1].predicted
    [pair] = rep.repeats()
    assert [r.id for r in pair] == ["first", "second"]
    assert rep.floor_mape == pytest.approx(100 * 0.5 / 3)  # 25 % over the pair's 2 rows, 0 for the third
    text = format_report(rep)
    assert "1 set of rows (2 rows)" in text and "up to 100 % apart" in text and "MAPE floor 16.7 %" in text
    assert "+100 % over 2 rows: 100 tokens/s/GPU (first) .. 200 (second)" in text
    assert rep.rows[0].as_json()["inputs_digest"] == digests[0]


def test_per_group_mape_and_bias_print_like_the_rows():
    """One decimal each; the bias signed like a row's error ("+17.0%"), MAPE unsigned; no group: "-"."""
    rows = [
        RowResult("a", "g", True, metric="tokens/s/GPU", measured=1.0, predicted=1.17, error_pct=17.0),
        RowResult("b", "g", True, metric="tokens/s/GPU", measured=1.0, predicted=0.9916, error_pct=-0.844),
        RowResult("c", "h", False, reason="skipped"),
    ]
    text = format_report(Report("t", rows))
    assert "  +17.0%" in text and "   -0.8%" in text  # the rows
    group = next(line for line in text.splitlines() if line.startswith("g "))
    assert group.split()[1:] == ["2", "8.9%", "+8.1%", "0"]
    assert next(line for line in text.splitlines() if line.startswith("h ")).split()[1:] == [
        "0",
        "-",
        "-",
        "1",
    ]


def test_a_table_without_repeats_prints_no_floor():
    rep = Report(
        "t", [RowResult("a", "g", True, metric="iteration s", measured=1.0, predicted=1.1, error_pct=10.0)]
    )
    assert rep.repeats() == [] and rep.floor_mape == 0.0
    assert "same inputs" not in format_report(rep)
