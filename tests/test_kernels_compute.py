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
