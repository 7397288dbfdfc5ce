"""workloads.model: spec validation, parallelism checks, FLOP conventions, per-layer ops and collectives."""

from __future__ import annotations

import dataclasses

import pytest

from simcore.errors import ConfigError
from workloads.memory import layer_activation_bytes
from workloads.model import (
    Comm,
    Op,
    activation_bytes,
    check_parallelism,
    embedding_ops,
    embedding_program,
    hardware_flops_per_token,
    layer_comm,
    layer_ops,
    layer_params,
    layer_program,
    load_model,
    load_preset,
    megatron_flops_per_iteration,
    model_flops_per_token,
    model_to_mapping,
    non_embedding_params,
    optimizer_bytes,
    output_ops,
    output_program,
    pipeline_layers,
)

LLAMA3_8B = {
    "name": "llama3-8b",
    "layers": 32,
    "hidden": 4096,
    "ffn_hidden": 14336,
    "heads": 32,
    "kv_heads": 8,
    "vocab": 128256,
    "seq_len": 8192,
    "ffn": "swiglu",
    "moe": None,
}


def config_error(data: dict, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_model(data, file="job.yaml", **kw)
    return info.value


# --- loading and validation ---------------------------------------------------------------------------


def test_load_model_fills_defaults():
    spec = load_model(LLAMA3_8B, file="job.yaml")
    assert spec.head_dim == 128
    assert spec.moe is None and spec.mla is None
    assert not spec.tied_embeddings and not spec.bias and spec.position_embedding == "rope"


def test_unknown_key_names_path_and_suggests():
    err = config_error({**LLAMA3_8B, "kv_head": 8})
    assert err.path == "model.kv_head"
    assert "did you mean 'kv_heads'" in str(err)
    assert str(err).startswith("job.yaml: model.kv_head: unknown key")


def test_unknown_nested_key_names_full_path():
    moe = {"experts": 8, "topk": 2, "expert_ffn_hidden": 14336}
    err = config_error({**LLAMA3_8B, "moe": moe})
    assert err.path == "model.moe.topk"
    assert "'top_k'" in str(err)


def test_missing_key():
    data = dict(LLAMA3_8B)
    del data["vocab"]
    assert config_error(data).path == "model.vocab"


@pytest.mark.parametrize("value", [0, -4, 2.5, True, "32"])
def test_non_positive_or_non_integer_layers(value):
    err = config_error({**LLAMA3_8B, "layers": value})
    assert err.path == "model.layers"
    assert err.value == value


def test_kv_heads_must_divide_heads():
    err = config_error({**LLAMA3_8B, "kv_heads": 5})
    assert err.path == "model.kv_heads"
    assert "does not divide heads = 32" in str(err)


def test_unknown_ffn_kind():
    err = config_error({**LLAMA3_8B, "ffn": "swiglue"})
    assert err.path == "model.ffn"
    assert "'swiglu'" in str(err)


def test_moe_top_k_cannot_exceed_experts():
    err = config_error({**LLAMA3_8B, "moe": {"experts": 4, "top_k": 8, "expert_ffn_hidden": 1024}})
    assert err.path == "model.moe.top_k"


def test_moe_imbalance_at_least_one():
    moe = {"experts": 8, "top_k": 2, "expert_ffn_hidden": 1024, "imbalance": 0.5}
    assert config_error({**LLAMA3_8B, "moe": moe}).path == "model.moe.imbalance"


def test_mla_needs_kv_heads_equal_heads():
    mla = {"kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
    assert config_error({**LLAMA3_8B, "mla": mla}).path == "model.kv_heads"


def test_path_prefix_is_configurable():
    assert config_error({**LLAMA3_8B, "layers": 0}, path="").path == "layers"


def test_unknown_preset_lists_close_matches():
    with pytest.raises(ConfigError) as info:
        load_preset("llama3-7b")
    assert info.value.path == "preset"
    assert "llama3-8b" in str(info.value)


def test_preset_alias():
    assert load_preset("gpt-1t").name == "gpt-1008b"


# --- parallelism checks ---------------------------------------------------------------------------------


def parallel_error(spec, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check_parallelism(spec, file="job.yaml", **kw)
    return info.value


def test_tp_must_divide_heads():
    err = parallel_error(load_preset("llama3-8b"), tp=3)
    assert err.path == "parallelism.tp"
    assert "heads = 32" in str(err)


def test_tp_beyond_kv_heads_replicates_when_multiple():
    spec = load_preset("llama3-70b")  # 64 heads, 8 KV heads
    check_parallelism(spec, tp=16)  # Megatron replicates each KV head on two ranks
    assert parallel_error(dataclasses.replace(spec, kv_heads=16, heads=48), tp=32).path == "parallelism.tp"


def test_pp_must_divide_layers_and_says_which_numbers():
    err = parallel_error(load_preset("llama3-8b"), pp=5)
    assert err.path == "parallelism.pp"
    assert "5·1 = 5 does not divide layers = 32" in str(err)
    err = parallel_error(load_preset("llama3-8b"), pp=4, vp=3)
    assert "4·3 = 12" in str(err)


def test_llama3_405b_design_example_layout_is_accepted():
    # DESIGN.md workload example: 126 layers, pp 16 (Llama 3 §3.3.2: first and last stage one layer short).
    spec = load_preset("llama3-405b")
    check_parallelism(spec, tp=8, pp=16, cp=1, ep=1, vp=1)
    stages = pipeline_layers(spec, 16, 1)
    sizes = [len(chunks[0]) for chunks in stages]
    assert sizes == [7] + [8] * 14 + [7]
    assert [i for st in stages for ch in st for i in ch] == list(range(126))


def test_interleaved_chunks_follow_megatron_order():
    stages = pipeline_layers(load_preset("llama3-8b"), 4, 2)
    assert stages[0] == (range(0, 4), range(16, 20))
    assert stages[3] == (range(12, 16), range(28, 32))


def test_vp_needs_pp():
    assert parallel_error(load_preset("llama3-8b"), vp=2).path == "parallelism.vp"


def test_ep_must_divide_experts():
    err = parallel_error(load_preset("mixtral-8x7b"), ep=3)
    assert err.path == "parallelism.ep"
    assert "experts = 8" in str(err)


def test_ep_needs_experts():
    assert parallel_error(load_preset("llama3-8b"), ep=2).path == "parallelism.ep"


def test_moe_with_tp_needs_sequence_parallel():
    err = parallel_error(load_preset("mixtral-8x7b"), tp=2, sequence_parallel=False)
    assert err.path == "parallelism.sequence_parallel"


def test_cp_needs_two_chunks_per_rank():
    err = parallel_error(load_preset("llama3-8b"), cp=2, seq_len=8190)
    assert err.path == "parallelism.cp"


# --- FLOP conventions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "tokens_per_s_per_gpu", "model_tflops_per_gpu"),
    [
        # NeMo 24.07 performance summary, rows nemo2407-h100-* of shared/reference/training_runs.yaml:
        # NeMo counts 6N + 12·l·s·h (full attention matrix), the convention of model_flops_per_token.
        ("llama3-8b", 12273, 711),
        ("llama3-70b", 1524, 734),
        ("llama2-7b", 16934, 780),
        ("gpt3-175b", 825, 888),
    ],
)
def test_model_flops_reproduce_nemo_tflops(preset, tokens_per_s_per_gpu, model_tflops_per_gpu):
    flops = model_flops_per_token(load_preset(preset))
    assert flops * tokens_per_s_per_gpu / 1e12 == pytest.approx(model_tflops_per_gpu, rel=0.01)


def test_model_and_hardware_flops_reproduce_llm_foundry_mfu_hfu():
    # Row llmfoundry-a100_40gb-mpt7b-seq2048-32gpu: 3725 tok/s/GPU, MFU 51.55 %, HFU 68.73 % of 312 TFLOP/s,
    # activation checkpointing on (HFU counts the recomputed forward).
    spec = load_preset("mpt-7b")
    assert model_flops_per_token(spec) * 3725 / 312e12 == pytest.approx(0.5155, rel=0.01)
    assert hardware_flops_per_token(spec, recompute="full") * 3725 / 312e12 == pytest.approx(
        0.6873, rel=0.015
    )


def test_megatron_formula_matches_six_n_for_gpt():
    spec = load_preset("gpt3-175b")
    b, s = 1536, 2048
    per_token = megatron_flops_per_iteration(spec, b) / (b * s)
    assert per_token == pytest.approx(model_flops_per_token(spec), rel=0.002)  # biases and norms: 0.1 %
    full = megatron_flops_per_iteration(spec, b, full_recompute=True) / (b * s)
    assert full == pytest.approx(hardware_flops_per_token(spec, recompute="full"), rel=0.002)
    assert full / per_token == pytest.approx(4 / 3, rel=0.01)


@pytest.mark.parametrize(
    ("preset", "tokens", "gpus", "tflops", "days"),
    [
        # Narayanan et al. SC21 §5.1 (row megatron-sc21-gpt3-175b-1024gpu-estimate): GPT-3 175B on 300B
        # tokens, 1024 A100s at 140 TFLOP/s: 34 days; 1T on 450B tokens, 3072 GPUs at 163 TFLOP/s: 84 days.
        ("gpt3-175b", 300e9, 1024, 140e12, 34),
        ("gpt-1008b", 450e9, 3072, 163e12, 84),
    ],
)
def test_sc21_training_time_estimates(preset, tokens, gpus, tflops, days):
    spec = load_preset(preset)
    flops = megatron_flops_per_iteration(spec, 1, full_recompute=True) / spec.seq_len * tokens
    assert flops / (gpus * tflops) / 86400 == pytest.approx(days, rel=0.04)


def test_hardware_flops_order():
    spec = load_preset("llama3-70b")
    none, sel, full = (hardware_flops_per_token(spec, recompute=r) for r in ("none", "selective", "full"))
    assert none == model_flops_per_token(spec) < sel < full
    with pytest.raises(ConfigError) as info:
        hardware_flops_per_token(spec, recompute="partial")
    assert info.value.path == "parallelism.recompute"


# --- per-layer ops -------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["llama3-8b", "gpt-7.5b", "mixtral-8x7b", "deepseek-v3", "gpt-oss-120b"])
def test_backward_gemms_are_twice_forward(preset):
    spec = load_preset(preset)
    kw = {"micro_batch": 2, "tp": 2, "sp": True, "cp": 2, "ep": 2 if spec.moe else 1}
    layer = spec.layers - 1
    fwd = {op.name: op for op in layer_ops(spec, layer, phase="fwd", **kw) if op.kind == "gemm"}
    bwd = {op.name: op for op in layer_ops(spec, layer, phase="bwd", **kw) if op.kind == "gemm"}
    assert fwd.keys() == bwd.keys() and fwd
    for name, op in fwd.items():
        assert bwd[name].flops == pytest.approx(2 * op.flops), name
        assert bwd[name].count == 2 * op.count


@pytest.mark.parametrize(("preset", "tp", "sp"), [("llama3-8b", 4, True), ("gpt-7.5b", 2, False)])
def test_layer_flops_sum_to_two_n_per_token_plus_causal_attention(preset, tp, sp):
    spec = load_preset(preset)
    b = 2
    tokens = b * spec.seq_len
    gemm = attention = 0.0
    for layer in range(spec.layers):
        for op in layer_ops(spec, layer, micro_batch=b, tp=tp, sp=sp):
            gemm += op.flops * tp if op.kind == "gemm" else 0.0
            attention += op.flops * tp if op.kind == "attention" else 0.0
    assert gemm == pytest.approx(2 * non_embedding_params(spec) * tokens, rel=0.002)  # norms/biases only
    # Flash-style executed attention: the causal half of 4·b·s²·d_attn per layer.
    d_attn = spec.heads * spec.head_dim
    assert attention == pytest.approx(spec.layers * 2 * b * spec.seq_len**2 * d_attn)


@pytest.mark.parametrize(("tp", "sp"), [(1, False), (4, True)])
def test_hidden_dropout_moves_its_mask_and_output_over_every_element(tp, sp):
    """Dropout after attention and after the MLP touches each of the shard's tokens x hidden outputs: a
    1-byte mask written and the 2-byte output read again (it once counted one element per token)."""
    spec = load_preset("gpt-7.5b")
    b = 2
    ops = layer_ops(spec, 0, micro_batch=b, tp=tp, sp=sp, dropout=True)
    tokens_shard = b * spec.seq_len / (tp if sp else 1)
    for name in ("attn_dropout", "mlp_dropout"):
        [op] = [op for op in ops if op.name == name]
        assert op.nbytes == pytest.approx(tokens_shard * spec.hidden * (2 + 1))
    plain = sum(op.nbytes for op in layer_ops(spec, 0, micro_batch=b, tp=tp, sp=sp))
    with_dropout = sum(op.nbytes for op in ops)
    assert with_dropout - plain == pytest.approx(2 * tokens_shard * spec.hidden * 3)


def test_moe_layer_flops_use_active_experts():
    spec = load_preset("mixtral-8x7b")
    b, tp, ep = 1, 2, 4
    tokens = b * spec.seq_len
    ops = layer_ops(spec, 0, micro_batch=b, tp=tp, sp=True, ep=ep)
    expert = sum(op.flops for op in ops if op.name.startswith("expert_mlp") and op.kind == "gemm")
    # Each rank routes tokens/tp tokens to top_k experts: 2 x 3·h·f FLOPs per token copy.
    assert expert == pytest.approx(tokens / tp * 2 * 2 * 3 * spec.hidden * spec.moe.expert_ffn_hidden)
    up = next(op for op in ops if op.name == "expert_mlp_up")
    assert up.count == spec.moe.experts // ep
    assert up.gemm_mnk == (tokens // tp * 2 // 2, 2 * 14336, 4096)  # tokens·top_k spread over 2 local experts


def test_attention_core_is_sharded_by_tp_and_cp():
    spec = load_preset("llama3-8b")
    full = next(op for op in layer_ops(spec, 0, micro_batch=1) if op.name == "attn_core")
    split = next(op for op in layer_ops(spec, 0, micro_batch=1, tp=2, cp=4) if op.name == "attn_core")
    assert split.flops == pytest.approx(full.flops / 8)
    assert full.flops == pytest.approx(2 * spec.seq_len**2 * spec.hidden)  # causal half of 4·s²·d_attn


def test_output_and_embedding_ops():
    spec = load_preset("llama3-8b")
    proj = next(op for op in output_ops(spec, micro_batch=1, tp=2) if op.name == "output_proj")
    assert proj.flops == pytest.approx(2 * spec.seq_len * spec.hidden * spec.vocab / 2)
    assert proj.gemm_mnk == (8192, 64128, 4096)
    assert [op.name for op in embedding_ops(spec, micro_batch=1)] == ["embedding"]


# --- per-layer collectives -----------------------------------------------------------------------------


def test_tp_with_sequence_parallel_gathers_and_scatters():
    spec = load_preset("llama3-8b")
    act = 2 * spec.seq_len * spec.hidden * 2  # micro-batch 2, bf16: the whole (gathered) activation
    fwd = layer_comm(spec, 0, micro_batch=2, tp=4, sp=True)
    assert [(c.op, c.nbytes) for c in fwd] == [
        ("allgather", act),
        ("reducescatter", act),
        ("allgather", act),
        ("reducescatter", act),
    ]
    bwd = layer_comm(spec, 0, micro_batch=2, tp=4, sp=True, phase="bwd")
    assert [c.op for c in bwd] == ["allgather", "allgather", "reducescatter"] * 2


def test_tp_without_sequence_parallel_allreduces():
    spec = load_preset("llama3-8b")
    act = spec.seq_len * spec.hidden * 2
    for phase in ("fwd", "bwd"):
        comms = layer_comm(spec, 0, micro_batch=1, tp=8, phase=phase)
        assert [(c.group, c.op, c.nbytes) for c in comms] == [("tp", "allreduce", act)] * 2


def test_no_comm_without_parallelism():
    assert layer_comm(load_preset("llama3-8b"), 0, micro_batch=1) == []


def test_cp_gathers_kv_of_local_heads():
    spec = load_preset("llama3-8b")
    comms = layer_comm(spec, 0, micro_batch=1, tp=2, sp=True, cp=4)
    cp = [c for c in comms if c.group == "cp"]
    # K and V of the whole sequence for kv_heads/tp = 4 heads of dim 128, bf16.
    assert cp == [Comm("cp_kv_allgather", "cp", "allgather", spec.seq_len * 4 * 2 * 128 * 2)]
    bwd_ops = [c.op for c in layer_comm(spec, 0, micro_batch=1, cp=4, phase="bwd")]
    assert bwd_ops == ["allgather", "reducescatter"]


def test_ep_alltoall_scales_with_imbalance():
    spec = load_preset("mixtral-8x7b")
    skewed = dataclasses.replace(spec, moe=dataclasses.replace(spec.moe, imbalance=1.5))
    kw = {"micro_batch": 1, "tp": 2, "sp": True, "ep": 4}
    even = [c for c in layer_comm(spec, 0, **kw) if c.group == "ep"]
    assert [c.name for c in even] == ["moe_dispatch", "moe_combine"]
    # tokens/tp tokens x top_k copies x hidden x bf16, the whole send buffer of one rank.
    assert even[0].nbytes == spec.seq_len / 2 * 2 * spec.hidden * 2
    uneven = [c for c in layer_comm(skewed, 0, **kw) if c.group == "ep"]
    assert uneven[0].nbytes == pytest.approx(1.5 * even[0].nbytes)


def test_qk_norm_adds_two_head_norms_their_params_and_saved_inputs():
    plain = load_model(LLAMA3_8B, file="job.yaml")  # 32 heads, 8 KV heads of 128
    normed = load_model({**LLAMA3_8B, "qk_norm": True}, file="job.yaml")
    assert layer_params(normed, 0).total - layer_params(plain, 0).total == 2 * 128
    kw = {"micro_batch": 2, "tp": 4, "sp": True}
    [op] = [op for op in layer_ops(normed, 0, **kw) if op.name == "qk_norm"]
    local = 2 * plain.seq_len * (32 + 8) / 4 * 128  # q and k elements of this TP rank's heads
    assert (op.kind, op.nbytes) == ("norm", pytest.approx(local * 2 * 2))  # read + write, bf16
    assert not [op for op in layer_ops(plain, 0, **kw) if op.name == "qk_norm"]
    [bwd] = [op for op in layer_ops(normed, 0, phase="bwd", **kw) if op.name == "qk_norm"]
    assert bwd.nbytes == pytest.approx(2 * op.nbytes)
    extra = layer_activation_bytes(normed, 0, **kw) - layer_activation_bytes(plain, 0, **kw)
    assert extra == pytest.approx(local * 2)  # the norms' 16-bit inputs
    assert load_preset("qwen3-30b-a3b").qk_norm and load_preset("qwen3-235b-a22b").qk_norm
    mla = load_preset("deepseek-v3")
    err = config_error({**model_to_mapping(mla), "qk_norm": True})
    assert err.path == "model.qk_norm" and "latent" in str(err)


def test_several_local_experts_regroup_received_tokens():
    """Megatron's all-to-all dispatcher regroups the received tokens by local expert after the dispatch and
    back to rank order before the combine: one read + write of the routed tokens each, inverse in backward."""
    spec = load_preset("mixtral-8x7b")  # 8 experts, top 2
    kw = {"micro_batch": 1, "tp": 2, "sp": True}
    routed_bytes = spec.seq_len / 2 * 2 * spec.hidden * 2  # tokens/tp x top_k x hidden x bf16
    for phase in ("fwd", "bwd"):
        program = layer_program(spec, 0, ep=4, phase=phase, **kw)  # 2 local experts
        names = [item.name for item in program]
        first, second = ("moe_dispatch", "moe_combine") if phase == "fwd" else ("moe_combine", "moe_dispatch")
        sort, unsort = ("moe_sort_chunks", "moe_unsort_chunks")
        if phase == "bwd":
            sort, unsort = unsort, sort
        assert names.index(first) < names.index(sort) < names.index("expert_mlp_up") < names.index(unsort)
        assert names.index(unsort) < names.index(second)
        for item in program:
            if item.name in ("moe_sort_chunks", "moe_unsort_chunks"):
                assert item.nbytes == pytest.approx(2 * routed_bytes) and item.flops == 0
    for ep in (1, 8):  # no all-to-all, or one expert per rank: nothing to regroup
        names = {op.name for op in layer_ops(spec, 0, ep=ep, **kw)}
        assert not names & {"moe_sort_chunks", "moe_unsort_chunks"}


def test_program_interleaves_ops_and_comms_in_order():
    spec = load_preset("llama3-8b")
    program = layer_program(spec, 0, micro_batch=1, tp=2, sp=True, cp=2)
    names = [item.name for item in program]
    assert names.index("attn_allgather") < names.index("qkv_proj") < names.index("cp_kv_allgather")
    assert names.index("cp_kv_allgather") < names.index("attn_core") < names.index("attn_reducescatter")
    assert all(isinstance(item, Op | Comm) for item in program)


def test_dense_layers_of_deepseek_have_no_alltoall():
    spec = load_preset("deepseek-v3")
    assert layer_params(spec, 2).routed_experts == 0 and layer_params(spec, 3).routed_experts > 0
    assert not [c for c in layer_comm(spec, 2, micro_batch=1, ep=8) if c.group == "ep"]
    assert [c for c in layer_comm(spec, 3, micro_batch=1, ep=8) if c.group == "ep"]


def test_optimizer_bytes_per_param():
    # bf16 grads (2) + m, v read+write (16) + fp32 master read+write (8) + bf16 weights write (2).
    assert optimizer_bytes(1000) == 28_000
    assert optimizer_bytes(1000, grad_dtype_bytes=4) == 30_000


def test_first_and_last_stage_collectives():
    spec = load_preset("llama3-8b")
    act = spec.seq_len * spec.hidden * 2
    kw = {"micro_batch": 1, "tp": 2}

    def comms(program):
        return [(c.op, c.nbytes) for c in program if isinstance(c, Comm)]

    assert comms(embedding_program(spec, sp=True, **kw)) == [("reducescatter", act)]
    assert comms(embedding_program(spec, sp=True, phase="bwd", **kw)) == [("allgather", act)]
    assert comms(embedding_program(spec, **kw)) == [("allreduce", act)]
    loss = [("allreduce", spec.seq_len * 4.0)] * 3  # max, target logit, sum of exp: one fp32 per token
    assert comms(output_program(spec, sp=True, **kw)) == [("allgather", act), *loss]
    assert comms(output_program(spec, sp=True, phase="bwd", **kw)) == [("reducescatter", act)]
    assert comms(output_program(spec, phase="bwd", **kw)) == [("allreduce", act)]


def test_pipeline_activation_is_sequence_parallel_shard():
    spec = load_preset("llama3-8b")
    full = activation_bytes(spec, micro_batch=2)
    assert full == 2 * spec.seq_len * spec.hidden * 2
    assert activation_bytes(spec, micro_batch=2, tp=4, sp=True, cp=2) == full / 8


def test_a_preset_with_new_sizes_derives_its_default_head_dim_again():
    """llama3-8b's head_dim is hidden // heads: widening the model widens the heads (an explicit head_dim,
    as Qwen3's, stays); sizes that do not divide are the usual one-line error."""
    from workloads.model import resolve_model_section

    assert resolve_model_section({"preset": "llama3-8b", "hidden": 5120}).head_dim == 160
    assert resolve_model_section({"preset": "llama3-8b", "heads": 64, "kv_heads": 8}).head_dim == 64
    assert resolve_model_section({"preset": "llama3-8b", "hidden": 5120, "head_dim": 128}).head_dim == 128
    assert resolve_model_section({"preset": "qwen3-30b-a3b", "hidden": 4096}).head_dim == 128
    with pytest.raises(ConfigError, match="does not divide hidden"):
        resolve_model_section({"preset": "llama3-8b", "hidden": 33}, file="w.yaml")
