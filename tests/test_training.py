"""Training workload: recompute FLOPs, ZeRO-3/FSDP, expert layout, pipeline bubble, fidelity, memory, errors."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import yaml
from sim_helpers import COMPUTE_ONLY
from sim_helpers import simulate as _simulate

from simcore.cluster import ParallelDims
from simcore.engine import Machine
from simcore.errors import CapacityError, ConfigError
from simcore.runner import RunOptions, run
from workloads import model as mdl
from workloads.schedule import bubble_fraction_1f1b
from workloads.spec import load_training_spec
from workloads.training import expert_groups, layer_items, rank_groups

SMALL = {"preset": "llama3-8b", "seq_len": 2048}


def _spec(parallelism: dict[str, Any], *, model: Any = None, gbs: int = 8, micro: int = 1, **extra: Any):
    data = {
        "kind": "training",
        "model": model if model is not None else dict(SMALL),
        "parallelism": parallelism,
        "batch": {"global_seqs": gbs, "micro": micro},
        "steps": 1,
        **extra,
    }
    return load_training_spec(data, file="test.yaml")


def _names(machine: Machine) -> list[str]:
    table = machine.recorder.table()
    return [machine.recorder.names[i] for i in table["name"]]


def _run(tmp_path, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    path = tmp_path / f"w{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(body))
    opts = dict(profile="h100-dgx.yaml", workload=str(path), steps=1, write_trace=False)
    opts.update(kw)
    return run(RunOptions(**opts)).summary


# ------------------------------------------------------------------------------------------- recompute
def _flops(items: list[Any], kind: str) -> float:
    return sum(op.flops for op in items if isinstance(op, mdl.Op) and op.kind == kind)


def test_full_recompute_replays_the_forward_four_thirds_of_the_gemms():
    spec = _spec({"tp": 2, "recompute": "none"})
    fwd = layer_items(spec, 0, "fwd")
    plain = fwd + layer_items(spec, 0, "bwd")
    full = fwd + layer_items(spec, 0, "bwd_full")
    assert _flops(full, "gemm") / _flops(plain, "gemm") == pytest.approx(4 / 3, rel=1e-12)
    # flash attention: forward 1, backward 2.5, the replay 1 more
    assert _flops(full, "attention") / _flops(plain, "attention") == pytest.approx(4.5 / 3.5, rel=1e-12)
    # the replay includes the layer's TP collectives
    comms = [c for c in full if isinstance(c, mdl.Comm)]
    assert len(comms) == len([c for c in plain if isinstance(c, mdl.Comm)]) + len(
        [c for c in fwd if isinstance(c, mdl.Comm)]
    )


def test_selective_recompute_replays_only_the_attention_core():
    spec = _spec({"tp": 2, "recompute": "selective"})
    fwd = layer_items(spec, 0, "fwd")
    plain = fwd + layer_items(spec, 0, "bwd")
    sel = fwd + layer_items(spec, 0, "bwd_selective")
    assert _flops(sel, "gemm") == pytest.approx(_flops(plain, "gemm"), rel=1e-12)
    core = next(op for op in fwd if isinstance(op, mdl.Op) and op.name == "attn_core")
    assert _flops(sel, "attention") - _flops(plain, "attention") == pytest.approx(core.flops, rel=1e-12)
    # unfused (Megatron 2021) attention: the whole score pipeline is replayed, and only it
    spec_u = _spec({"tp": 2, "recompute": "selective"}, kernels={"flash_attention": False, "dropout": True})
    replayed = [op.name for op in layer_items(spec_u, 0, "bwd_selective") if op.name.endswith("_recompute")]
    assert replayed == ["attn_core_qk_recompute", "attn_core_softmax_recompute", "attn_core_dropout_recompute",
                        "attn_core_pv_recompute"]  # fmt: skip


def test_recompute_summary_hardware_over_model_flops(tmp_path):
    body = {
        "model": SMALL,
        "parallelism": {"tp": 2, "pp": 2, "recompute": "full"},
        "batch": {"global_seqs": 4},
    }
    full = _run(tmp_path, body)
    none = _run(tmp_path, {**body, "parallelism": {"tp": 2, "pp": 2, "recompute": "none"}})
    ratio = full["hardware_tflops_per_gpu"] / full["model_tflops_per_gpu"]
    model = mdl.load_preset("llama3-8b")
    expected = mdl.hardware_flops_per_token(model, 2048, "full") / mdl.model_flops_per_token(model, 2048)
    assert ratio == pytest.approx(expected, rel=1e-9)
    assert 1.25 < ratio <= 4 / 3  # 4/3 of the GEMM part; the LM head is not recomputed
    assert none["hardware_tflops_per_gpu"] == pytest.approx(none["model_tflops_per_gpu"], rel=1e-12)
    assert 1.15 < full["step_time_s"] / none["step_time_s"] < 4 / 3 + 0.02
    assert full["peak_hbm_bytes"] < none["peak_hbm_bytes"]


def test_partial_recompute_recomputes_the_first_layers_of_each_chunk():
    spec = _spec({"tp": 2, "pp": 2, "vp": 2, "recompute": "full", "recompute_layers": 3}, gbs=4)
    job, _machine, t_partial = _simulate(spec)
    # 32 layers on pp 2 x vp 2 = 4 chunks of 8: the first 3 of each are recomputed
    recomputed = [layer for layer in range(32) if job.layer_recompute(layer) == "full"]
    assert recomputed == [0, 1, 2, 8, 9, 10, 16, 17, 18, 24, 25, 26]
    model = spec.model
    plain = mdl.model_flops_per_token(model)
    everything = mdl.hardware_flops_per_token(model, recompute="full")
    assert job.hardware_flops_per_token() == pytest.approx(plain + (everything - plain) * 12 / 32, rel=1e-9)
    _, _, t_full = _simulate(_spec({"tp": 2, "pp": 2, "vp": 2, "recompute": "full"}, gbs=4))
    _, _, t_none = _simulate(_spec({"tp": 2, "pp": 2, "vp": 2, "recompute": "none"}, gbs=4))
    assert t_none < t_partial < t_full


# ------------------------------------------------------------------------------------------- ZeRO-3 / FSDP
def test_zero3_gathers_every_layer_and_lowers_memory():
    par = {"tp": 1, "pp": 1, "dp": 8, "recompute": "full"}
    job1, m1, _t1 = _simulate(_spec({**par, "zero": 1}, gbs=16))
    job3, m3, _t3 = _simulate(_spec({**par, "zero": 3}, gbs=16))
    names = _names(m3)
    layers, micro = 32, 2
    # forward and backward gather each layer once per micro-batch (prefetched, never twice)
    assert names.count("fsdp_allgather") == 2 * layers * micro
    assert names.count("fsdp_grad_reducescatter") == layers * micro
    assert "fsdp_allgather" not in _names(m1)
    assert float(m3.mem_peak.max()) < float(m1.mem_peak.max())
    assert job3.memory[0].weights < job1.memory[0].weights


def test_zero1_param_gather_overlaps_the_first_forward():
    par = {"tp": 2, "pp": 1, "dp": 4, "recompute": "none", "zero": 1}
    _, _, overlapped = _simulate(_spec(par, gbs=8))
    _, _, exposed = _simulate(_spec({**par, "dp_overlap": False}, gbs=8))
    assert overlapped < exposed


# ------------------------------------------------------------------------------------------- groups
def test_expert_groups_follow_megatron_core_expert_ranks():
    dims = ParallelDims(tp=2, cp=1, ep=1, dp=8, pp=2)
    ep_rows, edp_rows = expert_groups(dims, 8)
    # ETP = 1: EP takes 8 consecutive ranks of a stage (one 8-GPU server), EDP the stride-8 ranks
    assert ep_rows[0].tolist() == list(range(8)) and ep_rows[2].tolist() == list(range(16, 24))
    assert edp_rows[0].tolist() == [0, 8] and len(edp_rows) == 2 * 8
    dp_rows = rank_groups(dims, ("dp", "cp"))
    assert dp_rows[0].tolist() == list(range(0, 16, 2))


def test_expert_and_dense_gradients_reduce_over_their_own_groups():
    moe = {"preset": "qwen3-30b-a3b", "seq_len": 1024}
    spec = _spec({"tp": 2, "dp": 8, "ep": 4, "recompute": "none"}, model=moe, gbs=8)
    job, machine, _ = _simulate(spec)
    assert job.layouts["dp"].size == 8 and job.layouts["edp"].size == 2 * 8 // 4
    grad = machine.recorder.table()
    names = np.array(machine.recorder.names)[grad["name"]]
    assert (names == "dp_grad_reducescatter").sum() > 0
    assert {kind for kind, _ in job.groups} == {"tp", "ep", "dp", "edp"}


# ------------------------------------------------------------------------------------------- pipeline bubble


@pytest.mark.parametrize("m,vp", [(4, 1), (8, 1), (16, 1), (8, 2), (8, 4)])
def test_bubble_matches_the_closed_form(m, vp):
    """pp 4, one GPU per stage, a tiny vocabulary and p2p over NVLink: the idle share of a stage is the
    1F1B bubble (p-1)/(v·m + p-1) within 2 points (p2p and the edge stages' embedding/LM head)."""
    spec = _spec({"tp": 1, "pp": 4, "vp": vp, "dp": 1, "recompute": "none"}, model=COMPUTE_ONLY, gbs=m)
    _, machine, step = _simulate(spec)
    table = machine.recorder.table()
    busy = table["t_end"] - table["t_start"]
    compute = [busy[(table["rank_class"] == c) & (table["kind"] == 0)].sum() for c in range(4)]
    bubble = 1.0 - float(np.mean(compute)) / step
    assert bubble == pytest.approx(bubble_fraction_1f1b(4, m, vp), abs=0.02)


def test_bubble_shrinks_with_microbatches_and_interleaving():
    def step(m: int, vp: int) -> float:
        spec = _spec({"tp": 1, "pp": 4, "vp": vp, "dp": 1, "recompute": "none"}, model=COMPUTE_ONLY, gbs=m)
        return _simulate(spec)[2] / m  # time per micro-batch

    assert step(4, 1) > step(8, 1) > step(16, 1)
    assert step(8, 1) > step(8, 2) > step(8, 4)


# ------------------------------------------------------------------------------------------- fidelity
@pytest.mark.parametrize(
    "par,model,gbs",
    [
        ({"tp": 2, "pp": 2, "dp": 2, "cp": 2, "zero": 3, "recompute": "full"}, SMALL, 8),
        ({"tp": 2, "pp": 4, "dp": 2, "vp": 2, "order": "tp-pp-dp-cp-ep"}, SMALL, 16),
        ({"tp": 2, "pp": 2, "dp": 4, "ep": 8}, {"preset": "mixtral-8x7b", "seq_len": 1024}, 16),
    ],
)
@pytest.mark.parametrize("step_host", ["0 s", "70 ms"])
def test_full_fidelity_equals_representative(par, model, gbs, step_host):
    spec = _spec(par, model=model, gbs=gbs)
    sets = (f"calibration.step_host_time={step_host}",)
    _, _, rep = _simulate(spec, sets=sets)
    _, _, full = _simulate(spec, sets=sets, fidelity="full")
    assert full == pytest.approx(rep, rel=1e-9)


def test_full_fidelity_equals_representative_at_512_gpus():
    """512 GPUs (tp 8 x pp 2 x dp 32, two micro-batches): every rank simulated agrees with one per stage."""
    spec = _spec(
        {"tp": 8, "pp": 2, "dp": 32, "recompute": "none"},
        model={"preset": "llama3-8b", "seq_len": 512},
        gbs=64,
    )
    _, _, rep = _simulate(spec)
    _, machine, full = _simulate(spec, fidelity="full")
    assert len(machine.classes) == 512
    assert full == pytest.approx(rep, rel=1e-9)


# ------------------------------------------------------------------------------------------- memory
def test_oom_names_the_worst_stage_in_one_line():
    """Uneven first/last stages (Llama 3 style, 126 layers on pp 16) make stage 1 the fullest although
    stage 0 fits: the error names stage 1, its largest items and what would help, in one line."""
    spec = _spec({"tp": 8, "pp": 16, "dp": 128, "recompute": "selective"}, model="llama3-405b", gbs=2048)
    with pytest.raises(CapacityError) as err:
        _simulate(spec)
    text = str(err.value)
    assert "\n" not in text
    # the mildest recompute that shrinks the activations: rebuild the MLP too
    assert re.search(
        r"stage 1 needs 83\.\d GB of 80\.0 GB: activations \d+\.\d GB, .*; try "
        r"recompute: selective with recompute_modules: \[mlp\]",
        text,
    )


def test_cp_ring_overlaps_the_kv_exchange():
    par = {"tp": 1, "cp": 4, "dp": 2, "recompute": "none"}
    model = {"preset": "llama3-8b", "seq_len": 8192}
    _, _, ring = _simulate(_spec({**par, "cp_comm": "p2p"}, model=model, gbs=2))
    _, m, gather = _simulate(_spec({**par, "cp_comm": "allgather"}, model=model, gbs=2))
    assert "cp_kv_allgather" in _names(m)
    assert ring < gather


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "par,batch,model,match",
    [
        ({"tp": 3}, {"global_seqs": 8}, SMALL, "parallelism.tp"),
        ({"pp": 5}, {"global_seqs": 8}, SMALL, "parallelism.pp"),
        ({"ep": 3, "dp": 3}, {"global_seqs": 3}, {"preset": "mixtral-8x7b"}, "parallelism.ep"),
        ({"dp": 2}, {"global_seqs": 8, "micro": 3}, SMALL, "batch.micro"),
        ({"dp": 3}, {"global_seqs": 8}, SMALL, "batch.global_seqs"),
        ({"cp": 3}, {"global_seqs": 8}, SMALL, "parallelism.cp"),
    ],
)
def test_bad_parallelism_is_a_one_line_config_error(par, batch, model, match):
    with pytest.raises(ConfigError, match=re.escape(match)) as err:
        load_training_spec({"model": model, "parallelism": par, "batch": batch}, file="bad.yaml")
    assert "\n" not in str(err.value) and "bad.yaml" in str(err.value)


def test_fp4_on_h100_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"H100.*no fp4") as err:
        _run(tmp_path, {"model": SMALL, "batch": {"global_seqs": 8}, "precision": "fp4"})
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------- known effects
def test_fp8_is_faster_than_bf16_but_not_twice():
    par = {"tp": 8, "pp": 1, "dp": 1, "recompute": "none"}
    model = {"preset": "llama3-70b", "seq_len": 4096, "layers": 8}
    _, _, bf16 = _simulate(_spec(par, model=model, gbs=4, precision="bf16"))
    _, _, fp8 = _simulate(_spec(par, model=model, gbs=4, precision="fp8"))
    assert 1.1 < bf16 / fp8 < 1.9


def test_tensor_parallelism_across_the_scale_out_tier_is_slower():
    """16 A100s on 4x HDR per node: TP 16 across InfiniBand loses more than the pipeline bubble it avoids."""
    model = {"preset": "llama3-70b", "seq_len": 4096, "layers": 16}
    sets = ("scale_out.nics_per_gpu=0.5",)
    _, _, tp8 = _simulate(
        _spec({"tp": 8, "pp": 2, "recompute": "full"}, model=model, gbs=8), "a100-dgx.yaml", sets
    )
    _, _, tp16 = _simulate(
        _spec({"tp": 16, "pp": 1, "recompute": "full"}, model=model, gbs=8), "a100-dgx.yaml", sets
    )
    assert tp16 > 1.1 * tp8
