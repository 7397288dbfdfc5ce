"""Inference serving (workloads/inference.py): the scheduler against closed forms, physics and published
TensorRT-LLM throughput."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import yaml

from simcore.errors import CapacityError, ConfigError
from simcore.kernels.compute import ComputeModel
from simcore.profile import load_profile
from simcore.runner import RunOptions, run
from workloads.inference import iteration_work, load_inference_spec, replica_costs

DESIGN_KEYS = (
    "step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "model_tflops_per_gpu", "mfu", "gpus",
    "exposed_comm_fraction", "bubble_fraction", "peak_hbm_bytes", "avg_it_power_w", "peak_it_power_w",
    "facility_power_w", "pue", "energy_per_token_j", "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99",
    "requests_per_s",
)  # fmt: skip


def _serve(tmp_path, profile="h100-dgx.yaml", sets=(), seed=0, **spec):
    data = {"kind": "inference", "model": "llama3-8b", "precision": "fp8", **spec}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    return run(
        RunOptions(profile=profile, workload=str(path), write_trace=False, sets=list(sets), seed=seed)
    ).summary


def test_a_lone_request_takes_one_prefill_then_one_decode_per_token(tmp_path):
    s = _serve(tmp_path, requests={"count": 1, "input_tokens": 1000, "output_tokens": 3})
    spec = load_inference_spec({"model": "llama3-8b", "precision": "fp8"}, file="x")
    costs, model = replica_costs(spec), ComputeModel(load_profile("h100-dgx.yaml"))
    prefill = model.time_fused(
        iteration_work(costs, [], [(0, 1000)], 1, row_tile=model.row_tile("fp8"))[0], "fp8", 1.0
    ).time_s
    decode1 = model.time_fused(
        iteration_work(costs, [1001], [], 1, row_tile=model.row_tile("fp8"))[0], "fp8", 1.0
    ).time_s
    decode2 = model.time_fused(
        iteration_work(costs, [1002], [], 1, row_tile=model.row_tile("fp8"))[0], "fp8", 1.0
    ).time_s
    # the prefill runs eager: the host first prepares the one sequence and issues every kernel; the decodes
    # replay a graph, prepared while the GPU runs the iteration before (hidden)
    cal = load_profile("h100-dgx.yaml").calibration
    host = cal.serving_sequence_host_time + costs.kernels * cal.serving_kernel_host_time
    assert host > 1e-3  # ~400 kernels of ~10 us
    assert s["ttft_s_p50"] == pytest.approx(host + prefill, rel=1e-12)
    assert s["tpot_s_p50"] == pytest.approx((decode1 + decode2) / 2, rel=1e-12)
    assert s["iterations"] == 3 and s["requests_completed"] == 1
    # batch-1 decode reads every weight once: at least weights / HBM bandwidth, and not far above it
    hbm = load_profile("h100-dgx.yaml").accelerator.hbm_bandwidth
    floor = costs.weights_per_gpu / hbm
    assert floor < decode1 < 1.5 * floor / 0.85


def test_more_hbm_bandwidth_never_slows_decoding(tmp_path):
    req = {"count": 16, "input_tokens": 256, "output_tokens": 32}
    tpots = [
        _serve(tmp_path, sets=[f"accelerator.hbm_bandwidth={bw} TB/s"], requests=req)["tpot_s_p50"]
        for bw in (2.0, 3.35, 5.0, 8.0)
    ]
    assert all(a > b for a, b in itertools.pairwise(tpots))


def test_batching_trades_latency_for_throughput(tmp_path):
    req = {"count": 128, "input_tokens": 128, "output_tokens": 64}
    small = _serve(tmp_path, scheduler={"max_num_seqs": 4}, requests=req)
    large = _serve(tmp_path, scheduler={"max_num_seqs": 64}, requests=req)
    assert large["tokens_per_s"] > 4 * small["tokens_per_s"]  # decode is weight-bound: batching is ~free
    assert large["tpot_s_p50"] > small["tpot_s_p50"]


def test_an_underloaded_server_serves_the_offered_rate_and_a_seed_fixes_the_arrivals(tmp_path):
    req = {"count": 300, "rate": 20.0, "input_tokens": 256, "output_tokens": 32}
    a = _serve(tmp_path, requests=req, seed=1)
    assert a["requests_per_s"] == pytest.approx(20.0, rel=0.12)  # 300 Poisson arrivals: ~6 % noise
    b = _serve(tmp_path, requests=req, seed=1)
    assert {k: v for k, v in b.items() if k != "wall_time_s"} == {
        k: v for k, v in a.items() if k != "wall_time_s"
    }
    assert _serve(tmp_path, requests=req, seed=2)["ttft_s_p99"] != a["ttft_s_p99"]
    assert all(a[k] is not None for k in DESIGN_KEYS), [k for k in DESIGN_KEYS if a[k] is None]


def test_chunked_prefill_splits_a_long_prompt_into_budget_sized_iterations(tmp_path):
    s = _serve(
        tmp_path,
        scheduler={"chunked_prefill": True, "max_batch_tokens": 1024},
        requests={"count": 1, "input_tokens": 4096, "output_tokens": 2},
    )
    spec = load_inference_spec({"model": "llama3-8b", "precision": "fp8"}, file="x")
    costs, model = replica_costs(spec), ComputeModel(load_profile("h100-dgx.yaml"))
    chunks = [
        model.time_fused(
            iteration_work(costs, [], [(p, 1024)], int(p == 3072), row_tile=model.row_tile("fp8"))[0],
            "fp8",
            1.0,
        ).time_s
        for p in (0, 1024, 2048, 3072)
    ]
    # each chunk attends to the cache so far; the host issues the first chunk's kernels before it runs and
    # the later ones' while the chunk before runs (shorter than a chunk)
    cal = load_profile("h100-dgx.yaml").calibration
    host = cal.serving_sequence_host_time + costs.kernels * cal.serving_kernel_host_time
    assert host < chunks[0]
    assert s["ttft_s_p50"] == pytest.approx(host + sum(chunks), rel=1e-12)
    assert chunks[3] > chunks[0]
    whole = _serve(tmp_path, scheduler={"chunked_prefill": False, "max_batch_tokens": 1024},
                   requests={"count": 1, "input_tokens": 4096, "output_tokens": 2})  # fmt: skip
    assert whole["iterations"] == 2  # a prompt longer than the budget runs alone, in one iteration


def test_the_kv_cache_bounds_concurrency_and_a_request_too_long_is_one_line(tmp_path):
    s = _serve(tmp_path, requests={"count": 400, "input_tokens": 4000, "output_tokens": 64})
    assert 0 < s["kv_cache_peak_bytes"] <= s["kv_cache_capacity_bytes"]
    assert s["peak_hbm_bytes"] <= 0.9 * 80e9 * (1 + 1e-9)
    # 93 % of the H100's 80 GB: room for Llama 3.3 70B's 72.7 GB of FP8 weights (16-bit embedding and head)
    roomy = {"memory_fraction": 0.93}
    with pytest.raises(CapacityError, match="KV cache") as exc:
        _serve(
            tmp_path,
            model="llama3-70b",
            precision="bf16",
            kv_cache=roomy,
            requests={"count": 1, "input_tokens": 100, "output_tokens": 10},
        )
    assert str(exc.value).endswith("try tp: 2 or precision: fp8")  # 141 GB of weights: the cache cannot help
    with pytest.raises(CapacityError) as exc:  # 72.7 GB of FP8 weights fit; a 20k-token bf16 cache does not
        _serve(
            tmp_path,
            model="llama3-70b",
            kv_cache=roomy,
            requests={"count": 1, "input_tokens": 20000, "output_tokens": 10},
        )
    # 1.7 GB are left: an fp8 cache (3.3 GB) would not fit either, so only what does fit is suggested
    assert str(exc.value).endswith("try tp: 2")
    with pytest.raises(CapacityError) as exc:  # 6,000 tokens: 1.97 GB in bf16, 0.98 GB in fp8 (fits)
        _serve(
            tmp_path,
            model="llama3-70b",
            kv_cache=roomy,
            requests={"count": 1, "input_tokens": 6000, "output_tokens": 10},
        )
    assert str(exc.value).endswith("try tp: 2 or kv_cache.precision: fp8")
    # FP8 weights that still do not fit: the remedy is the narrower format the GPU runs, if any
    one_request = {"count": 1, "input_tokens": 100, "output_tokens": 10}
    kv8 = {"precision": "fp8"}
    with pytest.raises(CapacityError) as exc:
        _serve(tmp_path, model="llama3-405b", parallelism={"tp": 4}, kv_cache=kv8, requests=one_request)
    assert str(exc.value).endswith("try tp: 8")  # an H100 has no FP4: no precision to suggest
    with pytest.raises(CapacityError) as exc:  # weights alone over HBM: a narrower cache cannot help
        _serve(tmp_path, model="llama3-405b", precision="bf16", parallelism={"tp": 8}, requests=one_request)
    assert str(exc.value).endswith("try tp: 16 or precision: fp8")
    with pytest.raises(CapacityError) as exc:
        _serve(
            tmp_path,
            "b200-dgx.yaml",
            model="llama3-405b",
            parallelism={"tp": 2},
            kv_cache=kv8,
            requests=one_request,
        )
    assert str(exc.value).endswith("try tp: 4 or precision: fp4")


# TensorRT-LLM v1.0 performance overview (shared/reference/inference_runs.yaml): offline, fixed lengths,
# FP8 weights and (as its FP8 checkpoints ship) FP8 KV cache, H100 SXM. racksim within 25 %.
TRTLLM = [
    ("llama3-8b", 1, 1000, 1000, 15220),
    ("llama3-8b", 1, 2048, 128, 3450),
    ("llama3-70b", 2, 128, 128, 6378),
]


@pytest.mark.parametrize("model,tp,isl,osl,measured", TRTLLM)
def test_offline_throughput_is_near_tensorrt_llm(tmp_path, model, tp, isl, osl, measured):
    s = _serve(
        tmp_path,
        model=model,
        parallelism={"tp": tp},
        kv_cache={"precision": "fp8"},
        scheduler={"max_num_seqs": 512, "max_batch_tokens": 8192},
        requests={"count": 600, "input_tokens": isl, "output_tokens": osl},
    )
    assert s["tokens_per_s"] == pytest.approx(measured, rel=0.25)


@pytest.mark.parametrize(
    "extra,where",
    [
        ({"parallelism": {"tp": 3}}, "parallelism.tp"),
        ({"parallelism": {"pp": 2}}, "parallelism.pp"),
        ({"schedular": {}}, "did you mean 'scheduler'?"),
        ({"requests": {"rate": 0}}, "requests.rate"),
        ({"precision": "fp4"}, "fp4"),
    ],
)
def test_bad_serving_specs_are_one_line(tmp_path, extra, where):
    with pytest.raises(ConfigError) as info:
        _serve(tmp_path, **extra)
    assert where in str(info.value) and "\n" not in str(info.value)


def test_the_energy_per_token_does_not_count_idle_time_before_the_first_request(tmp_path):
    # the same three requests, their trace clock starting at 0 or at 60 s: the same run; and the energy per
    # token is the facility power over the served span (a Poisson stream's wait for its first request too)
    rows = [(0.0, 300, 8), (0.05, 200, 4), (0.1, 100, 6)]
    out = []
    for start in (0.0, 60.0):
        trace = tmp_path / f"from{start:g}.csv"
        trace.write_text(
            "arrival_s,input_tokens,output_tokens\n" + "".join(f"{start + t},{i},{o}\n" for t, i, o in rows)
        )
        out.append(_serve(tmp_path, requests={"trace": str(trace)}))
    for key in ("ttft_s_p50", "tpot_s_p99", "makespan_s", "requests_per_s", "energy_per_token_j"):
        assert out[1][key] == pytest.approx(out[0][key], rel=1e-9), key
    s = _serve(tmp_path, requests={"count": 4, "rate": 2.0, "input_tokens": 64, "output_tokens": 4})
    served = s["tokens_per_s"] * s["makespan_s"]
    assert s["energy_per_token_j"] == pytest.approx(
        s["facility_power_w"] * s["makespan_s"] / served, rel=1e-6
    )


def test_a_trace_file_drives_the_arrivals(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n0.0,100,5\n0.5,200,3\n0.25,50,4\n")
    s = _serve(tmp_path, requests={"trace": str(trace)})
    assert s["requests_completed"] == 3 and s["makespan_s"] > 0.5
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival,input_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(ConfigError, match="missing columns"):
        _serve(tmp_path, requests={"trace": str(bad)})
    assert math.isfinite(s["tpot_s_p50"])


def test_two_replicas_share_the_load_and_serve_every_request(tmp_path):
    req = {"count": 64, "input_tokens": 256, "output_tokens": 16}
    one = _serve(tmp_path, scheduler={"max_num_seqs": 8}, requests=req)
    two = _serve(tmp_path, parallelism={"replicas": 2}, scheduler={"max_num_seqs": 8}, requests=req)
    assert one["requests_completed"] == two["requests_completed"] == 64
    assert two["gpus"] == 2 and two["makespan_s"] == pytest.approx(one["makespan_s"] / 2, rel=0.1)


def test_a_tp_iteration_is_its_kernels_plus_two_all_reduces_per_layer(tmp_path):
    from simcore.cluster import Cluster
    from simcore.collectives import CollectiveModel

    s = _serve(
        tmp_path, parallelism={"tp": 2}, requests={"count": 1, "input_tokens": 512, "output_tokens": 2}
    )
    spec = load_inference_spec({"model": "llama3-8b", "precision": "fp8", "parallelism": {"tp": 2}}, file="x")
    prof = load_profile("h100-dgx.yaml")
    costs = replica_costs(spec)
    work, ar_bytes = iteration_work(costs, [], [(0, 512)], 1, row_tile=1)
    cluster = Cluster(prof, racks=1)
    allreduce = (
        CollectiveModel(prof, cluster).time("allreduce", ar_bytes, cluster.layout(np.arange(2))).time_s
    )
    expected = ComputeModel(prof).time_fused(work, "fp8", 1.0).time_s + 2 * costs.layers * allreduce
    # first the host prepares the sequence and issues every kernel, the two all-reduces of each layer too
    host_kernels = costs.kernels
    one_gpu = replica_costs(load_inference_spec({"model": "llama3-8b", "precision": "fp8"}, file="x"))
    assert host_kernels == one_gpu.kernels + 2 * costs.layers
    host = (
        prof.calibration.serving_sequence_host_time + host_kernels * prof.calibration.serving_kernel_host_time
    )
    assert s["ttft_s_p50"] == pytest.approx(host + expected, rel=1e-9)


def test_without_chunking_waiting_prompts_preempt_the_decodes(tmp_path):
    req = {"count": 100, "rate": 20.0, "input_tokens": 512, "output_tokens": 256}
    chunked = _serve(tmp_path, scheduler={"chunked_prefill": True}, requests=req)
    whole = _serve(tmp_path, scheduler={"chunked_prefill": False}, requests=req)
    assert whole["requests_completed"] == chunked["requests_completed"] == 100
    # prefill-first iterations: a new prompt never waits for the running decodes (low TTFT) ...
    assert whole["ttft_s_p50"] < 2 * chunked["ttft_s_p50"]
    # ... and the decodes pause for every prompt that arrives
    assert whole["tpot_s_p99"] > chunked["tpot_s_p50"]


def test_a_trace_next_to_the_spec_is_found_and_bad_rows_are_one_line(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "t.csv").write_text("arrival_s,input_tokens,output_tokens\n0,64,2\n")
    spec = sub / "serve.yaml"
    spec.write_text("kind: inference\nmodel: llama3-8b\nprecision: fp8\nrequests: {trace: t.csv}\n")
    assert (
        run(RunOptions(profile="h100-dgx.yaml", workload=str(spec), write_trace=False)).summary[
            "requests_completed"
        ]
        == 1
    )
    for row in ("0.5,100", "nan,10,10", "inf,10,10", "-1,10,10"):
        (sub / "t.csv").write_text(f"arrival_s,input_tokens,output_tokens\n{row}\n")
        with pytest.raises(ConfigError, match="line 2"):
            run(RunOptions(profile="h100-dgx.yaml", workload=str(spec), write_trace=False))


def test_a_trace_row_with_an_extra_value_is_refused_naming_its_line(tmp_path):
    """A row longer than the header is a broken trace (a stray comma, a column without a name), not a request
    whose extra value may be dropped; the line is the file's, blank lines included."""
    from workloads.inference import make_requests

    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n0,64,2\n\n0.5,100,4,7\n")
    spec = load_inference_spec(
        {"kind": "inference", "model": "llama3-8b", "requests": {"trace": str(trace)}}, file="s.yaml"
    )
    with pytest.raises(ConfigError) as info:
        make_requests(spec, 0)
    msg = str(info.value)
    assert msg.startswith(f"{trace}: line 4: 4 values, the header has 3 columns") and "'0.5,100,4,7'" in msg
    assert "expected one value per column: arrival_s, input_tokens, output_tokens" in msg and "\n" not in msg
    # extra named columns stay allowed (traces carry ids and the like)
    trace.write_text("arrival_s,input_tokens,output_tokens,user\n0,64,2,alice\n")
    assert len(make_requests(spec, 0)) == 1


def test_free_memory_fraction_is_a_share_of_what_the_weights_leave(tmp_path):
    """TensorRT-LLM's kv_cache_free_gpu_mem_fraction: the cache gets a share of the HBM the weights leave,
    where vLLM's gpu_memory_utilization (memory_fraction) caps weights + cache together. Llama 3.3 70B in
    FP8 on one H100 (72.7 GB of weights with the 16-bit embedding and LM head, 80 GB usable): 0.9 GB of
    cache at memory_fraction 0.92 (at 0.9 the weights alone do not fit), 6.6 GB at free_memory_fraction
    0.9; the same requests then run more at once."""
    from workloads.inference import KVCache

    assert KVCache("fp8", 0.9, free_memory_fraction=0.9).budget(80e9, 70e9) == pytest.approx(9e9)
    assert KVCache("fp8", 0.9, None).budget(80e9, 70e9) == pytest.approx(2e9)
    requests = {"count": 6, "input_tokens": 3000, "output_tokens": 4}
    shared = _serve(
        tmp_path,
        model="llama3-70b",
        kv_cache={"precision": "fp8", "memory_fraction": 0.92},
        requests=requests,
    )
    left = _serve(
        tmp_path,
        model="llama3-70b",
        kv_cache={"precision": "fp8", "free_memory_fraction": 0.9},
        requests=requests,
    )
    weights = 0.92 * 80e9 - shared["kv_cache_capacity_bytes"]
    assert left["kv_cache_capacity_bytes"] == pytest.approx(0.9 * (80e9 - weights), rel=1e-9)
    assert left["kv_cache_peak_bytes"] > 2 * shared["kv_cache_peak_bytes"]
    assert left["requests_per_s"] > shared["requests_per_s"]
    with pytest.raises(ConfigError, match=r"kv_cache\.free_memory_fraction"):
        _serve(tmp_path, kv_cache={"free_memory_fraction": 1.5}, requests=requests)


def test_a_trace_longer_than_a_run_can_hold_is_refused_at_its_line(tmp_path, monkeypatch):
    """Like requests.count, a trace holds at most MAX_REQUESTS requests: the row past it is named."""
    from simcore.errors import ConfigError
    from workloads import inference as inf

    monkeypatch.setattr(inf, "MAX_REQUESTS", 3)
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{i},10,10\n" for i in range(5)))
    with pytest.raises(ConfigError, match=r"t\.csv: line 5: more than 3 requests"):
        inf._read_trace(trace)
    trace.write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{i},10,10\n" for i in range(3)))
    assert len(inf._read_trace(trace)) == 3
