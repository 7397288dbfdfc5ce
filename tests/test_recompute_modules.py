"""parallelism.recompute_modules (Megatron's --recompute-modules with selective recompute): each module
frees exactly the tensors it rebuilds and its backward replays exactly the forward ops that rebuild them."""

from __future__ import annotations

import pytest
from sim_helpers import simulate

from workloads import model as mdl
from workloads.memory import layer_activation_bytes, training_memory
from workloads.spec import load_training_spec, spec_mapping
from workloads.training import layer_items


def _spec(model: str, modules: list[str], precision: str = "bf16", **par):
    parallelism = {"recompute": "selective", "recompute_modules": modules, **par}
    return load_training_spec(
        {
            "kind": "training",
            "model": {"preset": model, "layers": 2, "seq_len": 2048},
            "parallelism": parallelism,
            "batch": {"global_seqs": 2 * parallelism.get("dp", 1), "micro": 1},
            "precision": precision,
            "steps": 1,
        },
        file="modules.yaml",
    )


def _saved(spec: mdl.ModelSpec, layer: int, modules: tuple[str, ...], g: float = 2.0, **kw) -> float:
    return layer_activation_bytes(
        spec,
        layer,
        micro_batch=1,
        recompute="selective",
        recompute_modules=modules,
        gemm_input_bytes=g,
        **kw,
    )


@pytest.mark.parametrize("g", [2.0, 1.0])  # bf16, or the fp8 copy a quantized GEMM keeps
def test_each_module_frees_what_it_rebuilds(g):
    dense = mdl.load_preset("llama3-8b")
    moe = mdl.load_preset("qwen3-30b-a3b")
    mla = mdl.load_preset("deepseek-v3")
    tokens, tp = dense.seq_len, 2
    kw = {"tp": tp, "sp": True}
    base = _saved(dense, 0, ("core_attn",), g, **kw)
    # layernorm: Transformer Engine fuses a standard attention's and a dense MLP's norm into the next
    # linear layer, which Megatron's layernorm module leaves alone: nothing to free
    assert _saved(dense, 0, ("core_attn", "layernorm"), g, **kw) == pytest.approx(base)
    # mlp: fc1's input and the inner activations (fc1 output and the activation's output)
    inner = 6.0 - 2.0 + g  # swiglu: two 16-bit fc1 halves, the activation output as fc2's saved input
    freed = tokens * (g * dense.hidden / tp + inner * dense.ffn_hidden / tp)
    assert base - _saved(dense, 0, ("core_attn", "mlp"), g, **kw) == pytest.approx(freed)
    # moe_act: fc2's input of every routed copy; layernorm on an expert layer: the router's 16-bit input
    mbase = _saved(moe, 0, ("core_attn",), g, **kw)
    routed, mtokens = moe.moe.top_k * moe.moe.load_factor, moe.seq_len
    assert mbase - _saved(moe, 0, ("core_attn", "moe_act"), g, **kw) == pytest.approx(
        mtokens * routed * g * moe.moe.expert_ffn_hidden / tp
    )
    assert mbase - _saved(moe, 0, ("core_attn", "layernorm"), g, **kw) == pytest.approx(
        mtokens * 2.0 * moe.hidden / tp
    )
    # MLA's input norm is its own module: layernorm also frees the down-projections' input (and, quantized,
    # their second copy) and, with a shared expert, fc1's quantized copy of the router input
    lbase = _saved(mla, 3, ("core_attn",), g, **kw)
    copies = 3 if g < 2 else 1  # quantized: the q down-projection's own copy and the shared fc1's too
    assert lbase - _saved(mla, 3, ("core_attn", "layernorm"), g, **kw) == pytest.approx(
        mla.seq_len * (copies * g + 2.0) * mla.hidden / tp
    )
    # core_attn alone frees the unfused core's scores, nothing under flash attention
    assert _saved(dense, 0, (), g, **kw) == pytest.approx(base)
    unfused = {"tp": tp, "sp": True, "flash_attention": False}
    assert _saved(dense, 0, ("mlp",), g, **unfused) > _saved(dense, 0, ("core_attn", "mlp"), g, **unfused)


def test_backward_replays_the_rebuilt_forward_ops():
    fp8 = _spec("qwen3-30b-a3b", ["layernorm", "moe_act"], precision="fp8", dp=8, ep=8)
    names = [item.name for item in layer_items(fp8, 0, "bwd_selective") if isinstance(item, mdl.Op)]
    replayed = sorted(n for n in names if n.endswith("_recompute"))
    assert replayed == sorted(
        f"{n}_recompute" for n in ("mlp_norm", "expert_mlp_act", "expert_mlp_down_cast")
    )
    # ... before any backward op; the attention core is not replayed without core_attn
    assert all(n.endswith("_recompute") for n in names[:3]) and "attn_core_recompute" not in names
    # mlp: the whole dense block again, norm to fc2 with its TP all-gather and reduce-scatter
    dense = _spec("llama3-8b", ["core_attn", "mlp"], tp=2)
    items = layer_items(dense, 0, "bwd_selective")
    fwd = {op.name: op for op in layer_items(dense, 0, "fwd") if isinstance(op, mdl.Op)}
    again = {op.name.removesuffix("_recompute"): op for op in items if op.name.endswith("_recompute")}
    assert set(again) == {"mlp_norm", "mlp_up", "mlp_act", "mlp_down", "attn_core"}
    for name, op in again.items():
        assert (op.flops, op.nbytes) == (fwd[name].flops, fwd[name].nbytes)
    head = [item.name for item in items[: items.index(again["mlp_down"]) + 2]]
    assert head == [
        "mlp_norm_recompute",
        "mlp_allgather",
        "mlp_up_recompute",
        "mlp_act_recompute",
        "mlp_down_recompute",
        "mlp_reducescatter",
    ]


def test_more_modules_less_memory_more_time_and_the_hfu_flops():
    dense, moe = mdl.load_preset("llama3-8b"), mdl.load_preset("qwen3-30b-a3b")
    kw = {"tp": 2, "sequence_parallel": True, "dp": 2, "micro_batch": 1, "num_microbatches": 2}
    assert training_memory(
        dense, recompute="selective", recompute_modules=("core_attn", "mlp"), **kw
    ).activations < (training_memory(dense, recompute="selective", **kw).activations)
    moe_kw = {**kw, "dp": 8, "ep": 8}
    mem = [
        training_memory(moe, recompute="selective", recompute_modules=mods, **moe_kw).activations
        for mods in (("core_attn",), ("core_attn", "layernorm"), ("core_attn", "layernorm", "moe_act"))
    ]
    assert mem[0] > mem[1] > mem[2]
    steps, hfu = [], []
    for mods in (["core_attn"], ["core_attn", "mlp"]):
        job, _, step = simulate(_spec("llama3-8b", mods, tp=2, dp=2))
        steps.append(step)
        hfu.append(job.hardware_flops_per_token())
    assert steps[0] < steps[1]
    # model-FLOP convention: the replayed fc1 (gate and up) and fc2 are 2·h·3f per token per layer
    assert hfu[1] - hfu[0] == pytest.approx(2 * 2.0 * dense.hidden * 3 * dense.ffn_hidden)


def test_savings_match_the_megatron_core_moe_report_table_4():
    """arXiv:2603.07685 Table 4 and §4.1.2, DeepSeek-V3 on 256 GPUs: recomputing MLA's up-projection saves
    30.4 GB per GPU, the SwiGLU activation 3.8 GB, and memory-efficient permutation (the expert output a
    pre-0.13 Megatron-Core kept for the probabilities' gradient: top_k x 2 B x hidden per token) 26.3 GB.
    The per-token ratios of racksim's savings to that last one match the report's within 5 %."""
    ds = mdl.load_preset("deepseek-v3")
    layer = 3  # an expert layer
    old_expert_output = ds.moe.top_k * 2.0 * ds.hidden  # per token

    def saved(modules: tuple[str, ...], g: float) -> float:
        return (
            _saved(ds, layer, ("core_attn",), g) - _saved(ds, layer, ("core_attn", *modules), g)
        ) / ds.seq_len

    assert saved(("mla_up_proj",), 2.0) / old_expert_output == pytest.approx(30.4 / 26.3, rel=0.05)
    # the activation output is fc2's saved input: its FP8 copy (1 B) matches the report's 3.8 GB
    assert saved(("moe_act",), 1.0) / old_expert_output == pytest.approx(3.8 / 26.3, rel=0.05)


def test_a_bare_module_name_gets_a_one_line_hint():
    from simcore.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_training_spec(
            {
                "kind": "training",
                "model": "llama3-8b",
                "parallelism": {"recompute": "selective", "recompute_modules": "mlp"},
                "batch": {"global_seqs": 8},
            },
            file="bare.yaml",
        )
    text = str(info.value)
    assert info.value.path == "parallelism.recompute_modules" and "write [mlp]" in text and "\n" not in text


def test_the_moe_module_rebuilds_the_whole_block_from_its_input():
    """``moe`` (Megatron's --recompute-modules moe): an MoE block keeps only its input; its backward first
    replays the block, norm to combine, with the router's host sync and the all-to-alls."""
    qwen = mdl.load_preset("qwen3-30b-a3b")
    dense_part = _saved(qwen, 0, ("core_attn",)) - _saved(qwen, 0, ("core_attn", "moe"))
    assert dense_part > 0
    # a hybrid model's MoE-only block keeps exactly its 16-bit input
    hybrid = mdl.load_preset("nemotron-3-nano-30b-a3b")
    assert _saved(hybrid, 1, ("moe",), seq_len=2048) == 2048 * 2 * hybrid.hidden
    spec = _spec("qwen3-30b-a3b", ["core_attn", "moe", "moe_act", "layernorm"], dp=8, ep=8)
    items = layer_items(spec, 0, "bwd_selective")
    names = [getattr(i, "name", type(i).__name__) for i in items]
    assert names[0] == "mlp_norm_recompute" and names[1] == "router_recompute" and names[2] == "HostSync"
    assert names.count("moe_dispatch") == 2 and names.count("moe_combine") == 2  # replayed, then backward
    # moe_act's and layernorm's replays are inside the block's: nothing runs twice
    assert names.count("expert_mlp_act_recompute") == 1 and names.count("mlp_norm_recompute") == 1
    base = simulate(_spec("qwen3-30b-a3b", ["core_attn"], dp=8, ep=8), "b200-dgx.yaml")
    again = simulate(spec, "b200-dgx.yaml")
    assert again[2] > base[2]
    p = mdl.layer_params(spec.model, 0)
    extra = again[0].hardware_flops_per_token() - base[0].hardware_flops_per_token()
    assert extra == pytest.approx(2 * 2.0 * (p.router + p.active_routed + p.shared_experts))


def test_the_moe_module_needs_experts():
    with pytest.raises(Exception, match="moe rebuilds what only a model with routed experts"):
        _spec("llama3-8b", ["moe"])


def test_an_out_of_memory_moe_job_is_offered_the_moe_module():
    from simcore.errors import CapacityError
    from workloads.spec import stage_memory

    spec = load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "qwen3-30b-a3b", "seq_len": 8192},
            "parallelism": {"dp": 8, "ep": 8, "recompute": "selective"},
            "batch": {"global_seqs": 64, "micro": 2},
            "precision": "fp8",
            "steps": 1,
        },
        file="oom.yaml",
    )
    with pytest.raises(CapacityError, match=r"recompute_modules: \[moe\]"):
        stage_memory(spec, 141e9)  # 165.6 GB needed; whole MoE blocks rebuilt from their input fit
    fixed = load_training_spec(
        {
            **spec_mapping(spec),
            "parallelism": {**spec_mapping(spec)["parallelism"], "recompute_modules": ["moe"]},
        },
        file="fixed.yaml",
    )
    assert max(m.total for m in stage_memory(fixed).values()) <= 141e9
