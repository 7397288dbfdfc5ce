"""optimizer.moments: Adam's first and second moments stored in bf16 (Megatron's precision-aware optimizer;
DeepSeek-V3 §3.3.2) take 4 of the 12 optimizer bytes per parameter, 8 of the step's 28 HBM bytes and 4 of a
checkpoint's 14; the fp32 master weights stay."""

from __future__ import annotations

import pytest

from simcore.errors import ConfigError
from simcore.profile import load_profile
from simcore.runner import job_plan
from workloads import model as mdl
from workloads.memory import training_memory
from workloads.spec import load_training_spec, spec_mapping
from workloads.validation import load_table, map_row, select_rows


def _spec(moments: str | None):
    data = {
        "kind": "training",
        "model": "llama3-8b",
        "parallelism": {"tp": 8, "dp": 2},
        "batch": {"global_seqs": 16},
        "job": {"steps": 1000},
    }
    if moments is not None:
        data["optimizer"] = {"moments": moments}
    return load_training_spec(data, file="opt.yaml")


def test_bf16_moments_shrink_state_step_traffic_and_checkpoints():
    spec = mdl.load_preset("llama3-8b")
    fp32 = training_memory(spec, tp=8, dp=2, zero=1)
    bf16 = training_memory(spec, tp=8, dp=2, zero=1, moment_bytes=2.0)
    assert bf16.optimizer_states == pytest.approx(fp32.optimizer_states * 8 / 12)
    assert (bf16.weights, bf16.gradients, bf16.activations) == (
        fp32.weights,
        fp32.gradients,
        fp32.activations,
    )
    assert mdl.optimizer_bytes(1000, moment_bytes=2) == 20_000  # 28 B with fp32 moments
    profile = load_profile("gen2.yaml")
    default, half = (job_plan(_spec(m), profile, 1.0, 0) for m in (None, "bf16"))
    assert half.checkpoint_s == pytest.approx(default.checkpoint_s * 10 / 14)


def test_the_section_round_trips_and_rejects_other_precisions():
    assert _spec(None).optimizer.moments == "fp32"
    spec = _spec("bf16")
    assert load_training_spec(spec_mapping(spec), file="again.yaml").optimizer.moments == "bf16"
    with pytest.raises(ConfigError) as info:
        _spec("fp8")
    assert info.value.path == "optimizer.moments"


def test_deepseek_recipes_store_bf16_moments():
    table, _ = load_table()
    [row] = select_rows(table, ["mbridge-25.09-Pre-Training-DeepSeekV3_(dropless)-DGX-H100-*"])
    plan = map_row(row, table)
    assert plan.spec["optimizer"] == {"moments": "bf16"}
    [llama] = select_rows(table, ["mbridge-25.11-Pre-Training-LLAMA3_70B-DGX-GB200-64-FP8-CS-gbs256"])
    assert "optimizer" not in map_row(llama, table).spec
