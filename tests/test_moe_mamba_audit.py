"""Audit of the MoE and hybrid Mamba-2 layers against closed forms derived by hand: the SSD scan's
backward traffic kernel by kernel (mamba_ssm's _mamba_chunk_scan_combined_bwd), the gate Megatron's
memory-efficient path runs inside the scan, what a Mamba-2 block keeps for its backward, and the MoE
op list (router, expert GEMMs, all-to-all volumes, LatentMoE widths)."""

from __future__ import annotations

import pytest

from workloads import memory
from workloads import model as mdl

NANO = "nemotron-3-nano-30b-a3b"
SUPER = "nemotron-3-super-120b-a12b"


def _ops(spec: mdl.ModelSpec, layer: int, phase: str, **kw: object) -> dict[str, mdl.Op]:
    return {op.name: op for op in mdl.layer_ops(spec, layer, phase=phase, **kw)}


def test_ssd_scan_backward_bytes_kernel_by_kernel_for_nemotron_3_nano():
    # Nano, one GPU: 64 heads of 64 (I = 4096), state N = 128 in G = 8 groups, chunk Q = 128.
    nano = mdl.load_preset(NANO)
    a, f = 2, 4
    inner, states, gn, cb, heads = 4096, 4096 * 128 // 128, 8 * 128, 8 * 128, 64
    kernels = [
        heads * (a + 2 * f),  # chunk cumsum again
        2 * gn * a + cb * f,  # C·Bᵀ again (fp32)
        gn * a + inner * a + 2 * heads * f + states * f,  # chunk states again (fp32)
        2 * states * f,  # state passing again
        6 * inner * a,  # gate backward: x, z, ungated y, dout -> dz, ungated dout
        gn * a + inner * a + states * f,  # dstates
        states * (2 * f + 2 * a),  # state passing backward
        4 * inner * a + cb * f + gn * a + states * a + heads * f,  # dx, ddt, dD
        inner * a + states * a + gn * a + 3 * gn * f,  # dB
        inner * a + states * a + gn * a + 3 * gn * f,  # dC
        2 * inner * a + 3 * cb * f,  # d(C·Bᵀ)
        2 * (2 * gn * a + gn * f + cb * f),  # dB, dC += products with d(C·Bᵀ)
        2 * inner * a + cb * f + heads * f,  # ddA
    ]
    assert sum(kernels) == 376_448
    assert mdl.ssd_scan_bwd_bytes(nano) == 376_448
    # TP splits heads and groups: half of everything
    assert mdl.ssd_scan_bwd_bytes(nano, tp=2) == 376_448 / 2
    # the backward op of one micro-batch (2 x 8,192 tokens) moves exactly that: ~3.1x its forward, where a
    # plain "2x the forward" undercounted it by ~1.7x
    tokens = 2 * 8192
    fwd, bwd = _ops(nano, 0, "fwd", micro_batch=2), _ops(nano, 0, "bwd", micro_batch=2)
    assert bwd["mamba_scan"].nbytes == pytest.approx(tokens * 376_448, rel=1e-12)
    assert 3.0 < bwd["mamba_scan"].nbytes / fwd["mamba_scan"].nbytes < 3.5
    # the FLOPs keep flash attention's 2.5x (recomputed states and C·Bᵀ, then the gradient products)
    assert bwd["mamba_scan"].flops == pytest.approx(2.5 * fwd["mamba_scan"].flops)


def test_the_scan_applies_the_gate_and_the_group_norm_reads_only_y():
    # Megatron's _ssm_training passes z to mamba_split_conv1d_scan_combined and calls its RMSNormGated
    # without z: the chunk scan reads z and writes the gated and the ungated y; the norm reads y, writes one.
    nano = mdl.load_preset(NANO)
    tokens, inner, a = 8192, 4096, 2
    fwd, bwd = _ops(nano, 0, "fwd", micro_batch=1), _ops(nano, 0, "bwd", micro_batch=1)
    _, scan_bytes = mdl.ssd_scan_cost(nano)
    assert fwd["mamba_scan"].nbytes == pytest.approx(tokens * (scan_bytes + 2 * inner * a), rel=1e-12)
    assert fwd["mamba_gated_norm"].nbytes == tokens * inner * 2 * a  # y in, normed y out
    assert bwd["mamba_gated_norm"].nbytes == tokens * inner * 3 * a  # y and dy in, dy's input out
    # serving's prefill keeps the plain scan cost (no gate inside)
    assert scan_bytes == 106_624


@pytest.mark.parametrize(("gemm_bytes", "tp"), [(2.0, 1), (1.0, 1), (2.0, 2)])
def test_mamba_block_activation_bytes_in_closed_form(gemm_bytes, tp):
    # Kept per token: the block norm's input (2h) and in_proj's input (g·h), whole on every TP rank without
    # SP; per rank in_proj's output z, x, B, C, dt (2·(2I + 2GN + H)), the fused kernel's ungated y (2I),
    # the group norm's input, the gated y (2I), and out_proj's input (g·I).
    nano = mdl.load_preset(NANO)
    h, inner, gn, heads = 2688, 4096, 8 * 128, 64
    per_token = (2 + gemm_bytes) * h + (2 * (2 * inner + 2 * gn + heads) + 2 * inner + 2 * inner) / tp
    per_token += gemm_bytes * inner / tp
    got = memory.layer_activation_bytes(nano, 0, micro_batch=1, tp=tp, gemm_input_bytes=gemm_bytes)
    assert got == pytest.approx(8192 * per_token, rel=1e-12)


def test_nano_moe_layer_ops_in_closed_form():
    # EP 8 on one micro-batch of 8,192 tokens, no TP: each rank routes its tokens to top-6 of 128 experts
    # and holds 16 of them; expert MLPs are squared ReLU (not gated), the shared expert 3,712 wide.
    nano = mdl.load_preset(NANO)
    t, k, h, f, e = 8192, 6, 2688, 1856, 128
    ops = _ops(nano, 1, "fwd", micro_batch=1, ep=8, ep_dispatch="deepep")
    assert ops["router"].gemm_mnk == (t, e, h)
    assert ops["expert_mlp_up"].gemm_mnk == (t * k // 16, f, h) and ops["expert_mlp_up"].count == 16
    assert ops["expert_mlp_up"].flops == 2 * t * k * f * h
    assert ops["expert_mlp_down"].gemm_mnk == (t * k // 16, h, f)
    assert ops["shared_expert_up"].gemm_mnk == (t, 3712, h)
    comm = {c.name: c for c in mdl.layer_comm(nano, 1, micro_batch=1, ep=8, ep_dispatch="deepep")}
    assert comm["moe_dispatch"].nbytes == comm["moe_combine"].nbytes == t * k * h * 2
    # the op FLOPs of the GEMMs are 2x the active parameters the tokens touch (the router included)
    gemm = sum(op.flops for op in ops.values() if op.kind == "gemm")
    p = mdl.layer_params(nano, 1)
    assert gemm == pytest.approx(2 * t * (p.active_routed + p.shared_experts + p.router), rel=1e-12)


def test_super_latent_moe_widths_in_closed_form():
    # LatentMoE: 512 experts of 2,688 in a 1,024-wide latent, top-22; TP 2 with SP, EP 64: the expert layer
    # runs on 8,192 / 2 tokens, dispatches latent-wide copies and projects down and back at full width.
    sup = mdl.load_preset(SUPER)
    t, k, h, lat, f = 8192 // 2, 22, 4096, 1024, 2688
    kw = {"micro_batch": 1, "tp": 2, "sp": True, "ep": 64, "ep_dispatch": "deepep"}
    ops = _ops(sup, 1, "fwd", **kw)
    assert ops["moe_latent_down"].gemm_mnk == (t, lat, h)
    assert ops["moe_latent_up"].gemm_mnk == (t, h, lat)
    assert ops["expert_mlp_up"].gemm_mnk == (t * k // 8, f, lat) and ops["expert_mlp_up"].count == 8
    comm = {c.name: c for c in mdl.layer_comm(sup, 1, **kw)}
    assert comm["moe_dispatch"].nbytes == t * k * lat * 2
    # parameters: 512 experts of 2·1024·2688, one shared expert of 2·4096·5376, router 4096·512, the two
    # latent projections 2·4096·1024
    p = mdl.layer_params(sup, 1)
    assert p.routed_experts == 512 * 2 * lat * f and p.active_routed == 22 * 2 * lat * f
    assert p.shared_experts == 2 * h * 5376 and p.router == h * 512 and p.latent_proj == 2 * h * lat


def test_mamba_conv_backward_moves_five_conv_width_tensors():
    # causal_conv1d in Megatron's memory-efficient path: the forward reads x, B, C and writes the conv
    # output (2 tensors of d_in + 2·G·N channels); the backward runs that forward again, then
    # causal_conv1d_bwd reads x, B, C and the output gradient and writes the input gradient (3 more).
    nano = mdl.load_preset(NANO)
    tokens, channels, a = 8192, 4096 + 2 * 8 * 128, 2
    fwd, bwd = _ops(nano, 0, "fwd", micro_batch=1), _ops(nano, 0, "bwd", micro_batch=1)
    assert fwd["mamba_conv"].nbytes == tokens * channels * 2 * a
    assert bwd["mamba_conv"].nbytes == tokens * channels * 5 * a


def test_the_router_gemm_runs_in_bf16_under_an_fp8_recipe():
    """Megatron-Core's router gating GEMM is a plain matmul in the router's dtype, outside Transformer
    Engine's FP8 autocast: under an fp8 job it is a segment of its own in bf16 (and takes bf16's time),
    while the expert GEMMs stay in fp8; a bf16 job needs no separate segment."""
    from sim_helpers import qwen3_moe_spec

    from workloads.spec import with_overrides
    from workloads.training import layer_segments

    spec = qwen3_moe_spec()
    for phase in ("fwd", "bwd"):
        segs = [s for s in layer_segments(spec, 0, phase) if getattr(s, "work", ())]
        router = [s for s in segs if s.name.endswith(":moe") and len(s.work) == 1 and s.dtype == "bf16"]
        assert len(router) == 1
        experts = [s for s in segs if s.name.endswith(":moe") and len(s.work) > 1]
        assert experts and all(s.dtype == "" for s in experts)  # the job's fp8
    bf16 = with_overrides(spec, precision="bf16")
    assert all(s.dtype == "" for s in layer_segments(bf16, 0, "fwd") if getattr(s, "work", ()))
