"""Serving physics found wrong in an audit of workloads/inference.py: each test states the closed form the
iteration cost must follow."""

from __future__ import annotations

import pytest
import yaml

from simcore.kernels.compute import KIND_ATTENTION
from workloads.inference import iteration_work, load_inference_spec, replica_costs


def _costs(model: str, **spec):
    return replica_costs(load_inference_spec({"model": model, "precision": "fp8", **spec}, file="x"))


@pytest.mark.parametrize("attention_dp", [False, True])
def test_mla_prefill_attention_counts_its_per_head_widths_not_the_latent(attention_dp):
    """MLA prefill runs flash attention per head (DeepSeek-V3: query-key 192, value 128; the absorbed
    576-wide latent is decode's): a causal 4,096-token prompt costs 2·(n²/2)·heads·(192 + 128) FLOPs per
    layer, 3.6x less than attending in the latent."""
    tp, n = 8, 4096
    c = _costs("deepseek-v3", parallelism={"tp": tp, "attention_dp": attention_dp})
    work, _ = iteration_work(c, [], [(0, n)], 1, row_tile=1)
    attention = [op for op in work if op[3] == KIND_ATTENTION]
    assert len(attention) == c.layers
    heads = 128 / (1 if attention_dp else tp)
    assert attention[0][0] == pytest.approx(2.0 * (n * n / 2) * heads * (192 + 128), rel=1e-12)


def test_gqa_prefill_attention_is_unchanged_by_the_per_head_widths():
    """Llama 3 8B: 4·keys·heads·head_dim (QK^T and PV at 128 each), 32 heads on one GPU."""
    c = _costs("llama3-8b")
    work, _ = iteration_work(c, [], [(1000, 500)], 1, row_tile=1)
    attention = [op for op in work if op[3] == KIND_ATTENTION]
    keys = 500 * (1000 + 250)
    assert attention[0][0] == 4.0 * keys * 32 * 128


def test_a_hybrid_block_all_reduces_once_over_tp(tmp_path):
    """A hybrid block has one mixer (Mamba, attention or MLP) and so one row-parallel output to all-reduce,
    as training's forward counts; a transformer layer two. Nemotron-H 8B at tp 2: 52 all-reduces per
    iteration, not 104; a lone request's TTFT (no host work) is its kernels plus those all-reduces."""
    from simcore.cluster import Cluster
    from simcore.collectives import CollectiveModel
    from simcore.kernels.compute import ComputeModel
    from simcore.profile import load_profile
    from simcore.runner import RunOptions, run
    from workloads.model import layer_comm, load_preset

    model = load_preset("nemotron-h-8b")
    training = sum(
        1
        for i in range(model.layers)
        for comm in layer_comm(model, i, micro_batch=1, seq_len=16, tp=2)
        if comm.op == "allreduce"
    )
    assert training == model.layers == 52
    c = _costs("nemotron-h-8b", parallelism={"tp": 2})

    spec = {"kind": "inference", "model": "nemotron-h-8b", "precision": "fp8", "parallelism": {"tp": 2}}
    spec["requests"] = {"count": 1, "input_tokens": 512, "output_tokens": 2}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(spec))
    zero = ["calibration.serving_sequence_host_time=0us", "calibration.serving_kernel_host_time=0us"]
    s = run(RunOptions(profile="h100-dgx.yaml", workload=str(path), write_trace=False, sets=zero)).summary
    prof = load_profile("h100-dgx.yaml")
    work, ar_bytes = iteration_work(c, [], [(0, 512)], 1, row_tile=ComputeModel(prof).row_tile("fp8"))
    cluster = Cluster(prof, racks=1)
    allreduce = CollectiveModel(prof, cluster).time("allreduce", ar_bytes, cluster.layout([0, 1])).time_s
    expected = ComputeModel(prof).time_fused(work, "fp8", 1.0).time_s + 52 * allreduce
    assert s["ttft_s_p50"] == pytest.approx(expected, rel=1e-9)
    assert c.tp_allreduces == 52 and _costs("llama3-8b", parallelism={"tp": 2}).tp_allreduces == 2 * 32


def test_fp4_weights_run_their_attention_at_fp8(tmp_path):
    """There is no FP4 flash-attention kernel: under NVFP4 weights the prefill attention runs at FP8 (half
    the FP4 tensor rate on a B200). A lone Llama 3.3 70B prompt of 8,192 tokens (no host work): its TTFT is
    the GEMMs at FP4 plus the attention at FP8, longer than with the attention at FP4."""
    from simcore.kernels.compute import ComputeModel
    from simcore.profile import load_profile
    from simcore.runner import RunOptions, run

    n = 8192
    spec = {"kind": "inference", "model": "llama3-70b", "precision": "fp4", "kv_cache": {"precision": "fp8"}}
    spec["requests"] = {"count": 1, "input_tokens": n, "output_tokens": 2}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(spec))
    zero = ["calibration.serving_sequence_host_time=0us", "calibration.serving_kernel_host_time=0us"]
    s = run(RunOptions(profile="b200-dgx.yaml", workload=str(path), write_trace=False, sets=zero)).summary
    model = ComputeModel(load_profile("b200-dgx.yaml"))
    c = _costs("llama3-70b", precision="fp4", kv_cache={"precision": "fp8"})
    work, _ = iteration_work(c, [], [(0, n)], 1, row_tile=model.row_tile("fp4"))
    rest = tuple(op for op in work if op[3] != KIND_ATTENTION)
    attention = tuple(op for op in work if op[3] == KIND_ATTENTION)
    assert len(attention) == c.layers
    gemms = model.time_fused(rest, "fp4", 1.0).time_s
    fp8, fp4 = (model.time_fused(attention, dtype, 1.0).time_s for dtype in ("fp8", "fp4"))
    assert s["ttft_s_p50"] == pytest.approx(gemms + fp8, rel=1e-9)
    assert fp8 > 1.5 * fp4  # compute-bound: the FP8 rate is half the FP4 one (efficiencies differ)
    # the attention's executed FLOPs never beat the FP8 tensor peak
    flops = sum(op[0] for op in attention)
    assert flops / fp8 < load_profile("b200-dgx.yaml").peak_flops("fp8")


def test_mla_decode_attention_with_every_head_on_a_gpu_is_bound_by_its_flops():
    """MLA's absorbed decode attention (DeepSeek-V3 under attention DP: 128 heads on each GPU, a 576-wide
    FP8 latent per cached token) does 4·128·576 FLOPs per 576 cached bytes, ~512 FLOPs/byte: compute-bound
    (FlashMLA), not HBM-bound. 64 sequences of 4,096 tokens: the op takes at least its FLOPs at the FP8
    tensor peak times the GEMM efficiency, ~1.8x its HBM time; a GQA model's (~16 FLOPs/byte) stays at its
    HBM time."""
    from simcore.kernels.compute import ComputeModel
    from simcore.profile import load_profile

    prof = load_profile("h200-hgx.yaml")
    model = ComputeModel(prof)
    peak = prof.peak_flops("fp8") * prof.calibration.gemm["fp8"].max_efficiency
    hbm = prof.accelerator.hbm_bandwidth * prof.calibration.hbm_efficiency
    fp8_cache = {"precision": "fp8"}
    mla = _costs("deepseek-v3", parallelism={"tp": 8, "attention_dp": True}, kv_cache=fp8_cache)
    gqa = _costs("llama3-70b", kv_cache=fp8_cache)
    for c, bound in ((mla, "flops"), (gqa, "bytes")):
        work, _ = iteration_work(c, [4096] * 64, [], 64, row_tile=1)
        decode = work[1]  # each layer: its GEMMs, then the decode attention
        flops, nbytes = decode[0], decode[1]
        assert nbytes == pytest.approx(64 * 4096 * c.kv_bytes_per_token_layer, rel=1e-12)
        t = model.time_fused((decode,), "fp8", 1.0).time_s - prof.accelerator.kernel_overhead
        if bound == "flops":
            assert flops / nbytes == pytest.approx(4 * 128 * 576 / 576, rel=1e-12)
            assert t >= flops / peak > 1.5 * nbytes / hbm
        else:
            assert t == pytest.approx(nbytes / hbm, rel=1e-9)


@pytest.mark.parametrize(
    ("model", "precision", "tp", "published_gb"),
    [
        # nvidia/Llama-3.1-8B-Instruct-FP8 (TensorRT Model Optimizer): 9.08 GB of safetensors
        ("llama3-8b", "fp8", 1, 9.08),
        # the same model in bf16: 16.06 GB (meta-llama/Llama-3.1-8B-Instruct)
        ("llama3-8b", "bf16", 1, 16.06),
    ],
)
def test_quantized_checkpoints_keep_embedding_and_lm_head_in_16_bit(model, precision, tp, published_gb):
    """FP8 / NVFP4 checkpoints quantize the layers' linear weights only (ModelOpt's exclude_modules names
    lm_head; the embedding is a lookup): the weights a GPU holds match the published checkpoint, and the
    LM head a decode step reads is 2 bytes per parameter whatever the weight precision."""
    c = _costs(model, precision=precision, parallelism={"tp": tp})
    assert c.weights_per_gpu * tp / 1e9 == pytest.approx(published_gb, rel=0.01)
    assert c.lm_head_bytes == pytest.approx(128256 * 4096 * 2.0 / tp, rel=1e-12)
    fp4 = _costs("llama3-70b", precision="fp4", parallelism={"tp": 4})
    assert fp4.lm_head_bytes == pytest.approx(128256 * 8192 * 2.0 / 4, rel=1e-12)
