"""The roofline compute kernel: numba and its plain-numpy statement agree, and the efficiency curves behave
physically (bigger shapes never slower per FLOP, attention capped by the GEMM rate)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.kernels.compute import (
    ATTENTION_REFERENCE_HEAD_DIM,
    KIND_ATTENTION,
    KIND_ELEMENTWISE,
    KIND_GEMM,
    ComputeModel,
    roofline_times,
    roofline_times_ref,
)
from simcore.profile import load_profile
from workloads.inference import load_inference_spec, replica_costs
from workloads.spec import load_training_spec

# peak, max_eff, half_dim, attn_eff, attn_half, hbm_bw, overhead
_PARAMS = (989e12, 0.75, 200.0, 0.55, 48.0, 2.8e12, 4e-6)


@settings(max_examples=80, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.floats(0, 1e15),  # flops
            st.floats(0, 1e11),  # bytes
            st.sampled_from([0.0, 16.0, 64.0, 96.0, 128.0, 192.0, 256.0, 4096.0]),  # min dim / head dim
            st.sampled_from([KIND_GEMM, KIND_ATTENTION, KIND_ELEMENTWISE]),
            st.floats(0.3, 1.0),  # clock
        ),
        min_size=1,
        max_size=30,
    ),
    attn_half=st.sampled_from([0.0, 16.0, 48.0, 200.0]),
)
def test_kernel_matches_numpy_reference(ops, attn_half):
    f, b, d, k, c = (np.array(col) for col in zip(*ops, strict=True))
    peak, max_eff, half_dim, attn_eff, _, hbm, over = _PARAMS
    args = (f, b, d, k.astype(np.int64), c, peak, max_eff, half_dim, attn_eff, attn_half, hbm, over)
    for got, want in zip(roofline_times(*args), roofline_times_ref(*args), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def _attention_time(model: ComputeModel, head_dim: float, flops: float = 1e14) -> float:
    t, _, _ = model.times(
        np.array([flops]), np.array([0.0]), np.array([head_dim]), np.array([KIND_ATTENTION]), "bf16"
    )
    return float(t[0])


def test_attention_rate_grows_with_head_dim_and_is_stated_at_128():
    model = ComputeModel(load_profile("h100-dgx.yaml"))
    times = [_attention_time(model, d) for d in (32.0, 64.0, 96.0, 128.0, 192.0, 256.0)]
    assert times == sorted(times, reverse=True)  # a larger head dimension is never slower
    # the profile's attention_efficiency holds at the reference head dimension (and for unknown shapes)
    assert _attention_time(model, ATTENTION_REFERENCE_HEAD_DIM) == pytest.approx(_attention_time(model, 0.0))
    # FlashAttention-3's H100 forward: head dim 64 at ~0.77 of the 128 rate, 256 at ~1.16
    assert times[3] / times[1] == pytest.approx(0.77, abs=0.03)
    assert times[3] / times[5] == pytest.approx(1.16, abs=0.03)


def test_attention_never_beats_the_best_gemm():
    prof = load_profile("h100-dgx.yaml", ["calibration.attention_efficiency=1.0"])
    model = ComputeModel(prof)
    gemm, _, _ = model.times(
        np.array([1e14]), np.array([0.0]), np.array([0.0]), np.array([KIND_GEMM]), "bf16"
    )
    assert _attention_time(model, 1024.0) == pytest.approx(float(gemm[0]), rel=1e-12)


def test_no_head_dim_dependence_when_switched_off():
    model = ComputeModel(load_profile("h100-dgx.yaml", ["calibration.attention_half_head_dim=0"]))
    assert _attention_time(model, 64.0) == pytest.approx(_attention_time(model, 256.0), rel=1e-12)


def _attention_dims(preset: str, cp: int = 1) -> set[float]:
    from workloads.training import KIND_IDS, layer_segments

    spec = load_training_spec(
        {
            "kind": "training",
            "model": {"preset": preset, "seq_len": 4096, "layers": 4},
            "parallelism": {"tp": 1, "cp": cp, "dp": 1, "recompute": "none"},
            "batch": {"global_seqs": 1, "micro": 1},
        },
        file="x.yaml",
    )
    dims = set()
    for phase in ("fwd", "bwd"):
        for seg in layer_segments(spec, 1, phase):
            seg = getattr(seg, "compute", seg)
            dims |= {w[2] for w in seg.work if w[3] == KIND_IDS["attention"]}
    return dims


def test_training_and_serving_hand_attention_its_head_dimension():
    assert _attention_dims("gpt-oss-120b") == {64.0}  # 64 heads of 64
    assert _attention_dims("llama3-8b", cp=2) == {128.0}  # the head dim, not the (sharded) sequence
    assert _attention_dims("deepseek-v3") == {192.0}  # MLA: 128 + 64 rope dims for the scores
    serving = load_inference_spec(
        {"model": "deepseek-v3", "precision": "fp8", "parallelism": {"tp": 8}}, file="x"
    )
    assert replica_costs(serving).attention_head_dim == 192.0  # prefill runs per head, not in the latent


def test_the_compute_memo_is_bounded_and_answers_the_same_after_starting_over(monkeypatch):
    """A serving run asks for a new fused work every iteration: the memo starts over past MEMO_MAX
    entries instead of growing with the run, and an answer computed again is the same."""
    from simcore.kernels import compute
    from simcore.kernels.compute import ComputeModel
    from simcore.profile import load_profile

    monkeypatch.setattr(compute, "MEMO_MAX", 10)
    model = ComputeModel(load_profile("h100-dgx.yaml"))
    first = model.time_fused(((1e12, 1e9, 4096.0, 0),), "bf16", 1.0)
    for i in range(25):
        model.time_fused(((1e12 + i, 1e9, 4096.0, 0),), "bf16", 1.0)
        assert len(model._memo) <= 10
    assert model.time_fused(((1e12, 1e9, 4096.0, 0),), "bf16", 1.0) == first
