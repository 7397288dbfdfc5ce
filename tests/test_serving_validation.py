"""Validation of serving against published inference runs (``validate --serving``): row mapping, the rows
it cannot express, known answers within a stated tolerance, the CLI and a mixed table."""

from __future__ import annotations

import argparse
import json
import math
import shlex
from pathlib import Path

import pytest
import yaml

from simcore import validate_cli
from simcore.errors import RacksimError
from workloads.model import load_preset
from workloads.serving_validation import map_serving_row, trtllm_bench_limits
from workloads.validation import NotRunnable, load_table, plan_row, run_plan, select_rows, validate

TABLE, LABEL = load_table(serving=True)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "inference_runs.yaml"


def _row(pattern: str) -> dict:
    rows = select_rows(TABLE, [pattern])
    assert len(rows) == 1, [r["id"] for r in rows]
    return rows[0]


def test_packaged_table_is_the_shared_reference():
    assert LABEL.endswith("reference/inference_runs.yaml") and len(TABLE["runs"]) == 210
    if SHARED.is_file():  # beside a checkout with ../shared (CI): byte for byte the same file
        packaged = Path(__file__).resolve().parents[1] / "workloads" / "reference" / "inference_runs.yaml"
        assert packaged.read_bytes() == SHARED.read_bytes()


def test_a_tensorrt_llm_row_maps_its_model_system_tp_precision_and_lengths():
    plan = map_serving_row(_row("trtllm-v1.0-Llama_3.3_70B-H100-tp2-1000-1000"), TABLE)
    spec = plan.spec
    assert (plan.profile, plan.racks, plan.convert) == ("h100-dgx.yaml", 1, "serving_tokens")
    assert (spec["kind"], spec["model"], spec["parallelism"]["tp"], spec["precision"]) == (
        "inference",
        "llama3-70b",
        2,
        "fp8",
    )
    assert spec["kv_cache"]["precision"] == "fp8" and spec["requests"] == {
        "count": 3000,  # the overview's --num-requests for 1000/1000
        "input_tokens": 1000,
        "output_tokens": 1000,
    }
    limits = trtllm_bench_limits(load_preset("llama3-70b"), "fp8", "fp8", 2, 1000, 1000, 80e9)
    assert (spec["scheduler"]["max_num_seqs"], spec["scheduler"]["max_batch_tokens"]) == limits
    assert "rate" not in spec["requests"]  # offline: every request at t = 0
    fp4 = map_serving_row(_row("trtllm-v1.0-Qwen3-235B-A22B-B200-tp8-128-128"), TABLE)
    assert (fp4.spec["model"], fp4.spec["precision"], fp4.spec["kv_cache"]["precision"]) == (
        "qwen3-235b-a22b",
        "fp4",
        "fp8",
    )
    assert fp4.profile == "b200-dgx.yaml" and fp4.measured == 63362


def test_trtllm_bench_limits_follow_its_kv_estimate_caps_and_rounding():
    """trtllm-bench's default max_batch_size / max_num_tokens (tuning.py): worked by hand for Llama-3.3-70B
    FP8 on two 80 GB GPUs at 1000/1000: KV per token 2·80 layers·8 heads·128·1 B = 0.000153 GiB,
    engine 70.55e9 B = 65.7 GiB, (160 - 65.7) GiB · 0.95 / (0.000153 · 2000) = 292.9 requests -> 384
    (multiples of 128 from 256), tokens 292.9 · 2 = 585.8 -> 2,048 (the floor)."""
    llama70, llama8 = load_preset("llama3-70b"), load_preset("llama3-8b")
    assert trtllm_bench_limits(llama70, "fp8", "fp8", 2, 1000, 1000, 80e9) == (384, 2048)
    # a small model hits the 4,096-request cap; tokens = 4,096 x (1 + 128/128)
    assert trtllm_bench_limits(llama8, "fp8", "fp8", 1, 128, 128, 80e9) == (4096, 8192)
    # a long request leaves room for few: at least 64 requests and 2,048 tokens
    assert trtllm_bench_limits(llama70, "fp4", "fp8", 1, 20000, 2000, 180e9) == (64, 2048)
    # rounding: below 256 to multiples of 32, below 1,024 of 128, above of 256
    for tp, isl, osl in ((1, 128, 2048), (2, 500, 2000), (4, 128, 4096), (8, 2048, 2048)):
        bs, tokens = trtllm_bench_limits(llama70, "fp8", "fp8", tp, isl, osl, 141e9)
        step = 32 if bs <= 256 else 128 if bs <= 1024 else 256
        assert bs % step == 0 and 64 <= bs <= 4096 and tokens % 256 == 0 and 2048 <= tokens <= 32768


def test_every_tensorrt_llm_and_closed_mlperf_offline_row_maps_and_the_rest_say_why_not():
    mapped, skipped = 0, 0
    reasons = ("open division", "MaxQ", "accelerator ", "NVIDIA H100-NVL", "NVIDIA H100-PCIe")
    for row in TABLE["runs"]:
        if "scenario" not in row:
            continue  # the simulator-fidelity note
        try:
            map_serving_row(row, TABLE)
            mapped += 1
        except NotRunnable as exc:
            assert row["group"].startswith("MLPerf"), row["id"]
            reason = str(exc)
            if "offline" in row["scenario"].lower():  # a modified model, or a GPU with no profile
                assert reason.startswith(reasons), (row["id"], reason)
            else:  # Server / Interactive: latency-bounded, not an offline throughput
                assert reason.startswith("scenario ") and "only offline" in reason
            skipped += 1
    assert (mapped, skipped) == (127 + 28, 82 - 28)


def test_an_mlperf_offline_row_runs_the_submissions_engine_at_the_openorca_mean_lengths():
    """H100 in v4.1: TensorRT-LLM engines of TP2, FP8, batch 896 (NVIDIA's configs), the OpenOrca set's mean
    prompt and the stack's mean generated length; one engine simulated, the system's tokens/s is its
    replicas'. 16 GPUs on two nodes hold 8 such engines."""
    plan = map_serving_row(_row("*JuniperNetworks*H100-SXM-80GBx16*Offline"), TABLE)
    spec = plan.spec
    assert spec["model"] == "llama2-70b" and spec["precision"] == "fp8" and plan.scale == 8
    assert spec["parallelism"] == {"tp": 2, "replicas": 1}
    assert spec["scheduler"]["max_num_seqs"] == 896
    assert (spec["requests"]["input_tokens"], spec["requests"]["output_tokens"]) == (220, 291)
    b200 = map_serving_row(_row("*NVIDIA-B200-SXM-180GBx1*Offline"), TABLE).spec
    assert b200["precision"] == "fp4" and b200["kv_cache"]["precision"] == "fp8"
    assert b200["scheduler"]["max_num_seqs"] == 2048 and b200["scheduler"]["max_batch_tokens"] == 3584


def test_mlperf_engines_per_system_and_what_a_row_without_one_says():
    cts = map_serving_row(_row("*NVIDIA-H200-SXM-141GB-CTSx8*Offline"), TABLE)
    assert cts.profile_sets == ("accelerator.tdp=1000 W",) and cts.spec["scheduler"]["max_num_seqs"] == 784
    dell_h200 = map_serving_row(_row("*Dell-XE9680_H200*Offline"), TABLE)
    assert dell_h200.spec["scheduler"]["max_num_seqs"] == 806 and dell_h200.scale == 8
    four = map_serving_row(_row("*Dell-XE8640_H100_SXM_80GBx4*Offline"), TABLE)
    assert four.spec["parallelism"]["tp"] == 2 and four.scale == 2
    amd = map_serving_row(_row("*AMD-8xMI300X_2xEPYC-9374F*Offline"), TABLE).spec
    assert amd["scheduler"]["chunked_prefill"] is False and amd["requests"]["output_tokens"] == 293
    h100 = _row("*NVIDIA-DGX-H100_H100-SXM-80GBx8*Offline")
    for changes, reason in (
        ({"hardware__accelerator": "NVIDIA A100-SXM-80GB"}, "no engine configuration known"),
        ({"hardware__total_accelerators": 3}, "3 GPUs do not hold whole TP2 engines"),
        ({"results": {}}, "no system tokens/s in the row"),
        ({"division": "open"}, "open division"),
    ):
        with pytest.raises(NotRunnable, match=reason):
            map_serving_row(_edited(h100, changes), TABLE)
    # A later round's row runs v4.1's engine for its GPU and says so
    later = _edited(h100, {"group": "MLPerf Inference v5.0 llama2-70b-99"})
    assert any("the row is from v5.0" in a for a in map_serving_row(later, TABLE).assumptions)


def test_the_h200_mlperf_offline_rows_within_15_percent():
    """Published measurements, stated tolerance: NVIDIA's own 8x H200 (700 W) and 8x H200-CTS (1000 W) rows,
    the best documented engines of the table (December 2026: +9.7 % and -6.1 %)."""
    report = validate(
        TABLE,
        label=LABEL,
        patterns=["mlperf-inf-v4.1-closed-NVIDIA-H200-SXM-141GBx8_TRT-llama2*Offline", "*CTSx8*Offline"],
    )
    assert len(report.runnable) == 2
    for r in report.runnable:
        assert abs(r.error_pct) < 15, (r.id, r.error_pct)


@pytest.mark.parametrize(
    "row,tolerance",
    [
        # Prefill-heavy and decode-heavy rows of the 8B on one H100 (FP8): compute- and HBM-bound ends.
        ("trtllm-v1.0-Llama_3.1_8B-H100-tp1-2048-128", 0.10),
        ("trtllm-v1.0-Llama_3.1_8B-H100-tp1-1000-1000", 0.10),
    ],
)
def test_known_rows_within_tolerance(row, tolerance):
    res = run_plan(map_serving_row(_row(row), TABLE))
    assert res.runnable and abs(res.error_pct) < 100 * tolerance, res


def test_cli_serving_prints_the_table_writes_json_and_specs_rerun(tmp_path, capsys):
    from simcore.cli import main

    parser = argparse.ArgumentParser()
    validate_cli.add_parser(parser.add_subparsers(dest="command"))
    rows = "trtllm-v1.0-Llama_3.1_8B-H100-tp1-5000-500,*ESC8000A_E12_H100x8_TRT-llama2-70b-99-Offline"
    out = tmp_path / "v.json"
    args = parser.parse_args(
        [
            "validate",
            "--serving",
            "--rows",
            rows,
            "--json",
            str(out),
            "--specs",
            str(tmp_path / "s"),
            "--quiet",
        ]
    )
    assert validate_cli.run(args) == 0
    text = capsys.readouterr().out
    assert "MAPE over 1 runnable rows" in text and "H100-PCIe-80GB: a PCIe card, no shipped profile" in text
    result = json.loads(out.read_text())
    assert [r["runnable"] for r in result] == [False, True] or [r["runnable"] for r in result] == [
        True,
        False,
    ]
    [validated] = [r for r in result if r["runnable"]]
    assert set(validated) >= {"id", "runnable", "reason", "metric", "measured", "predicted", "error_pct"}
    # The written spec reruns to the same prediction (a serving run: no --steps).
    [spec] = sorted((tmp_path / "s").iterdir())
    rerun = next(line for line in spec.read_text().splitlines() if line.startswith("# rerun: "))
    assert "--steps" not in rerun
    assert (
        main([*shlex.split(rerun.removeprefix("# rerun: python run_sim.py ")), "--out", str(tmp_path / "o")])
        == 0
    )
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["tokens_per_s"] == pytest.approx(validated["predicted"], rel=1e-12)
    capsys.readouterr()


def _mixed_table() -> dict:
    """One serving row and one training row, with the training table's platforms and model catalog."""
    training, _ = load_table()
    return {
        "runs": [
            _row("trtllm-v1.0-Llama_3.1_8B-H100-tp1-2048-128"),
            next(r for r in training["runs"] if r["id"] == "korthikanti-22B-full_recompute"),
        ],
        "hardware_platforms": training["hardware_platforms"],
        "model_catalog": training["model_catalog"],
    }


def test_a_table_may_mix_training_and_serving_rows():
    report = validate(_mixed_table())
    assert [r.metric for r in report.runnable] == ["output tokens/s (engine)", "iteration s"]


# What each (model, GPU, precision) of the TensorRT-LLM overview runs as: preset, profile, weight and KV
# precision (a mapping slip that shifts one group would move its errors, not fail a mapping test).
EXPECTED_GROUPS = {
    ("Llama 3.1 8B", "H100", "FP8"): ("llama3-8b", "h100-dgx.yaml", "fp8", "fp8"),
    ("Llama 3.1 8B", "H200", "FP8"): ("llama3-8b", "h200-hgx.yaml", "fp8", "fp8"),
    ("Llama 3.3 70B", "H100", "FP8"): ("llama3-70b", "h100-dgx.yaml", "fp8", "fp8"),
    ("Llama 3.3 70B", "H200", "FP8"): ("llama3-70b", "h200-hgx.yaml", "fp8", "fp8"),
    ("Llama 3.3 70B", "B200", "FP4"): ("llama3-70b", "b200-dgx.yaml", "fp4", "fp8"),
    ("Llama 3.3 70B", "GB200", "FP4"): ("llama3-70b", "gb200-nvl72.yaml", "fp4", "fp8"),
    ("Llama 3.1 405B", "H100", "FP8"): ("llama3-405b", "h100-dgx.yaml", "fp8", "fp8"),
    ("Llama 3.1 405B", "H200", "FP8"): ("llama3-405b", "h200-hgx.yaml", "fp8", "fp8"),
    ("Llama 3.1 405B", "B200", "FP4"): ("llama3-405b", "b200-dgx.yaml", "fp4", "fp8"),
    ("Llama 3.1 405B", "GB200", "FP4"): ("llama3-405b", "gb200-nvl72.yaml", "fp4", "fp8"),
    ("Qwen3-235B-A22B", "H100", "FP8"): ("qwen3-235b-a22b", "h100-dgx.yaml", "fp8", "fp8"),
    ("Qwen3-235B-A22B", "H200", "FP8"): ("qwen3-235b-a22b", "h200-hgx.yaml", "fp8", "fp8"),
    ("Qwen3-235B-A22B", "B200", "FP4"): ("qwen3-235b-a22b", "b200-dgx.yaml", "fp4", "fp8"),
}


def test_every_tensorrt_llm_row_runs_its_groups_preset_profile_and_precisions():
    seen = set()
    for row in TABLE["runs"]:
        if not str(row.get("group", "")).startswith("TensorRT"):
            continue
        hw = row["hardware"]
        key = (row["model"], hw["accelerator"], row["precision"])
        plan = map_serving_row(row, TABLE)
        spec = plan.spec
        got = (spec["model"], plan.profile, spec["precision"], spec["kv_cache"]["precision"])
        assert got == EXPECTED_GROUPS[key], row["id"]
        # the overview's MoE command passes --ep: a multi-GPU MoE row keeps its experts whole
        ep = {"ep": hw["tp"]} if spec["model"].startswith("qwen3") and hw["tp"] > 1 else {}
        assert spec["parallelism"] == {"tp": hw["tp"], "replicas": 1, **ep}, row["id"]
        assert (spec["requests"]["input_tokens"], spec["requests"]["output_tokens"]) == (
            row["workload"]["input_len"],
            row["workload"]["output_len"],
        )
        assert plan.measured == row["results"]["total_output_tokens_per_s"]  # per engine, not per GPU
        seen.add(key)
    assert seen == set(EXPECTED_GROUPS)


def test_a_tensor_parallel_engine_row_within_tolerance():
    """The table prints tokens/s per tp-sized engine: racksim's whole-replica throughput is compared
    (a per-GPU mix-up would be off by the tp factor, 2x here). Within 15 % (December 2026: +10.7 % with the
    KV cache TensorRT-LLM's way, +7.5 % before; docs/inference.md)."""
    res = run_plan(map_serving_row(_row("trtllm-v1.0-Llama_3.3_70B-H100-tp2-2048-2048"), TABLE))
    assert res.runnable and abs(res.error_pct) < 15, res


def _edited(row: dict, changes: dict) -> dict:
    """A deep copy of a table row with ``section__key`` (or whole ``section``) values replaced."""
    row = json.loads(json.dumps(row))
    for path, value in changes.items():
        section, _, key = path.partition("__")
        if key:
            row[section][key] = value
        else:
            row[section] = value
    return row


def _variant(**changes: object) -> dict:
    return _edited(_row("trtllm-v1.0-Llama_3.1_8B-H100-tp1-2048-128"), changes)


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"hardware": "H100"}, "`hardware` is 'H100', expected a mapping"),
        ({"workload": ["128"]}, "`workload` is ['128'], expected a mapping"),
        ({"results": 5.0}, "`results` is 5.0, expected a mapping"),
        ({"hardware__tp": "eight"}, "`hardware.tp` is 'eight', expected a positive whole number"),
        ({"hardware__tp": 0}, "`hardware.tp` is 0, expected a positive whole number"),
        ({"hardware__tp": 2.5}, "`hardware.tp` is 2.5, expected a positive whole number"),
        ({"hardware__tp": True}, "`hardware.tp` is True, expected a positive whole number"),
        ({"results__total_output_tokens_per_s": True}, "no total output tokens/s in the row"),
        ({"workload__input_len": 0}, "`workload.input_len` is 0, expected a positive whole number"),
        ({"workload__output_len": -5}, "`workload.output_len` is -5, expected a positive whole number"),
        (
            {"results__total_output_tokens_per_s": 0},
            "`results.total_output_tokens_per_s` is 0, expected a positive",
        ),
        ({"hardware__pp": 2}, "pp > 1: racksim serves tensor-parallel replicas, without pipeline stages"),
        ({"hardware__ep": 8}, "ep > 1: the row does not say how attention is split"),
        ({"hardware__accelerator": "TPU v5e"}, "accelerator 'TPU v5e' matches no shipped profile"),
        ({"model": "Falcon 180B"}, "model 'Falcon 180B' matches no racksim preset"),
    ],
)
def test_malformed_rows_are_not_runnable_with_the_field_named(changes, reason):
    with pytest.raises(NotRunnable) as exc:
        plan_row(_variant(**changes), TABLE)
    assert str(exc.value).startswith(reason)


@pytest.mark.parametrize(
    "model,accelerator,preset,profile",
    [
        ("Llama 3.1 70B", "NVIDIA H100 SXM5 80GB", "llama3-70b", "h100-dgx.yaml"),
        ("Mixtral 8x7B", "MI300X", "mixtral-8x7b", "mi300x.yaml"),
        ("GPT-OSS 120B", "GB200 NVL72", "gpt-oss-120b", "gb200-nvl72.yaml"),
        ("DeepSeek-R1-0528", "B200", "deepseek-v3", "b200-dgx.yaml"),
    ],
)
def test_published_model_and_gpu_spellings_map_to_presets_and_profiles(model, accelerator, preset, profile):
    plan = plan_row(_variant(model=model, hardware__accelerator=accelerator), TABLE)
    assert (plan.spec["model"], plan.profile) == (preset, profile)


def test_a_reference_note_without_hardware_says_so():
    note = _row("vidur-fidelity")
    with pytest.raises(NotRunnable, match="a reference note, not a measured run"):
        plan_row(note, TABLE)
    report = validate({"runs": [note, "not a row"]})
    assert [r.runnable for r in report.rows] == [False, False]
    assert "expected a mapping" in report.rows[1].reason


def test_training_rows_with_non_positive_measurements_or_counts_are_not_runnable():
    training, _ = load_table()
    row = json.loads(
        json.dumps(next(r for r in training["runs"] if r["id"] == "korthikanti-22B-full_recompute"))
    )
    plan_row(row, training)  # as shipped: runnable
    zero = json.loads(json.dumps(row))
    zero["results"]["iteration_time_s"] = 0
    with pytest.raises(NotRunnable, match=r"`results.iteration_time_s` is 0, expected a positive"):
        plan_row(zero, training)
    bad_tp = json.loads(json.dumps(row))
    bad_tp["parallelism"]["tp"] = -8
    with pytest.raises(NotRunnable, match=r"`parallelism.tp` is -8, expected a positive whole number"):
        plan_row(bad_tp, training)
    not_a_section = json.loads(json.dumps(row))
    not_a_section["batch"] = 1536
    with pytest.raises(NotRunnable, match=r"`batch` is 1536, expected a mapping"):
        plan_row(not_a_section, training)


def test_serving_with_a_table_keeps_only_its_inference_rows_and_specs_carry_the_sets(tmp_path, capsys):
    mixed = _mixed_table()
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(mixed))
    parser = argparse.ArgumentParser()
    validate_cli.add_parser(parser.add_subparsers(dest="command"))
    out, specs = str(tmp_path / "v.json"), str(tmp_path / "s")
    overhead = "accelerator.kernel_overhead=5 us"
    argv = ["validate", "--serving", "--table", str(path), "--json", out, "--quiet", "--specs", specs]
    args = parser.parse_args([*argv, "--set", overhead])
    assert validate_cli.run(args) == 0
    result = json.loads((tmp_path / "v.json").read_text())
    assert [r["id"] for r in result] == ["trtllm-v1.0-Llama_3.1_8B-H100-tp1-2048-128"]
    [spec] = sorted((tmp_path / "s").iterdir())
    rerun = next(line for line in spec.read_text().splitlines() if line.startswith("# rerun: "))
    assert rerun.endswith("--set 'accelerator.kernel_overhead=5 us'")
    # A training-only table has nothing to validate with --serving: one clear error.
    only_training = tmp_path / "training.yaml"
    only_training.write_text(yaml.safe_dump({**mixed, "runs": mixed["runs"][1:]}))
    args = parser.parse_args(["validate", "--serving", "--table", str(only_training), "--quiet"])
    with pytest.raises(RacksimError, match="has no inference rows"):
        validate_cli.run(args)
    capsys.readouterr()


def _training_variant(rid: str, **changes: object) -> dict:
    training, _ = load_table()
    return _edited(next(r for r in training["runs"] if r["id"] == rid), changes)


@pytest.mark.parametrize(
    "rid,changes,reason",
    [
        ("megatron-sc21-t1-1.7B", {"parallelism__tp": True}, "`parallelism.tp` is True, expected a positive"),
        ("megatron-sc21-t1-1.7B", {"results__tflops_per_gpu": True}, "no printed metric"),
        ("megatron-sc21-t1-1.7B", {"results__tflops_per_gpu": math.inf}, "`results.tflops_per_gpu` is inf"),
        ("megatron-sc21-t1-1.7B", {"model__layers": "24"}, "`model.layers` is '24', expected a positive"),
        (
            "megatron-sc21-t1-1.7B",
            {"model__seq_len": 2048.7},
            "`model.seq_len` is 2048.7, expected a positive",
        ),
        ("megatron-sc21-t1-1.7B", {"model__ref": ["a"]}, "`model.ref` is ['a'], expected a catalog name"),
        (
            "megatron-sc21-t1-1.7B",
            {"hardware__ref": {"x": 1}},
            "`hardware.ref` is {'x': 1}, expected a platform",
        ),
        (
            "megatron-sc21-t1-1.7B",
            {"batch__global_batch_seqs": 8},
            "global batch 8 does not divide over dp = 32",
        ),
        ("megatron-sc21-t1-1.7B", {"parallelism__fsdp": -1}, "`parallelism.fsdp` is -1, expected a positive"),
        (
            "mlperf-train-v3.1-gpt3-NVIDIA-eos_n64_ngc23.09_nemo",
            {"batch__train_samples_to_target": 0},
            "`batch.train_samples_to_target` is 0, expected a positive, finite number",
        ),
    ],
)
def test_malformed_training_rows_are_not_runnable_with_the_field_named(rid, changes, reason):
    training, _ = load_table()
    with pytest.raises(NotRunnable) as exc:
        plan_row(_training_variant(rid, **changes), training)
    assert str(exc.value).startswith(reason)


def test_a_malformed_model_catalog_is_not_a_traceback():
    training, _ = load_table()
    row = _training_variant("megatron-sc21-t1-1.7B")
    with pytest.raises(NotRunnable, match="`model_catalog` is list, expected a mapping"):
        plan_row(row, {**training, "model_catalog": ["llama"]})
    row["model"] = {"ref": "mine"}
    with pytest.raises(NotRunnable, match=r"`model_catalog\.mine` does not give layers, hidden and heads"):
        plan_row(row, {**training, "model_catalog": {"mine": {"layers": 24, "heads": 16}}})


def test_the_out_of_sample_qwen3_30b_table_maps_every_row():
    """workloads/reference/trtllm_overview_qwen3_30b.yaml (docs/inference.md): 20 rows, one GPU, NVFP4."""
    path = Path(__file__).resolve().parents[1] / "workloads" / "reference" / "trtllm_overview_qwen3_30b.yaml"
    table, _ = load_table(path)
    plans = [map_serving_row(row, table) for row in table["runs"]]
    assert len(plans) == 20
    assert {(p.spec["model"], p.spec["precision"], p.spec["parallelism"]["tp"]) for p in plans} == {
        ("qwen3-30b-a3b", "fp4", 1)
    }
    assert {p.profile for p in plans} == {"b200-dgx.yaml", "gb200-nvl72.yaml"}
