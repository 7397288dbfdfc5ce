"""Hybrid Mamba-2 / attention / MoE models (Nemotron-H, Nemotron 3): Megatron's hybrid_override_pattern as
``model.hybrid_pattern``, one block per character, each a pre-norm and one mixer. Parameters, FLOPs, the
Mamba block's kernels and collectives, its memory and its bad input."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from sim_helpers import simulate

from simcore.errors import ConfigError
from workloads import memory
from workloads import model as mdl
from workloads.spec import load_training_spec
from workloads.validation import load_table, plan_row, select_rows

NANO = "nemotron-3-nano-30b-a3b"
SUPER = "nemotron-3-super-120b-a12b"


def _tiny(**changes: object) -> dict:
    """A small hybrid model mapping: two Mamba blocks, an attention block, a dense MLP and two MoE blocks."""
    data = {
        "name": "tiny-hybrid",
        "layers": 6,
        "hidden": 256,
        "ffn_hidden": 512,
        "heads": 8,
        "kv_heads": 2,
        "vocab": 1024,
        "seq_len": 512,
        "ffn": "squared_relu",
        "hybrid_pattern": "ME*-ME",
        "mamba": {"heads": 8, "head_dim": 64, "state": 32, "groups": 2},
        "moe": {"experts": 8, "top_k": 2, "expert_ffn_hidden": 128},
    }
    data.update(changes)
    return data


def test_nemotron_3_nano_counts_the_published_parameters():
    # Model card: 31.6B total, 3.2B active (3.6B with the embeddings).
    nano = mdl.load_preset(NANO)
    assert mdl.total_params(nano) == pytest.approx(31.6e9, rel=0.005)
    assert mdl.active_params(nano) == pytest.approx(3.6e9, rel=0.01)
    assert mdl.active_params(nano) - mdl.embedding_params(nano) == pytest.approx(3.2e9, rel=0.01)
    kinds = [nano.layer_kind(i) for i in range(nano.layers)]
    assert (kinds.count("mamba"), kinds.count("moe"), kinds.count("attention")) == (23, 23, 6)


def test_mamba_block_parameters_in_closed_form():
    spec = mdl.load_model(_tiny())
    h, heads, p, n, g, k = 256, 8, 64, 32, 2, 4
    inner = heads * p
    in_proj = h * (2 * inner + 2 * g * n + heads)
    conv = (inner + 2 * g * n) * (k + 1)  # depthwise taps and a bias per channel
    expected = in_proj + conv + 3 * heads + inner + inner * h  # dt_bias, A_log, D; gated norm; out_proj
    assert mdl.mamba_params(spec) == expected
    block = mdl.layer_params(spec, 0)
    assert block.mamba == expected and block.norms == h and block.attention == 0 and block.dense_ffn == 0
    # an attention block has no FFN, an MLP block no attention; each has one norm
    attn, mlp = mdl.layer_params(spec, 2), mdl.layer_params(spec, 3)
    assert attn.attention > 0 and attn.dense_ffn == 0 and attn.norms == h
    assert mlp.attention == 0 and mlp.dense_ffn == 2 * h * 512 and mlp.norms == h
    # TP shards the whole mixer; the block norm stays whole
    dense, _ = mdl.layer_param_split(spec, 0, tp=2)
    assert dense == expected / 2 + h


def test_model_flops_add_three_times_the_ssd_scan_of_each_mamba_block():
    spec = mdl.load_model(_tiny())
    s = spec.seq_len
    # Q = 128: C·Bᵀ per group, its product with X per head, chunk states and their output per head
    scan = 2 * 128 * 32 * 2 + 8 * (2 * 128 * 64 + 4 * 32 * 64)
    assert mdl.ssd_scan_flops_per_token(spec) == scan
    attention = mdl.layer_attention_flops_per_token(spec, s, 2)
    assert attention > 0 and mdl.layer_attention_flops_per_token(spec, s, 0) == 0.0
    params = mdl.non_embedding_params(spec, active=True) + spec.vocab * spec.hidden
    assert mdl.model_flops_per_token(spec) == pytest.approx(
        6 * params + 3 * (attention + 2 * scan), rel=1e-12
    )
    # full recompute runs every block's forward again, the scans included
    full = mdl.hardware_flops_per_token(spec, recompute="full") - mdl.model_flops_per_token(spec)
    assert full == pytest.approx(2 * mdl.non_embedding_params(spec, active=True) + attention + 2 * scan)
    # a sequence shorter than a chunk is one chunk
    assert mdl.ssd_scan_flops_per_token(spec, 64) < scan


def test_mamba_block_program_gemms_and_tp_collectives():
    spec = mdl.load_model(_tiny())
    tokens = 2 * 512
    one = {op.name: op for op in mdl.layer_ops(spec, 0, micro_batch=2)}
    assert one["mamba_in_proj"].flops == 2 * tokens * 256 * (2 * 512 + 2 * 2 * 32 + 8)
    assert one["mamba_out_proj"].flops == 2 * tokens * 512 * 256
    # two sequences per micro-batch: in_proj's output and y are copied batch-first and back (Megatron's
    # rearrange(...).contiguous() around the fused kernel); one sequence needs no copy
    assert one["mamba_layout_in"].nbytes == 2 * tokens * (2 * 512 + 2 * 2 * 32 + 8) * 2
    assert one["mamba_layout_out"].nbytes == 2 * tokens * 512 * 2
    assert not any(op.name.startswith("mamba_layout") for op in mdl.layer_ops(spec, 0, micro_batch=1))
    assert mdl.layer_comm(spec, 0, micro_batch=2) == []
    two = {op.name: op for op in mdl.layer_ops(spec, 0, micro_batch=2, tp=2, sp=True)}
    for name in ("mamba_in_proj", "mamba_scan", "mamba_out_proj"):
        assert two[name].flops == pytest.approx(one[name].flops / 2), name
    # the same TP points as an attention block: all-gather in, reduce-scatter out (mirrored backward)
    fwd = [(c.op, c.nbytes) for c in mdl.layer_comm(spec, 0, micro_batch=2, tp=2, sp=True)]
    assert fwd == [("allgather", tokens * 256 * 2), ("reducescatter", tokens * 256 * 2)]
    bwd = [c.op for c in mdl.layer_comm(spec, 0, micro_batch=2, tp=2, sp=True, phase="bwd")]
    assert bwd == ["allgather", "allgather", "reducescatter"]
    # the blocks run only their own mixer
    assert not any(op.name.startswith("attn") for op in mdl.layer_ops(spec, 1, micro_batch=1))
    assert not any(op.name.startswith(("mlp", "expert")) for op in mdl.layer_ops(spec, 2, micro_batch=1))
    assert [op.name for op in mdl.layer_ops(spec, 3, micro_batch=1)][:2] == ["mlp_norm", "mlp_up"]


def test_mamba_activations_shrink_with_tp_and_recompute():
    spec = mdl.load_model(_tiny())
    kw = {"micro_batch": 1}
    plain = memory.layer_activation_bytes(spec, 0, **kw)
    assert plain > 0
    assert memory.layer_activation_bytes(spec, 0, tp=2, sp=True, **kw) < plain
    assert memory.layer_activation_bytes(spec, 0, recompute="full", **kw) < plain
    # an attention-only block keeps no MLP tensors: less than a transformer layer of the same attention
    dense = mdl.load_model(_tiny(hybrid_pattern=None, mamba=None, moe=None, layers=6))
    assert memory.layer_activation_bytes(spec, 2, **kw) < memory.layer_activation_bytes(dense, 2, **kw)


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [
        ({"hybrid_pattern": "MEX*-M"}, "model.hybrid_pattern", "unknown block symbol"),
        ({"hybrid_pattern": "ME*|-ME"}, "model.hybrid_pattern", "separators are not read"),
        ({"hybrid_pattern": "ME*-ME/*E"}, "model.hybrid_pattern", "separators are not read"),
        ({"hybrid_pattern": "ME*-M"}, "model.layers", "5 blocks"),
        ({"mamba": None}, "model.mamba", "no mamba section"),
        ({"hybrid_pattern": "*E*-*E"}, "model.mamba", "no 'M' block"),
        ({"moe": None}, "model.moe", "no moe section"),
        ({"hybrid_pattern": None}, "model.mamba", "without hybrid_pattern"),
        ({"hybrid_pattern": "MEM-ME", "mtp_layers": 1}, "model.mtp_layers", "an attention block and an FFN"),
        ({"mamba": {"heads": 8, "head_dim": 64, "state": 32, "groups": 3}}, "model.mamba.groups", "divide"),
    ],
)
def test_bad_hybrid_models_name_the_field(changes, path, words):
    with pytest.raises(ConfigError) as err:
        mdl.load_model(_tiny(**changes), file="m.yaml", path="model")
    assert err.value.path == path
    assert words in str(err.value)


def test_parallel_layouts_a_mamba_block_cannot_run():
    spec = mdl.load_model(_tiny())
    with pytest.raises(ConfigError, match=r"mamba\.groups"):
        mdl.check_parallelism(spec, tp=4)  # 2 groups
    with pytest.raises(ConfigError, match="cannot split the 8 Mamba heads"):
        mdl.check_parallelism(spec, cp=16)
    with pytest.raises(ConfigError, match="cannot split the 4 Mamba heads and 1 groups"):
        mdl.check_parallelism(spec, tp=2, cp=8, sequence_parallel=True)
    mdl.check_parallelism(spec, tp=2, cp=4, sequence_parallel=True)  # 4 heads, 1 group: B and C repeated
    mdl.check_parallelism(spec, tp=2, ep=2, dp=2, sequence_parallel=True)


def _training(tp: int = 1, **model: object):
    return load_training_spec(
        {
            "kind": "training",
            "model": _tiny(**model),
            "parallelism": {"tp": tp, "dp": 8 // tp, "ep": 2, "sequence_parallel": tp > 1},
            "batch": {"global_seqs": 16, "micro": 1},
            "steps": 1,
        },
        file="hybrid.yaml",
    )


def test_a_hybrid_model_trains_deterministically_and_a_bigger_state_costs_time():
    _, machine, step = simulate(_training(), "gb200-nvl72.yaml")
    _, _, again = simulate(_training(), "gb200-nvl72.yaml")
    assert step > 0 and step == again
    # the trace labels the Mamba blocks' kernels as their own kind
    assert {"fwd:mamba", "bwd:mamba", "fwd:attn", "fwd:moe"} <= set(machine.recorder.names)
    bigger = {"heads": 8, "head_dim": 64, "state": 256, "groups": 2}
    _, _, slower = simulate(_training(mamba=bigger), "gb200-nvl72.yaml")
    assert slower > step
    # TP 2 splits every block and the step runs; selective recompute replays the one attention core only
    job, _, step_tp = simulate(_training(tp=2), "gb200-nvl72.yaml")
    assert step_tp > 0 and job.spec.parallelism.recompute == "selective"
    model = job.spec.model
    core = mdl.layer_attention_flops_per_token(model, model.seq_len, 2)
    assert job.hardware_flops_per_token() == pytest.approx(mdl.model_flops_per_token(model) + core)
    assert job.hardware_flops_per_token() == pytest.approx(
        mdl.hardware_flops_per_token(model, recompute="selective")
    )


def test_transformer_models_are_one_kind_of_layer():
    llama = mdl.load_preset("llama3-8b")
    assert {llama.layer_kind(i) for i in range(llama.layers)} == {"transformer"}
    assert all(llama.has_attention(i) and llama.has_ffn(i) for i in range(llama.layers))
    hybrid = mdl.load_preset(NANO)
    assert hybrid.is_moe_layer(1) and not hybrid.is_moe_layer(0) and hybrid.is_mamba_layer(0)


def test_the_megatron_bridge_nemotron_3_nano_rows_map_to_the_preset():
    table, _ = load_table("workloads/reference/megatron_bridge_26x_runs.yaml")
    rows = select_rows(table, ["*Nemotron_3_Nano*"])
    assert len(rows) == 20
    for row in rows:
        plan = plan_row(row, table)
        assert plan.spec["model"]["name"] == NANO


def _serving(model: str = NANO, **extra: object):
    from workloads.inference import load_inference_spec

    data = {
        "kind": "inference",
        "model": model,
        "precision": "fp8",
        "kv_cache": {"precision": "fp8"},
        **extra,
    }
    return load_inference_spec(data, file="serve.yaml")


def test_serving_a_hybrid_model_caches_kv_in_its_attention_blocks_and_a_fixed_mamba_state():
    from workloads.inference import replica_costs, serving_kernels_per_layer

    c = replica_costs(_serving())
    assert (c.attention_layers, c.mamba_layers, c.layers) == (6, 23, 52)
    # fp32 SSM state of 64 heads x 64 x 128 and the conv's last 3 inputs of x, B, C (6,144 channels, 16-bit)
    state = 64 * 64 * 128 * 4 + 3 * 6144 * 2
    assert c.mamba_state_bytes == state
    kv_token = 2 * 2 * 128 * 1.0  # K and V of the 2 KV heads, fp8
    for tokens in (1, 1000, 24_000):
        assert c.kv_bytes(tokens) == pytest.approx(6 * tokens * kv_token + 23 * state)
    # tp 2 halves both
    c2 = replica_costs(_serving(parallelism={"tp": 2}))
    assert c2.mamba_state_bytes == state / 2 and c2.kv_bytes_per_token_layer == kv_token / 2  # 1 KV head each
    spec = _serving().model
    assert serving_kernels_per_layer(spec, 0, 1, "fp8") == 8  # norm, 2 GEMMs + their casts, conv, scan, norm
    assert serving_kernels_per_layer(spec, 5, 1, "bf16") == 5  # norm, qkv, rope + cache, attention, out
    with pytest.raises(ConfigError) as err:
        _serving(parallelism={"tp": 2, "attention_dp": True})
    assert err.value.path == "parallelism.attention_dp"
    with pytest.raises(ConfigError, match=r"does not divide the Mamba heads \(64\) and groups \(8\)"):
        _serving(parallelism={"tp": 16})  # 32 attention heads split, 8 Mamba groups do not


def test_a_decode_step_reads_each_mamba_state_once_whatever_the_context():
    from workloads.inference import iteration_work, replica_costs

    c = replica_costs(_serving())
    short, _ = iteration_work(c, [1_000] * 8, [], 8, row_tile=64)
    long, _ = iteration_work(c, [8_000] * 8, [], 8, row_tile=64)
    extra = sum(op[1] for op in long) - sum(op[1] for op in short)
    # only the 6 attention layers read the longer context; the Mamba states cost the same
    assert extra == pytest.approx(6 * 8 * 7_000 * c.kv_bytes_per_token_layer)
    state_ops = [op for op in short if op[1] == 2.0 * 8 * c.mamba_state_bytes]
    assert len(state_ops) == 23
    # a prefill chunk runs the SSD scan in each Mamba layer and writes each sequence's state
    work, _ = iteration_work(c, [], [(0, 4096)], 1, row_tile=64)
    scans = [op for op in work if op[0] == 4096 * c.mamba_scan_flops_per_token]
    assert len(scans) == 23 and scans[0][1] == 4096 * c.mamba_scan_bytes_per_token + c.mamba_state_bytes


def test_long_requests_serve_faster_on_the_hybrid_than_on_a_transformer_of_its_size(tmp_path):
    """Nemotron 3 Nano caches K and V in 6 of 52 blocks; Qwen3-30B-A3B in all 48 of its layers: at the same
    requests on one H200 more of them run at once, and the hybrid serves more tokens per second (NVIDIA
    reports up to 3.3x at 8K in / 16K out; racksim gives 5.2x there at full concurrency)."""
    from simcore.runner import RunOptions, run

    def serve(model: str) -> dict:
        data = {
            "kind": "inference", "model": model, "precision": "fp8", "kv_cache": {"precision": "fp8"},
            "requests": {"count": 96, "input_tokens": 8192, "output_tokens": 256},
            "scheduler": {"max_num_seqs": 512},
        }  # fmt: skip
        path = tmp_path / f"{model}.yaml"
        path.write_text(yaml.safe_dump(data))
        return run(RunOptions(profile="h200-hgx.yaml", workload=str(path), write_trace=False)).summary

    nano, qwen = serve(NANO), serve("qwen3-30b-a3b")
    assert nano["kv_cache_peak_bytes"] < qwen["kv_cache_peak_bytes"]
    assert nano["tokens_per_s"] > 1.5 * qwen["tokens_per_s"]


def test_nemotron_3_super_counts_the_checkpoint_exactly():
    # The BF16 checkpoint's tensors: 123,611,033,088 in all, the MTP module 2,942,324,736, active 12,770,216,960
    sup = mdl.load_preset(SUPER)
    assert mdl.total_params(sup) == pytest.approx(123_611_033_088, rel=1e-6)
    assert mdl.mtp_params(sup) == 2_942_324_736  # one module: its two depths share it
    assert mdl.active_params(sup) == 12_770_216_960
    assert [sup.layer_kind(i) for i in sup.mtp_block_layers()] == ["attention", "moe"]
    lightning = mdl.load_preset("nemotron-3.5-lightning-30b-a3b")  # Nano + a shared "*E" MTP module
    assert mdl.total_params(lightning) - mdl.mtp_params(lightning) == mdl.total_params(mdl.load_preset(NANO))


def test_latent_moe_experts_and_all_to_all_work_in_the_latent_width():
    plain = mdl.load_model(_tiny())
    latent = mdl.load_model(_tiny(moe={"experts": 8, "top_k": 2, "expert_ffn_hidden": 128, "latent": 64}))
    h, f, e, lat = 256, 128, 8, 64
    p0, p1 = mdl.layer_params(plain, 1), mdl.layer_params(latent, 1)
    assert p0.routed_experts == e * 2 * h * f and p1.routed_experts == e * 2 * lat * f
    assert p1.latent_proj == 2 * h * lat and p0.latent_proj == 0
    # the latent projections are whole on every TP rank, as the router
    assert mdl.layer_param_split(latent, 1, tp=2, ep=2) == (
        p1.norms + p1.router + p1.latent_proj,
        e * 2 * lat * f / 2,
    )
    kw = {"micro_batch": 1, "ep": 2}
    a2a0 = [c.nbytes for c in mdl.layer_comm(plain, 1, **kw) if c.op == "alltoall"]
    a2a1 = [c.nbytes for c in mdl.layer_comm(latent, 1, **kw) if c.op == "alltoall"]
    assert a2a1 == [b * lat / h for b in a2a0]
    ops = {op.name: op for op in mdl.layer_ops(latent, 1, **kw)}
    assert ops["moe_latent_down"].gemm_mnk[1:] == (lat, h) and ops["moe_latent_up"].gemm_mnk[1:] == (h, lat)
    assert ops["expert_mlp_up"].gemm_mnk[2] == lat and ops["expert_mlp_down"].gemm_mnk[1] == lat
    assert memory.layer_activation_bytes(latent, 1, micro_batch=1) < memory.layer_activation_bytes(
        plain, 1, micro_batch=1
    )


def test_a_shared_mtp_module_stores_one_module_and_runs_every_depth():
    shared = mdl.load_model(_tiny(mtp_layers=2, mtp_shared=True))
    own = mdl.load_model(_tiny(mtp_layers=2))
    assert shared.mtp_block_layers() == (2, 5)  # the last attention block and the last FFN block
    assert mdl.mtp_params(own) == 2 * mdl.mtp_params(shared)
    assert mdl.mtp_params(own, active=True) == mdl.mtp_params(shared, active=True)
    assert mdl.model_flops_per_token(own) == mdl.model_flops_per_token(shared)
    module = sum(mdl.layer_params(shared, i).total for i in (2, 5)) + mdl.mtp_extra_params(shared)
    assert mdl.mtp_params(shared) == module

    # two depths run: the step takes as long; the shared module's weights are held once
    def job(data):
        spec = load_training_spec(
            {"kind": "training", "model": data, "parallelism": {"tp": 1, "dp": 8, "ep": 2},
             "batch": {"global_seqs": 16, "micro": 1}, "steps": 1},
            file="hybrid.yaml",
        )  # fmt: skip
        return simulate(spec, "gb200-nvl72.yaml")

    j_shared, _, t_shared = job(_tiny(mtp_layers=2, mtp_shared=True))
    j_own, _, t_own = job(_tiny(mtp_layers=2))
    _, _, t_none = job(_tiny())
    assert t_none < t_shared
    assert t_shared == pytest.approx(t_own, rel=0.02)
    assert sum(j_shared._stage_params(0)) < sum(j_own._stage_params(0))


def test_the_mlp_recompute_module_applies_to_dense_mlp_blocks():
    def spec(model: dict):
        return load_training_spec(
            {"kind": "training", "model": model,
             "parallelism": {"dp": 8, "ep": 2, "recompute": "selective", "recompute_modules": ["mlp"]},
             "batch": {"global_seqs": 16, "micro": 1}, "steps": 1},
            file="hybrid.yaml",
        )  # fmt: skip

    assert spec(_tiny()).parallelism.recompute_modules == ("mlp",)  # its '-' block
    with pytest.raises(ConfigError, match="'-' blocks"):
        spec(_tiny(hybrid_pattern="ME*EME"))


def test_an_mtp_block_recomputes_as_its_model_layer_on_an_earlier_stage():
    """The MTP module's attention block copies layer 2, which sits on stage 0 at pp 2: under full recompute
    the last stage keeps what the job keeps for it (the layer input), not a whole layer's activations."""
    spec = load_training_spec(
        {"kind": "training", "model": _tiny(mtp_layers=1),
         "parallelism": {"pp": 2, "dp": 4, "ep": 2, "recompute": "full"},
         "batch": {"global_seqs": 16, "micro": 1}, "steps": 1},
        file="hybrid.yaml",
    )  # fmt: skip
    job, _, _ = simulate(spec, "gb200-nvl72.yaml")
    assert job.layer_recompute(2) == "full" and 2 not in job.stage_chunks[1][0]
    from workloads.spec import stage_memory

    last = stage_memory(spec)[1]
    plain = stage_memory(dataclasses.replace(spec, model=mdl.load_model(_tiny())))[1]
    tokens, h = 512, 256
    kept_input = tokens * 2 * h  # a fully recomputed block keeps its 16-bit input
    assert memory.layer_activation_bytes(spec.model, 2, micro_batch=1, recompute="full") == kept_input
    eh_proj = tokens * (2 * 2 + 2 * 2) * h  # the two norm inputs and eh_proj's 2h input
    head = tokens * (2 * 2 * h + 4 * 1024)  # the head's input and its fp32 probabilities, once more
    assert last.activations - plain.activations == 2 * kept_input + eh_proj + head


def test_auto_parallelism_picks_a_tp_the_mamba_groups_allow():
    from workloads.spec import auto_training_spec

    model = mdl.load_model(_tiny(mamba={"heads": 8, "head_dim": 64, "state": 32, "groups": 1}))
    spec = auto_training_spec(model, gpus=8, domain_size=8, hbm_bytes=80e9)
    assert spec.parallelism.tp == 1


def test_context_parallel_mamba_blocks_trade_sequence_for_head_shards():
    """Megatron's MambaContextParallel: five all-to-alls (z, x, B, C, dt) after in_proj, one (y) after the
    scan, each a CP rank's local tensor; the scan does a rank's share of the work either way."""
    spec = mdl.load_model(_tiny())
    one = {op.name: op for op in mdl.layer_ops(spec, 0, micro_batch=2)}
    two = {op.name: op for op in mdl.layer_ops(spec, 0, micro_batch=2, cp=2)}
    for name in ("mamba_in_proj", "mamba_scan", "mamba_out_proj"):
        assert two[name].flops == pytest.approx(one[name].flops / 2), name
    tokens = 2 * 512 / 2
    comms = [(c.name, c.op, c.nbytes) for c in mdl.layer_comm(spec, 0, micro_batch=2, cp=2)]
    inner, state = 8 * 64, 32
    assert comms == [
        ("mamba_cp2hp_z", "alltoall", tokens * inner * 2),
        ("mamba_cp2hp_x", "alltoall", tokens * inner * 2),
        ("mamba_cp2hp_B", "alltoall", tokens * 2 * state * 2),
        ("mamba_cp2hp_C", "alltoall", tokens * 2 * state * 2),
        ("mamba_cp2hp_dt", "alltoall", tokens * 8 * 2),
        ("mamba_hp2cp_y", "alltoall", tokens * inner * 2),
    ]
    assert len(mdl.layer_comm(spec, 0, micro_batch=2, cp=2, phase="bwd")) == 6
    # with one group per TP rank and cp 4, each CP rank gets its own copy of B and C
    four = {c.name: c.nbytes for c in mdl.layer_comm(spec, 0, micro_batch=2, tp=2, sp=True, cp=4)}
    assert four["mamba_cp2hp_B"] == 2 * 512 / 4 * 1 * state * 4 * 2
    # a hybrid model trains with cp 2: the step runs, the same at both fidelities
    cp_spec = load_training_spec(
        {"kind": "training", "model": _tiny(), "parallelism": {"cp": 2, "dp": 4, "ep": 2},
         "batch": {"global_seqs": 16, "micro": 1}, "steps": 1},
        file="hybrid.yaml",
    )  # fmt: skip
    _, _, step = simulate(cp_spec, "gb200-nvl72.yaml")
    _, _, full = simulate(cp_spec, "gb200-nvl72.yaml", fidelity="full")
    assert step > 0 and step == pytest.approx(full, rel=1e-9)


def test_the_nemotron_3_rows_take_their_recipes():
    """Megatron-Bridge's perf recipes (perf_recipes/nemotronh/*): HybridEP everywhere; Nano on H100 in FP8
    recomputes whole MoE blocks; Super on DGX B300 in NVFP4 keeps 1 + 14 bf16 layers and recomputes the
    expert activations and norms; GB300 rows recompute nothing."""
    table, _ = load_table("workloads/reference/megatron_bridge_26x_runs.yaml")

    def plan(pattern: str) -> dict:
        [row] = select_rows(table, [pattern])
        return plan_row(row, table).spec

    nano = plan("*26.04-*Nemotron_3_Nano-DGX-H100*")
    assert nano["parallelism"]["ep_dispatch"] == "deepep"
    assert nano["parallelism"]["recompute_modules"] == ["moe", "layernorm", "core_attn", "moe_act"]
    b300 = plan("*26.04-*Nemotron_3_Super-DGX-B300-64-NVFP4*")
    assert b300["kernels"]["bf16_last_layers"] == 14
    assert b300["parallelism"]["recompute_modules"] == ["moe_act", "layernorm"]
    gb300 = plan("*26.04-*Nemotron_3_Super-DGX-GB300-64-MXFP8*")
    assert gb300["parallelism"]["recompute"] == "none" and gb300["parallelism"]["ep_dispatch"] == "deepep"


def _hybrid_case():
    from hypothesis import strategies as st

    pattern = st.text(alphabet="M*-E", min_size=2, max_size=12).filter(lambda p: "*" in p and "M" in p)
    return st.tuples(
        pattern,
        st.sampled_from([0, 1, 2]),
        st.booleans(),
        st.sampled_from([None, 32]),
        st.sampled_from([1, 2]),
    )


def test_random_hybrid_models_conserve_their_parameters():
    """Any pattern of blocks, with or without (shared) MTP and LatentMoE: the stages hold the model's
    parameters exactly once at tp = ep = pp = 1, and TP x EP shards add back up to them."""
    from hypothesis import given, settings

    @settings(max_examples=60, deadline=None)
    @given(_hybrid_case())
    def check(case):
        pattern, mtp, shared, latent, tp = case
        moe = {"experts": 8, "top_k": 2, "expert_ffn_hidden": 128, **({"latent": latent} if latent else {})}
        model = mdl.load_model(
            _tiny(
                layers=len(pattern),
                hybrid_pattern=pattern,
                moe=moe if "E" in pattern else None,
                mtp_layers=mtp if set(pattern) & set("-E") else 0,
                mtp_shared=shared,
            )
        )
        one = memory.stage_params(model)
        assert one.dense + one.experts == mdl.total_params(model)
        split = memory.stage_params(model, tp=tp, ep=2)
        assert split.experts * 2 == one.experts  # EP shards the routed experts

        # TP shards the rest but what every TP rank holds whole: norms, routers, latent projections, shared
        # experts (and MLA down-projections), per layer, the final norm and each stored MTP module's norms
        def whole(i: int) -> float:
            p = mdl.layer_params(model, i)
            return p.norms + p.router + p.latent_proj + p.shared_experts + p.attention_tp_duplicated

        mtp_whole = sum(whole(i) for i in model.mtp_block_layers()) + 3 * model.hidden
        kept = (
            sum(whole(i) for i in range(model.layers)) + model.hidden + model.mtp_stored_modules * mtp_whole
        )
        assert split.dense * tp == pytest.approx(one.dense + (tp - 1) * kept, rel=1e-12)

    check()
