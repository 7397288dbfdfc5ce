"""workloads.memory: Korthikanti activation formulas, ZeRO sharding, pipeline in-flight counts, OOM advice."""

from __future__ import annotations

import pytest

from simcore.errors import ConfigError
from workloads.memory import (
    explain_oom,
    layer_activation_bytes,
    stage_params,
    training_memory,
)
from workloads.model import ModelSpec, load_preset, total_params

# The 22B GPT of Korthikanti et al. 2022 Table 3 (s = 2048, h = 6144, a = 64, 4h GELU MLP, dropout).
GPT22B = ModelSpec(
    name="gpt-22b",
    layers=48,
    hidden=6144,
    ffn_hidden=24576,
    heads=64,
    kv_heads=64,
    vocab=51200,
    seq_len=2048,
    ffn="gelu",
)
KORTHIKANTI = {"flash_attention": False, "dropout": True}
S, B, H, A, T = 2048, 4, 6144, 64, 8
SBH = S * B * H  # 50,331,648


def act(spec=GPT22B, **kw) -> float:
    return layer_activation_bytes(spec, 0, micro_batch=B, **{**KORTHIKANTI, **kw})


def test_korthikanti_no_parallelism():
    # §4.1, no parallelism: s·b·h·(34 + 5·a·s/h) = 50,331,648 x (34 + 106 2/3) = 7,079,985,152 B per layer.
    assert act() == pytest.approx(7_079_985_152, rel=1e-12)
    assert act() == pytest.approx(SBH * (34 + 5 * A * S / H), rel=1e-12)


def test_korthikanti_tensor_parallel():
    # §4.2.1, TP: s·b·h·(10 + 24/t + 5·a·s/(h·t)) = 50,331,648 x (10 + 3 + 13 1/3) = 1,325,400,064
    assert act(tp=T) == pytest.approx(1_325_400_064, rel=1e-12)


def test_korthikanti_tensor_and_sequence_parallel():
    # §4.2.2, tensor + sequence parallel: s·b·h/t·(34 + 5·a·s/h) = 6,291,456 x 140.67 = 884,998,144.
    assert act(tp=T, sp=True) == pytest.approx(884_998_144, rel=1e-12)


def test_korthikanti_selective_and_full_recompute():
    # §5 (selective + SP): 34·s·b·h/t = 213,909,504; full recompute keeps 2·s·b·h (the layer input).
    assert act(tp=T, sp=True, recompute="selective") == pytest.approx(213_909_504, rel=1e-12)
    assert act(tp=T, recompute="full") == 2 * SBH
    assert act(tp=T, sp=True, recompute="full") == 2 * SBH / T


def test_swiglu_gqa_flash_derivation():
    # Llama 3 8B, one sequence of 8192, no parallelism, flash attention, no dropout. Per token (bytes):
    # norm inputs 2·2h, QKV input 2h, fc1 input 2h, Q 2h, K+V 2·2·8·128 = h, attention output 2h,
    # SwiGLU 3·2·f = 21h, fp32 log-sum-exp 4·32 = 128  ->  34h + 128.
    spec = load_preset("llama3-8b")
    per_token = 34 * 4096 + 128
    assert layer_activation_bytes(spec, 0, micro_batch=1) == 8192 * per_token


def test_fp8_keeps_the_quantized_gemm_inputs():
    # Llama 3 8B as above with an FP8 recipe: the QKV, fc1 and fc2 inputs are kept in 1 byte instead of 2
    # (h + h + f = 2h + 3.5h), and the out-projection keeps its 1-byte input beside the 16-bit attention
    # output flash attention needs (+h): 34h + 128 - 4.5h per token.
    spec = load_preset("llama3-8b")
    fp8 = layer_activation_bytes(spec, 0, micro_batch=1, gemm_input_bytes=1.0)
    assert fp8 == 8192 * (34 * 4096 + 128 - 4.5 * 4096)
    # NVFP4 keeps less still; full recompute keeps only the 16-bit layer input whatever the recipe
    assert layer_activation_bytes(spec, 0, micro_batch=1, gemm_input_bytes=0.5625) < fp8
    for g in (2.0, 1.0, 0.5625):
        assert (
            layer_activation_bytes(spec, 0, micro_batch=1, recompute="full", gemm_input_bytes=g)
            == 8192 * 2 * 4096
        )


def test_mla_moe_layer_derivation_in_bf16_and_fp8():
    # DeepSeek-V3, an expert layer (index 3), one 4096-token sequence, no parallelism, flash attention.
    # h 7168; 128 heads, d_qk 192, d_v 128; latents q 1536, kv 512, rope 64; 256 experts, top 8, width 2048,
    # one shared expert, SwiGLU. Per token, in bytes, with g the bytes of a saved GEMM input:
    spec = load_preset("deepseek-v3")
    h = 7168

    def per_token(g: float) -> float:
        attention = (2 + g) * h  # norm input + projection input (quantized: its own copy)
        attention += g * h if g < 2 else 0  # fp8: the q and kv down-projections quantize it separately
        attention += 2 * (128 * 192 + 128 * (192 + 128))  # Q, K, V (16-bit, flash reads them)
        attention += 2 * 128 * 128 + (g * 128 * 128 if g < 2 else 0)  # attention output (+ quantized copy)
        attention += 2 * (1536 + 512) + g * (1536 + 512) + 2 * 64  # latent norm inputs, latents, rope key
        attention += 4 * 128  # fp32 log-sum-exp
        inner = 6 - 2 + g  # SwiGLU: gate and up outputs (16-bit), their product (fc2 input)
        moe = (
            2 * 2 * h + 4 * 256 + (g * h if g < 2 else 0)
        )  # norm + router inputs, probabilities (+ shared fc1)
        moe += 8 * (g * h + inner * 2048)  # each routed copy: fc1 input, inner (no expert output: the
        # probabilities weight inside the activation, Megatron-Core's memory-efficient permutation)
        moe += inner * 2048  # the shared expert
        return attention + moe

    for g in (2.0, 1.0):
        got = layer_activation_bytes(spec, 3, micro_batch=1, gemm_input_bytes=g)
        assert got == pytest.approx(4096 * per_token(g), rel=1e-12)
    assert per_token(1.0) < per_token(2.0)


def test_context_parallel_splits_tokens():
    spec = load_preset("llama3-8b")
    assert layer_activation_bytes(spec, 0, micro_batch=1, cp=4) == pytest.approx(
        layer_activation_bytes(spec, 0, micro_batch=1) / 4
    )


@pytest.mark.parametrize("preset", ["llama3-70b", "mixtral-8x7b", "deepseek-v3", "gpt3-175b"])
def test_recompute_orders_activations(preset):
    spec = load_preset(preset)
    kw = {"tp": 2, "sp": True, "flash_attention": False}
    layer = spec.layers - 1
    none, sel, full = (
        layer_activation_bytes(spec, layer, micro_batch=1, recompute=r, **kw)
        for r in ("none", "selective", "full")
    )
    assert full < sel < none


@pytest.mark.parametrize(
    ("preset", "kw"),
    [
        ("llama3-70b", {"tp": 8, "pp": 4, "dp": 16, "sequence_parallel": True}),
        ("mixtral-8x7b", {"tp": 2, "pp": 2, "dp": 8, "ep": 8, "sequence_parallel": True}),
        ("deepseek-v3", {"tp": 1, "pp": 1, "dp": 64, "ep": 64}),
    ],
)
def test_zero_stages_shrink_memory_monotonically(preset, kw):
    spec = load_preset(preset)
    mems = [training_memory(spec, zero=z, num_microbatches=8, **kw) for z in range(4)]
    totals = [m.total for m in mems]
    assert totals[3] < totals[2] < totals[1] < totals[0]
    assert mems[1].optimizer_states < mems[0].optimizer_states
    assert mems[2].gradients < mems[1].gradients
    assert mems[3].weights < mems[2].weights
    assert training_memory(spec, fsdp=True, num_microbatches=8, **kw).total == totals[3]


def test_training_memory_recompute_orders_activations():
    spec = load_preset("gpt3-175b")
    kw = {"tp": 8, "pp": 8, "dp": 4, "num_microbatches": 16, "flash_attention": False}
    acts = [training_memory(spec, recompute=r, **kw).activations for r in ("full", "selective", "none")]
    assert acts[0] < acts[1] < acts[2]


@pytest.mark.parametrize(("pp", "stage"), [(1, 0), (4, 0), (4, 3)])
def test_recomputing_some_layers_never_needs_more_than_recomputing_none(pp, stage):
    # The buffer of the layer being rebuilt came on top of the in-flight micro-batches, which count its input
    # already, and was added even when only some layers recompute: recompute_layers 1 (of 8 per stage) needed
    # more than no recompute at all. It is the rebuilt layer's full activations less that input.
    spec = load_preset("llama3-70b")
    kw = {"tp": 8, "pp": pp, "dp": 1, "sequence_parallel": True, "num_microbatches": 8, "stage_index": stage}
    none = training_memory(spec, recompute="none", **kw).activations
    acts = [
        training_memory(spec, recompute="full", recompute_layers=n, **kw).activations
        for n in (1, 2, 80 // pp)
    ]
    assert none >= acts[0] > acts[1] > acts[2]
    if stage < pp - 1:  # (the last stage adds the output layer's tensors)
        one_layer = layer_activation_bytes(spec, 0, micro_batch=1, tp=8, sp=True)
        layer_input = layer_activation_bytes(spec, 0, micro_batch=1, tp=8, sp=True, recompute="full")
        in_flight = min(pp - stage, 8) * (80 // pp) * layer_input
        assert acts[2] == pytest.approx(in_flight + one_layer - layer_input, rel=1e-12)


def test_mixed_precision_adam_is_16_bytes_per_param():
    # One GPU holds everything: 2 (bf16 weights) + 2 (grads) + 12 (fp32 master, m, v) bytes per parameter.
    spec = load_preset("llama3-8b")
    n = total_params(spec)
    mem = training_memory(spec)
    assert (mem.weights, mem.gradients, mem.optimizer_states) == (2 * n, 2 * n, 12 * n)
    assert training_memory(spec, grad_dtype_bytes=4).gradients == 4 * n
    assert training_memory(spec, zero=1, dp=8).optimizer_states == pytest.approx(12 * n / 8)


def test_pytorch_fsdp_keeps_the_fp32_master_as_the_parameter():
    """PyTorch FSDP's mixed precision shards fp32 parameters and casts them per use: 4 + 8 B of weights and
    moments per parameter, where Megatron keeps a 16-bit copy beside the fp32 master (2 + 12)."""
    spec = load_preset("llama3-8b")
    n = total_params(spec)
    fsdp = training_memory(spec, fsdp=True, dp=8, grad_dtype_bytes=4, fp32_params=True)
    megatron = training_memory(spec, fsdp=True, dp=8, grad_dtype_bytes=4)
    assert (fsdp.weights, fsdp.optimizer_states) == pytest.approx((4 * n / 8, 8 * n / 8))
    assert megatron.total - fsdp.total == pytest.approx(2 * n / 8)
    # without master weights (fp32 training) there is nothing to merge
    assert training_memory(spec, master_weights=False, fp32_params=True).weights == 2 * n


def test_stages_partition_the_model():
    spec = load_preset("llama3-8b")
    stages = [stage_params(spec, pp=4, stage_index=i).total for i in range(4)]
    assert sum(stages) == total_params(spec)
    # Tied embeddings: the last stage keeps its own copy of the word embeddings when pp > 1 (Megatron-LM).
    gpt = load_preset("gpt-7.5b")
    copy = gpt.vocab * gpt.hidden
    assert sum(stage_params(gpt, pp=4, stage_index=i).total for i in range(4)) == total_params(gpt) + copy


def test_experts_shard_over_ep_and_dense_over_tp():
    spec = load_preset("mixtral-8x7b")
    one = stage_params(spec)
    split = stage_params(spec, tp=2, ep=8)
    assert split.experts == one.experts / 8
    assert split.dense == pytest.approx(one.dense / 2, rel=0.01)  # norms and routers stay whole


def test_one_f_one_b_in_flight_micro_batches():
    spec = load_preset("llama3-8b")
    kw = {"pp": 4, "num_microbatches": 16}
    per_mb = [training_memory(spec, stage_index=i, pp=4, num_microbatches=1).activations for i in range(4)]
    for i in range(3):  # the last stage adds its LM-head activations once
        assert training_memory(spec, stage_index=i, **kw).activations == pytest.approx((4 - i) * per_mb[i])
    # Fewer micro-batches than stages: only that many are ever in flight.
    assert training_memory(spec, stage_index=0, pp=4, num_microbatches=2).activations == pytest.approx(
        2 * per_mb[0]
    )


def test_interleaving_adds_korthikanti_factor():
    # Stage 0 of an interleaved schedule holds (1 + (p - 1)/(p·v)) times the 1F1B activations.
    spec = load_preset("llama3-8b")
    p, v = 4, 2
    plain = training_memory(spec, pp=p, num_microbatches=32).activations
    inter = training_memory(spec, pp=p, vp=v, num_microbatches=32).activations
    assert inter == pytest.approx(plain * (1 + (p - 1) / (p * v)))


def test_bad_inputs_name_the_field():
    spec = load_preset("llama3-8b")
    cases = [
        ({"zero": 4}, "parallelism.zero"),
        ({"recompute": "partial"}, "parallelism.recompute"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"pp": 3}, "parallelism.pp"),
        ({"tp": 3}, "parallelism.tp"),
        ({"pp": 2, "stage_index": 2}, "stage_index"),
        ({"micro_batch": 0}, "micro_batch"),
    ]
    for kw, path in cases:
        with pytest.raises(ConfigError) as info:
            training_memory(spec, **kw)
        assert info.value.path == path, kw


def test_explain_oom_names_items_and_only_useful_changes():
    spec = load_preset("llama3-405b")
    mem = training_memory(spec, tp=8, pp=8, dp=16, micro_batch=2, num_microbatches=16, flash_attention=False)
    line = explain_oom(mem, 600e9)
    assert line.startswith(f"stage 0 needs {mem.total / 1e9:.1f} GB of 600.0 GB: activations ")
    assert "\n" not in line
    suggestions = line.split("; try ")[1].replace(" or ", ", ").split(", ")
    assert suggestions and "recompute: selective" in suggestions
    # Under 1F1B stage 0 always holds pp micro-batches of 1/pp of the layers: more pp cannot help.
    assert "pp: 16" not in suggestions
    overrides = {"recompute: selective": {"recompute": "selective"}, "recompute: full": {"recompute": "full"}}
    overrides |= {"sequence_parallel: true": {"sequence_parallel": True}, "micro: 1": {"micro_batch": 1}}
    for label in suggestions:
        key, value = label.split(": ")
        change = overrides.get(label, {key: int(value) if value.isdigit() else value})
        after = training_memory(spec, **{**mem.settings, **change})
        assert after.activations < mem.activations, label


def test_explain_oom_when_it_fits_or_nothing_helps():
    spec = load_preset("llama3-8b")
    assert "fits" in explain_oom(training_memory(spec, recompute="full"), 200e9)
    tiny = explain_oom(training_memory(load_preset("gpt-1.7b"), zero=3, fsdp=True, recompute="full"), 1e6)
    assert "stage 0 needs" in tiny


def test_an_fp8_job_allocates_what_the_memory_model_says():
    from sim_helpers import simulate

    from workloads.spec import _memory_kwargs, load_training_spec

    def spec(precision: str):
        return load_training_spec(
            {
                "kind": "training",
                "model": {"preset": "llama3-8b", "layers": 4},
                "parallelism": {"tp": 2, "pp": 2, "dp": 2, "recompute": "none"},
                "batch": {"global_seqs": 8, "micro": 1},
                "precision": precision,
            },
            file="fp8.yaml",
        )

    fp8, bf16 = spec("fp8"), spec("bf16")
    mem = [training_memory(fp8.model, **_memory_kwargs(fp8, s)) for s in range(2)]
    assert all(
        m.activations < training_memory(bf16.model, **_memory_kwargs(bf16, i)).activations
        for i, m in enumerate(mem)
    )
    _, machine, _ = simulate(fp8)
    assert list(machine.mem_peak) == pytest.approx([m.total for m in mem], rel=1e-12)


def test_gradient_buffer_follows_the_reduction_precision():
    from workloads.spec import _memory_kwargs, load_training_spec

    def grads(reduce: str) -> float:
        spec = load_training_spec(
            {
                "kind": "training",
                "model": "llama3-8b",
                "parallelism": {"tp": 8, "grad_reduce": reduce},
                "batch": {"global_seqs": 1, "micro": 1},
            },
            file="g.yaml",
        )
        return training_memory(spec.model, **_memory_kwargs(spec, 0)).gradients

    # Megatron's main_grad buffer: fp32 by default, bf16 with grad_reduce_in_fp32 off
    assert grads("bf16") == pytest.approx(grads("fp32") / 2, rel=1e-12)


def _apply(label: str) -> dict:
    """A printed suggestion as training_memory keywords."""
    change: dict = {}
    for part in label.split(" with "):
        key, value = part.split(": ")
        if key == "cp_comm":
            continue  # a spec setting, not a memory one
        if key == "recompute_modules":
            change[key] = tuple(v.strip() for v in value.strip("[]").split(","))
        elif key == "micro":
            change["micro_batch"] = int(value)
        elif key == "sequence_parallel":
            change[key] = value == "true"
        else:
            change[key] = int(value) if value.isdigit() else value
    if "pp" in change:
        change["layers_per_chunk"] = None
    return change


def test_explain_oom_suggests_only_changes_after_which_the_stage_fits():
    """'try X' is a checked promise: each suggestion alone makes the stage fit (not merely shrink it)."""
    spec = load_preset("llama3-405b")
    mem = training_memory(spec, tp=8, pp=8, dp=16, micro_batch=2, num_microbatches=16, flash_attention=False)
    for capacity in (600e9, 300e9):
        line = explain_oom(mem, capacity)
        suggestions = line.split("; try ")[1].replace(" or ", ", ").split(", ")
        assert suggestions
        for label in suggestions:  # every stage of the new layout fits (a new pp moves the worst stage)
            settings = {**mem.settings, **_apply(label)}
            worst = max(
                training_memory(spec, **{**settings, "stage_index": i}).total for i in range(settings["pp"])
            )
            assert worst <= capacity, (label, worst)


def test_a_pp_suggestion_is_judged_by_the_new_layouts_fullest_stage():
    """llama3-8b tp2 pp8, no recompute: pp 17 makes stage 0 fit but stage 1 not (it used to be offered)."""
    spec = load_preset("llama3-8b")
    mem = training_memory(spec, tp=2, pp=8, dp=1, zero=2, sequence_parallel=True, micro_batch=1,
                          num_microbatches=32, flash_attention=False)  # fmt: skip
    line = explain_oom(mem, 80e9)
    assert "; try " in line and "pp: 17" not in line, line
    for label in line.split("; try ")[1].replace(" or ", ", ").split(", "):
        settings = {**mem.settings, **_apply(label)}
        worst = max(
            training_memory(spec, **{**settings, "stage_index": i}).total for i in range(settings["pp"])
        )
        assert worst <= 80e9, (label, worst)


def test_explain_oom_says_when_no_single_change_is_enough():
    spec = load_preset("llama3-405b")
    mem = training_memory(spec, tp=1, pp=1, dp=8, micro_batch=1, num_microbatches=1)
    line = explain_oom(mem, 1e9)  # 1 GB: nothing alone makes 405B fit
    assert "no single change fits: combine them" in line and " GB)" in line and "; try " not in line


def test_pure_bf16_training_keeps_no_master_copy(tmp_path):
    """A model held in bf16 and updated in place (optimizer.master_weights: false, moments: bf16) keeps
    2 + 2 + 4 B per parameter, where Megatron's mixed precision keeps 2 + 2 + 12; its Adam step moves 14 B
    per parameter (28 with master weights) and its default checkpoint is 6 B per parameter (14)."""
    from workloads.model import optimizer_bytes
    from workloads.spec import load_training_spec

    spec = load_preset("llama3-8b")
    n = total_params(spec)
    pure = training_memory(spec, master_weights=False, moment_bytes=2.0)
    assert (pure.weights, pure.gradients, pure.optimizer_states) == pytest.approx((2 * n, 2 * n, 4 * n))
    assert optimizer_bytes(n, master_weights=False, moment_bytes=2.0) == pytest.approx(14 * n)
    assert optimizer_bytes(n) == pytest.approx(28 * n)

    base = {"preset": "llama3-8b", "parallelism": {"dp": 8}, "batch": {"global_seqs": 8}}
    mixed = load_training_spec(base, file="w.yaml").optimizer
    bf16 = load_training_spec(
        {**base, "optimizer": {"master_weights": False, "moments": "bf16"}}, file="w.yaml"
    ).optimizer
    fsdp = load_training_spec({**base, "optimizer": {"fp32_params": True}}, file="w.yaml").optimizer
    assert (mixed.checkpoint_bytes_per_param, bf16.checkpoint_bytes_per_param) == (14.0, 6.0)
    assert fsdp.checkpoint_bytes_per_param == 12.0  # fp32 parameters + fp32 moments, no 16-bit copy
    # the workload's settings reach the memory model: 8 B of master weights and moments per parameter less
    from workloads.spec import stage_memory

    low = {**base, "optimizer": {"master_weights": False, "moments": "bf16"}}
    saved = (
        stage_memory(load_training_spec(base, file="w.yaml"))[0].total
        - stage_memory(load_training_spec(low, file="w.yaml"))[0].total
    )
    assert saved == pytest.approx(8 * n / 8)  # ZeRO-1 (the default) shards the optimizer over dp 8
    with pytest.raises(ConfigError, match=r"optimizer\.fp32_params.*master_weights is false"):
        load_training_spec(
            {**base, "optimizer": {"master_weights": False, "fp32_params": True}}, file="w.yaml"
        )


def test_ring_context_parallelism_holds_k_v_blocks_not_the_gathered_sequence():
    # llama3-8b at 128k tokens, CP 16, TP 8 (one KV head per rank, head dim 128): the all-gather holds one
    # layer's whole K and V and their gradients, 2 x 131,072 x 1 x 256 x 2 B = 134 MB; the ring holds two
    # blocks of 1/16 of the K/V, forward and backward: 4/16 of it, 2/CP of the all-gather's (the same at CP 2).
    spec = load_preset("llama3-8b")
    kw = dict(tp=8, dp=1, cp=16, sequence_parallel=True, seq_len=131072)
    gathered = training_memory(spec, cp_comm="allgather", **kw).cp_buffers
    ring = training_memory(spec, cp_comm="p2p", **kw).cp_buffers
    assert gathered == pytest.approx(2 * 131072 * 1 * 256 * 2)
    assert ring == pytest.approx(gathered * 2 / 16)
    kw2 = dict(kw, cp=2)
    assert training_memory(spec, cp_comm="p2p", **kw2).cp_buffers == pytest.approx(
        training_memory(spec, cp_comm="allgather", **kw2).cp_buffers
    )
    with pytest.raises(ConfigError, match="cp_comm"):
        training_memory(spec, cp_comm="ring", **kw)
