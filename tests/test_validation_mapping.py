"""How `validate --table` reads rows written by other authors: platforms racksim has no name for (read by their
GPU text), stacks named anywhere in a group, model names and catalog entries, precision and metric wording.
The packaged tables map exactly as before (tests/test_validation.py); these are the rows they do not have."""

from __future__ import annotations

from typing import Any

import pytest

from workloads.validation import (
    DEFAULT_SOFTWARE,
    NVL72_AS_64,
    NotRunnable,
    map_row,
    measured_value,
    platform_for,
    precision_of,
    resolve_model,
    software_for,
)

PLATFORMS = {
    "trainy_h200": {"gpu": "NVIDIA H200 SXM 141GB", "gpus_per_node": 8},
    "some_gb300_rack": {"gpu": "GB300 NVL72 (Blackwell Ultra)", "gpus_per_node": 4},
    "grand_teton": {"gpu": "NVIDIA H100 96GB HBM2e (2.4 TB/s), 500 W power limit", "gpus_per_node": 8},
    "a100_40": {"gpu": "A100 SXM4 40GB", "gpus_per_node": 8},
    "pcie_box": {"gpu": "NVIDIA H100 PCIe 80GB", "gpus_per_node": 8},
    "gaudi_box": {"gpu": "Intel Gaudi2", "gpus_per_node": 8},
}
TABLE: dict[str, Any] = {
    "hardware_platforms": PLATFORMS,
    "model_catalog": {
        "dsv3_full": {"layers": 61, "hidden": 7168, "heads": 128, "moe": {"routed_experts": 256}},
        "some_moe": {"layers": 24, "hidden": 2048, "heads": 16, "moe": {"routed_experts": 64}},
        "nemotron4_15b": {
            "layers": 32,
            "hidden": 6144,
            "ffn": 24576,
            "heads": 48,
            "kv_heads": 8,
            "activation": "squared-relu",
            "vocab": 256000,
        },
        "plain_gpt": {"layers": 24, "hidden": 2048, "heads": 16, "vocab": 50257},
    },
    "runs": [],
}


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "r",
        "group": "NVIDIA NeMo 25.04 performance summary",
        "model": {"name": "Llama-3.1-8B"},
        "batch": {"global_batch_seqs": 128, "micro_batch": 1},
        "hardware": {"ref": "trainy_h200", "gpus": 8},
        "parallelism": {"tp": 1, "pp": 1, "cp": 1},
        "precision": "BF16",
        "model_seq_len": 8192,
        "results": {"tokens_per_s_per_gpu": 10000},
    }
    row.update(overrides)
    return row


# ------------------------------------------------------------------------------------------ platforms
def test_an_unknown_platform_is_read_by_its_gpu():
    h200 = platform_for("trainy_h200", TABLE)
    assert h200.profile == "h200-hgx.yaml" and h200.sets == ()
    assert "read by its GPU (NVIDIA H200 SXM 141GB)" in h200.note
    gb300 = platform_for("some_gb300_rack", TABLE)
    assert gb300.profile == "gb300-nvl72.yaml" and gb300.sets == NVL72_AS_64
    assert platform_for("a100_40", TABLE).sets[-2:] == (
        "accelerator.hbm_capacity=40 GB",
        "accelerator.hbm_bandwidth=1555 GB/s",
    )


def test_stated_memory_and_a_power_limit_below_the_tdp_become_overrides():
    """Meta's Grand Teton H100: 96 GB of HBM2e at 2.4 TB/s, capped at 500 W (a capped GPU clocks down)."""
    p = platform_for("grand_teton", TABLE)
    assert p.profile == "h100-dgx.yaml"
    assert p.sets == (
        "accelerator.hbm_capacity=96 GB",
        "accelerator.hbm_bandwidth=2.4 TB/s",
        "accelerator.power_cap=500 W",
    )


@pytest.mark.parametrize(
    "ref,says",
    [
        ("pcie_box", "no racksim profile for its GPU (NVIDIA H100 PCIe 80GB)"),
        ("gaudi_box", "Intel Gaudi accelerators have no racksim profile"),
        ("not_in_table", "neither known to racksim nor in the table"),
    ],
)
def test_platforms_racksim_cannot_express_say_why(ref, says):
    with pytest.raises(NotRunnable, match=says.replace("(", r"\(").replace(")", r"\)")):
        platform_for(ref, TABLE)


def test_a_row_on_an_unnamed_h200_platform_runs_there_and_says_so():
    plan = map_row(_row(), TABLE)
    assert plan.profile == "h200-hgx.yaml"
    assert any("read by its GPU" in a for a in plan.assumptions)


# ------------------------------------------------------------------------------------------ software
@pytest.mark.parametrize(
    "group,stack",
    [
        ("NVIDIA NeMo 25.04 performance summary (DGX-GB200)", "NeMo"),
        ("NeMo AutoModel performance summary", "NeMo AutoModel"),
        ("torchtitan Llama 3.1 H100 benchmarks", "torchtitan"),
        ("Megatron-Bridge performance summary 26.06", "Megatron-Bridge"),
        ("MLPerf Training v4.0 gpt3", "MLPerf"),
    ],
)
def test_a_stack_is_found_by_its_name_anywhere_in_the_group(group, stack):
    sw = software_for(group)
    assert (sw.match if isinstance(sw.match, str) else sw.match[0]) == stack


def test_automodel_trains_in_pure_bf16_and_torchtitan_with_fp32_parameters():
    """NeMo AutoModel casts its MoE models to bf16 and reduces in bf16; torchtitan keeps fp32 parameters."""
    auto, titan = software_for("NeMo AutoModel performance summary"), software_for("torchtitan benchmarks")
    assert (auto.pure_bf16, auto.fp32_params, auto.grad_reduce) == (True, False, "bf16")
    assert (titan.pure_bf16, titan.fp32_params, titan.grad_reduce) == (False, True, "fp32")


def test_a_benchmark_name_alone_is_not_a_stack():
    """MLPerf's defaults are NVIDIA's NeMo code; AMD's MLPerf rows keep racksim's defaults."""
    assert software_for("AMD MLPerf Training v5.1 (8x MI355X)") is DEFAULT_SOFTWARE
    assert software_for("some lab's blog") is DEFAULT_SOFTWARE


def test_the_stack_a_row_runs_with_is_an_assumption_unless_the_group_starts_with_it():
    plan = map_row(_row(), TABLE)
    assert any(a.startswith("software: NeMo, named in the group") for a in plan.assumptions)
    plain = map_row(_row(group="a blog post"), TABLE)
    assert any(a.startswith("software: the group names no stack") for a in plain.assumptions)


# ------------------------------------------------------------------------------------------ models
@pytest.mark.parametrize(
    "name,preset",
    [
        ("Llama-3.1-8B", "llama3-8b"),
        ("Llama 3.1 70B", "llama3-70b"),
        ("Qwen3 MoE 30B", "qwen3-30b-a3b"),
        ("DeepSeek V3 671B", "deepseek-v3"),
        ("GPT-OSS 120B", "gpt-oss-120b"),
    ],
)
def test_published_model_names_find_their_preset(name, preset):
    spec, _ = resolve_model(_row(model={"name": name}), TABLE)
    assert spec.name == preset


def test_a_catalog_entry_of_a_preset_shape_is_that_preset():
    spec, how = resolve_model(_row(model={"ref": "dsv3_full"}), TABLE)
    assert spec.name == "deepseek-v3" and spec.moe is not None and "same layers, hidden and heads" in how


def test_an_unknown_moe_catalog_entry_is_not_run_as_a_dense_model():
    with pytest.raises(NotRunnable, match="mixture-of-experts model racksim has no preset"):
        resolve_model(_row(model={"ref": "some_moe"}), TABLE)


def test_a_dense_catalog_entry_keeps_its_gqa_and_activation():
    spec, how = resolve_model(_row(model={"ref": "nemotron4_15b"}), TABLE)
    assert (spec.kv_heads, spec.ffn, spec.ffn_hidden, spec.vocab) == (8, "squared_relu", 24576, 256000)
    assert spec.position_embedding == "rope" and "8 KV heads" in how
    gpt, how = resolve_model(_row(model={"ref": "plain_gpt"}), TABLE)
    assert (gpt.kv_heads, gpt.ffn, gpt.position_embedding) == (16, "gelu", "learned")


def test_an_moe_row_without_ep_says_every_gpu_holds_every_expert():
    row = _row(model={"name": "Qwen3-30B-A3B"}, parallelism={"tp": 1, "pp": 1, "ep": "-"})
    plan = map_row(row, TABLE)
    assert any(
        a.startswith("ep not given ('-'): 1, every GPU holds all 128 experts") for a in plan.assumptions
    )


# ------------------------------------------------------------------------------------------ wording
@pytest.mark.parametrize(
    "text,precision,note",
    [
        ("float8 (tensorwise scaling, torchao)", "fp8", ""),
        ("FP8 E4M3 delayed scaling", "fp8", ""),
        ("bfloat16", "bf16", ""),
        ("BF16-mixed", "bf16", ""),
        ("NVFP4", "fp4", ""),
        (None, "bf16", "precision not stated: bf16 assumed"),
    ],
)
def test_precision_wording(text, precision, note):
    assert precision_of(text) == (precision, note)


def test_printed_numbers_kept_as_text_and_model_tflops_are_read():
    assert measured_value({"v": "1,002"}, "v") == 1002.0
    assert measured_value({"v": "n/a"}, "v") is None
    plan = map_row(_row(results={"model_tflops_per_gpu": 400}), TABLE)
    assert plan.metric.startswith("TFLOP/s/GPU") and plan.measured == 400


@pytest.mark.parametrize(
    "gpu,profile,sets",
    [
        ("H100 SXM, NVLink 900 GB/s", "h100-dgx.yaml", ()),  # a link rate is not the HBM size
        ("DGX H100 640GB", "h100-dgx.yaml", ()),  # nor a node's total
        ("B200 180GB, NVLink5 1.8 TB/s", "b200-dgx.yaml", ()),  # nor an NVLink rate the HBM bandwidth
        ("H100 SXM 1,000 W", "h100-dgx.yaml", ()),  # above the TDP: nothing to cap
        ("GB200 NVL 72", "gb200-nvl72.yaml", NVL72_AS_64),  # a rack, not an NVL card
    ],
)
def test_figures_that_are_not_the_gpus_own_are_not_read_as_such(gpu, profile, sets):
    p = platform_for("x", {"hardware_platforms": {"x": {"gpu": gpu}}})
    assert (p.profile, p.sets) == (profile, sets)


@pytest.mark.parametrize(
    "gpu", ["NVIDIA H100-PCIe-80GB", "H100 80GB PCIe", "H200 NVL", "AMD Instinct MI300A"]
)
def test_cards_and_apus_without_a_profile_are_not_run_on_another(gpu):
    with pytest.raises(NotRunnable, match="no racksim profile for its GPU"):
        platform_for("x", {"hardware_platforms": {"x": {"gpu": gpu}}})


def test_an_moe_entry_is_known_by_any_spelling_or_by_its_active_parameters():
    mixtral = dict(layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, num_local_experts=8)
    spec, _ = resolve_model(_row(model={"ref": "m"}), {"model_catalog": {"m": mixtral}})
    assert spec.name == "mixtral-8x7b"  # the MoE preset of that shape, not the dense llama3-8b
    sparse = dict(layers=30, hidden=4096, heads=32, kv_heads=8, ffn=14336, params_b=47, active_params_b=13)
    with pytest.raises(NotRunnable, match="mixture-of-experts"):
        resolve_model(_row(model={"ref": "m"}), {"model_catalog": {"m": sparse}})


def test_empty_parallelism_cells_are_not_a_parallelism():
    with pytest.raises(NotRunnable, match="parallelism not given"):
        map_row(_row(parallelism={"tp": "-", "pp": "-", "dp": "-"}), TABLE)


@pytest.mark.parametrize("text", ["TF32", "FP32", "INT8 (SmoothQuant)", "W4A16"])
def test_precisions_racksim_does_not_run_are_said_so(text):
    with pytest.raises(NotRunnable, match="racksim runs bf16, fp16, fp8 and fp4 GEMMs"):
        precision_of(text)


def test_the_stack_named_first_in_the_group_wins():
    assert software_for("NVIDIA NeMo 25.04 (Megatron-Core backend)").match == "NeMo"
    assert software_for("NVIDIA Megatron-Bridge (NeMo 25.09)").match == "Megatron-Bridge"


def test_a_decimal_comma_is_not_a_thousands_separator():
    assert measured_value({"v": "1,5"}, "v") is None and measured_value({"v": "12,345.5"}, "v") == 12345.5


def test_torchtitan_recompute_fields():
    off = map_row(_row(training={"activation_checkpointing": False}), TABLE)
    assert off.spec["parallelism"]["recompute"] == "none"
    op = map_row(_row(training={"activation_checkpointing": "selective op"}), TABLE)
    assert op.spec["parallelism"]["recompute"] == "selective"
    assert any("per-op policy" in a for a in op.assumptions)
    wps = map_row(_row(results={"wps_per_gpu": 5762}), TABLE)
    assert (wps.metric, wps.measured) == ("tokens/s/GPU", 5762)
