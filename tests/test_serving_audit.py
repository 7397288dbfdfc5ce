"""Serving physics found wrong in an audit of workloads/inference.py: each test states the closed form the
iteration cost must follow."""

from __future__ import annotations

import pytest

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
