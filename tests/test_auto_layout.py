"""The layout racksim chooses when a workload names only a model (``--workload PRESET``): the widest TP for a
dense model, the narrowest TP that fits with the experts spread over expert parallelism for an MoE model."""

from __future__ import annotations

import pytest

from workloads.model import load_preset
from workloads.spec import auto_training_spec, stage_memory


@pytest.mark.parametrize(
    ("preset", "tp", "ep"),
    [
        ("llama3-70b", 8, 1),  # dense: TP over the server
        ("mixtral-8x7b", 8, 8),  # its 8 experts over 8 GPUs; TP 8 is the narrowest that fits 80 GB
        ("qwen3-30b-a3b", 1, 8),
        ("nemotron-3-nano-30b-a3b", 1, 8),
    ],
)
def test_auto_layouts_fit_and_spread_the_experts(preset, tp, ep):
    spec = auto_training_spec(load_preset(preset), gpus=64, domain_size=8, hbm_bytes=80e9)
    par = spec.parallelism
    assert (par.tp, par.ep) == (tp, ep)
    assert max(m.total for m in stage_memory(spec).values()) <= 0.9 * 80e9


def test_a_narrow_scale_up_domain_bounds_expert_parallelism():
    spec = auto_training_spec(load_preset("qwen3-30b-a3b"), gpus=64, domain_size=4, hbm_bytes=80e9)
    assert spec.parallelism.ep == 4
