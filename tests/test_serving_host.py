"""The serving engine's host thread (workloads/inference.py): per-sequence work and eager kernel launches,
overlapped with the GPU by one iteration, against closed forms."""

from __future__ import annotations

import itertools

import pytest
import yaml

from simcore.kernels.compute import ComputeModel
from simcore.profile import load_profile
from simcore.runner import RunOptions, run
from workloads.inference import (
    ITERATION_KERNELS,
    iteration_work,
    load_inference_spec,
    replica_costs,
    serving_kernels_per_layer,
)
from workloads.model import load_preset

PROFILE = "h100-dgx.yaml"


def _serve(tmp_path, sets=(), **spec):
    data = {"kind": "inference", "model": "llama3-8b", "precision": "fp8", **spec}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    return run(RunOptions(profile=PROFILE, workload=str(path), write_trace=False, sets=list(sets))).summary


def _gpu_times(output_tokens: int) -> tuple[float, list[float]]:
    """(prefill of 1,000 tokens, each decode after it) of llama3-8b fp8 on one H100, GPU time only."""
    costs = replica_costs(load_inference_spec({"model": "llama3-8b", "precision": "fp8"}, file="x"))
    model = ComputeModel(load_profile(PROFILE))
    prefill = model.time_fused(
        iteration_work(costs, [], [(0, 1000)], 1, row_tile=model.row_tile("fp8"))[0], "fp8", 1.0
    ).time_s
    decodes = [
        model.time_fused(
            iteration_work(costs, [1000 + i], [], 1, row_tile=model.row_tile("fp8"))[0], "fp8", 1.0
        ).time_s
        for i in range(1, output_tokens)
    ]
    return prefill, decodes


def test_without_host_cost_an_iteration_is_its_gpu_work(tmp_path):
    zero = ["calibration.serving_sequence_host_time=0us", "calibration.serving_kernel_host_time=0us"]
    s = _serve(tmp_path, sets=zero, requests={"count": 1, "input_tokens": 1000, "output_tokens": 4})
    prefill, decodes = _gpu_times(4)
    assert s["ttft_s_p50"] == pytest.approx(prefill, rel=1e-12)
    assert s["tpot_s_p50"] == pytest.approx(sum(decodes) / 3, rel=1e-12)
    assert s["host_wait_fraction"] == 0.0


def test_a_host_slower_than_the_gpu_sets_the_decode_pace(tmp_path):
    """Host work h per decode iteration, prepared while the GPU runs the one before: when h exceeds the GPU
    time, tokens come every h. The first decode's host work hides behind the (longer) prefill."""
    per_seq, per_kernel = 5e-3, 10e-6
    sets = [f"calibration.serving_sequence_host_time={per_seq * 1e6}us",
            f"calibration.serving_kernel_host_time={per_kernel * 1e6}us"]  # fmt: skip
    n = 11
    s = _serve(tmp_path, sets=sets, requests={"count": 1, "input_tokens": 1000, "output_tokens": n})
    costs = replica_costs(load_inference_spec({"model": "llama3-8b", "precision": "fp8"}, file="x"))
    prefill, decodes = _gpu_times(n)
    host_prefill = per_seq + costs.kernels * per_kernel
    host_decode = per_seq + per_kernel  # one graph launch
    assert max(decodes) < host_decode < prefill  # host-bound decodes; the prefill hides the first one's host
    assert s["ttft_s_p50"] == pytest.approx(host_prefill + prefill, rel=1e-12)
    # decode 1 follows the prefill at once; decode k >= 2 starts host_decode after decode k - 1 started
    assert s["tpot_s_p50"] == pytest.approx(((n - 2) * host_decode + decodes[-1]) / (n - 1), rel=1e-9)
    assert s["host_wait_fraction"] > 0.3  # the GPU idles ~2 of every 5 ms


def test_eager_decodes_issue_every_kernel(tmp_path):
    per_kernel = 40e-6
    sets = [
        "calibration.serving_sequence_host_time=0us",
        f"calibration.serving_kernel_host_time={per_kernel * 1e6}us",
    ]
    req = {"count": 1, "input_tokens": 1000, "output_tokens": 6}
    graphs = _serve(tmp_path, sets=sets, requests=req)
    eager = _serve(tmp_path, sets=sets, requests=req, scheduler={"cuda_graphs": False})
    costs = replica_costs(load_inference_spec({"model": "llama3-8b", "precision": "fp8"}, file="x"))
    prefill, decodes = _gpu_times(6)
    host = costs.kernels * per_kernel
    assert host > prefill > max(decodes)  # ~420 launches outlast the prefill and every decode
    assert graphs["tpot_s_p50"] == pytest.approx(sum(decodes) / 5, rel=1e-9)
    # eager: every iteration starts `host` after the one before started (the prefill's first token at
    # host + prefill, the last at 6 x host + its decode)
    assert eager["tpot_s_p50"] == pytest.approx(host + (decodes[-1] - prefill) / 5, rel=1e-9)
    assert eager["workload"]["scheduler"]["cuda_graphs"] is False


def test_more_host_time_is_never_faster(tmp_path):
    req = {"count": 256, "input_tokens": 128, "output_tokens": 64}
    rates = [
        _serve(tmp_path, sets=[f"calibration.serving_sequence_host_time={us}us"], requests=req,
               scheduler={"max_num_seqs": 256})["tokens_per_s"]
        for us in (0, 10, 40, 160)
    ]  # fmt: skip
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert rates[-1] < 0.8 * rates[0]  # 256 sequences x 160 us = 41 ms of host work per iteration


def test_kernel_counts_follow_the_layer_structure():
    dense = load_preset("llama3-8b")
    base = serving_kernels_per_layer(dense, 0, 1, "bf16")
    assert serving_kernels_per_layer(dense, 0, 2, "bf16") == base + 2  # two all-reduces
    assert serving_kernels_per_layer(dense, 0, 1, "fp8") == base + 4  # a quantisation per GEMM input
    moe = load_preset("qwen3-30b-a3b")  # QK-norm, 128 experts in every layer
    assert serving_kernels_per_layer(moe, 0, 1, "bf16") > base
    costs = replica_costs(load_inference_spec({"model": "qwen3-30b-a3b", "precision": "fp4"}, file="x"))
    # 2 norms + RoPE + attention + (QKV, out) x (quantise, GEMM) + QK-norm 2 + MoE 7 + 2 quantisations
    assert serving_kernels_per_layer(moe, 0, 1, "fp4") == 2 + 1 + 1 + 2 * 2 + 2 + 7 + 2
    assert costs.kernels == moe.layers * 19 + ITERATION_KERNELS
    mla = load_preset("deepseek-v3")  # MLA: five attention GEMMs and two latent norms, no QK-norm
    dense_mla = serving_kernels_per_layer(mla, 0, 1, "bf16")  # its first layers are dense
    assert dense_mla == 2 + 1 + 1 + 5 + 2 + 3


def test_the_experts_run_at_the_width_of_one_expert():
    """A routed expert's GEMM is as narrow as its FFN (768 for Qwen3-30B-A3B): prefill of many tokens is
    slower than if the top-k experts formed one wide GEMM."""
    spec = load_inference_spec({"model": "qwen3-30b-a3b", "precision": "fp8"}, file="x")
    costs = replica_costs(spec)
    assert costs.routed_min_dim == 768
    assert costs.gemm_min_dim == 2048  # the attention projections: hidden
    work, _ = iteration_work(costs, [], [(0, 8192)], 1, row_tile=1)
    assert all(item[2] != 768 for item in work)  # the experts are not in the layer's own work


def test_expert_parallel_keeps_each_expert_whole():
    def costs(**par):
        return replica_costs(
            load_inference_spec(
                {"model": "qwen3-235b-a22b", "precision": "fp8", "parallelism": par}, file="x"
            )
        )

    tensor, expert = costs(tp=8), costs(tp=8, ep=8)
    assert tensor.routed_min_dim == 1536 / 8 and expert.routed_min_dim == 1536
    # balanced routing: the same bytes and FLOPs per GPU either way
    assert expert.routed_expert_bytes == tensor.routed_expert_bytes
    assert expert.routed_flops_per_token_layer == tensor.routed_flops_per_token_layer
    model = ComputeModel(load_profile("h200-hgx.yaml"))
    from workloads.inference import routed_work

    prefill = [
        model.time_fused(routed_work(c, 8192, row_tile=1), "fp8", 1.0).time_s for c in (tensor, expert)
    ]
    assert prefill[1] < prefill[0]  # 192-wide shards run far below the GEMM's large-shape efficiency


@pytest.mark.parametrize(
    ("model", "par", "message"),
    [
        ("llama3-8b", {"tp": 2, "ep": 2}, "1 for a dense model"),
        ("qwen3-30b-a3b", {"tp": 4, "ep": 3}, "a divisor of tp = 4"),
    ],
)
def test_bad_expert_parallel_sizes_are_one_line(model, par, message):
    from simcore.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as exc:
        load_inference_spec({"model": model, "parallelism": par}, file="serve.yaml")
    assert "parallelism.ep" in str(exc.value) and "\n" not in str(exc.value)


def test_an_idle_replica_charges_the_host_again_when_a_request_arrives(tmp_path):
    """Two requests 10 s apart on an otherwise idle server: each TTFT is the host's prefill work plus the
    prefill, the second's host work not hidden behind the first request's long-finished iterations."""
    trace = tmp_path / "arrivals.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n0.0,1000,4\n10.0,1000,4\n")
    per_seq, per_kernel = 5e-3, 10e-6
    sets = [f"calibration.serving_sequence_host_time={per_seq * 1e6}us",
            f"calibration.serving_kernel_host_time={per_kernel * 1e6}us"]  # fmt: skip
    s = _serve(tmp_path, sets=sets, requests={"trace": str(trace)})
    costs = replica_costs(load_inference_spec({"model": "llama3-8b", "precision": "fp8"}, file="x"))
    prefill, _ = _gpu_times(2)
    host = per_seq + costs.kernels * per_kernel
    assert s["ttft_s_p50"] == pytest.approx(host + prefill, rel=1e-9)
    assert s["ttft_s_p99"] == pytest.approx(host + prefill, rel=1e-9)


def test_attention_dp_takes_no_expert_parallel_size():
    from simcore.errors import ConfigError

    with pytest.raises(ConfigError, match="1 with attention_dp"):
        load_inference_spec(
            {"model": "qwen3-30b-a3b", "parallelism": {"tp": 2, "ep": 2, "attention_dp": True}}, file="s.yaml"
        )
