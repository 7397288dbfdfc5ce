"""How `validate --serving --table` reads serving rows written by other authors: checkpoint names, precision
spellings, GPU strings, MLPerf rows named another way, other engines and attention data parallelism. The
packaged rows map exactly as before (tests/test_serving_validation.py)."""

from __future__ import annotations

from typing import Any

import pytest

from workloads.serving_validation import (
    map_serving_row,
    serving_model,
    serving_precision,
    serving_system,
)
from workloads.validation import NotRunnable, model_base_name


@pytest.mark.parametrize(
    "name,preset",
    [
        ("meta-llama/Llama-3.3-70B-Instruct", "llama3-70b"),
        ("Llama-3.1-405B-Instruct", "llama3-405b"),
        ("openai/gpt-oss-120b", "gpt-oss-120b"),
        ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"),
        ("Qwen3-235B-A22B-Instruct-2507", "qwen3-235b-a22b"),
        ("deepseek-ai/DeepSeek-R1-0528", "deepseek-v3"),
        ("DeepSeek-V3-0324", "deepseek-v3"),
        ("Llama-2-70b-chat-hf", "llama2-70b"),
        ("Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
    ],
)
def test_checkpoint_names_find_their_preset(name, preset):
    assert serving_model(name) == preset


def test_a_generation_is_not_a_release_tag():
    assert (
        model_base_name("DeepSeek-V3") == "DeepSeek-V3" and model_base_name("Mistral-7B-v0.3") == "Mistral-7B"
    )
    assert serving_model("DeepSeek-V2.5") is None  # no preset: not mistaken for another model


@pytest.mark.parametrize(
    "text,precision",
    [
        ("FP8 (e4m3)", "fp8"),
        ("float8_e4m3fn", "fp8"),
        ("bfloat16", "bf16"),
        ("float16", "fp16"),
        ("NVFP4", "fp4"),
    ],
)
def test_precision_spellings(text, precision):
    assert serving_precision(text) == precision


def test_unstated_precision_is_not_guessed():
    assert serving_precision(None) is None and serving_precision("auto") is None


def test_gpu_strings():
    assert serving_system("8xMI300X") == "mi300x.yaml"
    assert serving_system("NVIDIA H200 SXM 141GB") == "h200-hgx.yaml"


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "r",
        "group": "some benchmark",
        "model": "meta-llama/Llama-3.3-70B-Instruct",
        "scenario": "offline max throughput",
        "workload": {"input_len": 128, "output_len": 128},
        "hardware": {"accelerator": "H200", "tp": 2},
        "precision": "FP8 (e4m3)",
        "results": {"total_output_tokens_per_s": 10000},
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    "accelerator,says",
    [("NVIDIA H100 NVL 94GB", "a PCIe card"), ("A100 SXM4 40GB", "A100 40GB has no serving profile")],
)
def test_cards_without_a_profile_are_not_run_on_the_sxm_modules(accelerator, says):
    with pytest.raises(NotRunnable, match=says):
        map_serving_row(_row(hardware={"accelerator": accelerator, "tp": 2}))


def test_another_engine_is_run_with_trtllm_bench_limits_and_says_so():
    plan = map_serving_row(
        _row(engine="vLLM 0.9.0.1 (ROCm 6.4.1)", hardware={"accelerator": "8xMI300X", "tp": 8})
    )
    assert plan.profile == "mi300x.yaml" and plan.spec["model"] == "llama3-70b"
    assert any(
        "engine 'vLLM 0.9.0.1 (ROCm 6.4.1)' runs with trtllm-bench's batch limits" in a
        for a in plan.assumptions
    )


def test_attention_dp_rows_run_attention_data_parallel():
    row = _row(
        model="deepseek-ai/DeepSeek-R1-0528",
        hardware={"accelerator": "H200", "tp": 8, "ep": 8, "attention_dp": True},
        workload={"input_len": 1000, "output_len": 1000},
    )
    plan = map_serving_row(row)
    assert plan.spec["parallelism"] == {"tp": 8, "replicas": 1, "attention_dp": True}
    assert any("not calibrated" in a for a in plan.assumptions)
    with pytest.raises(NotRunnable, match="does not say how attention is split"):
        map_serving_row(
            _row(model="deepseek-ai/DeepSeek-R1-0528", hardware={"accelerator": "H200", "tp": 8, "ep": 8})
        )


def test_an_mlperf_row_named_another_way_finds_its_engine_by_system():
    row = {
        "id": "lambda-h200-offline",
        "group": "MLCommons MLPerf Inference v5.0 (datacenter, closed)",
        "model": "meta-llama/Llama-2-70b-chat-hf",
        "scenario": "Offline",
        "division": "closed",
        "submitter": "Lambda",
        "hardware": {
            "accelerator": "NVIDIA H200-SXM-141GB",
            "system": "H200-SXM-141GBx8_TRT",
            "total_accelerators": 8,
        },
        "results": {"tokens_per_s_system": 35385.1},
    }
    plan = map_serving_row(row)
    assert plan.profile == "h200-hgx.yaml" and plan.spec["model"] == "llama2-70b"


def test_gpt_oss_on_hopper_keeps_a_16_bit_kv_cache_as_the_overview_runs_it():
    """TensorRT-LLM's overview prints GPT-OSS's options with "kv_cache dtype: fp8  # Hopper: use auto"."""
    hopper = map_serving_row(_row(model="openai/gpt-oss-120b", hardware={"accelerator": "H200", "tp": 1}))
    assert hopper.spec["kv_cache"]["precision"] == "bf16"
    blackwell = map_serving_row(_row(model="openai/gpt-oss-120b", hardware={"accelerator": "GB200", "tp": 1}))
    assert blackwell.spec["kv_cache"]["precision"] == "fp8"


@pytest.mark.parametrize(
    "text", ["FP8 KV cache, BF16 weights", "W4A8 (INT4 weights, FP8 activations)", "INT8"]
)
def test_precisions_that_do_not_say_the_gemms_are_not_guessed(text):
    assert serving_precision(text) is None


def test_an_nvl72_rack_is_not_a_pcie_card():
    plan = map_serving_row(_row(hardware={"accelerator": "GB200 NVL 72", "tp": 2}))
    assert plan.profile == "gb200-nvl72.yaml"


def test_attention_dp_spans_every_gpu_the_row_names():
    row = _row(
        model="deepseek-ai/DeepSeek-R1-0528",
        hardware={"accelerator": "H200", "tp": 1, "ep": 8, "attention_dp": True, "total_accelerators": 8},
        workload={"input_len": 1000, "output_len": 1000},
    )
    assert map_serving_row(row).spec["parallelism"]["tp"] == 8
