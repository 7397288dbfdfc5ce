"""kernels.bf16_first_layers / bf16_last_layers: Megatron's --first-last-layers-bf16. Under an fp8 or fp4 recipe
those layers run their GEMMs in bf16 (no quantization kernels) and keep 16-bit GEMM inputs for the backward;
Nemotron 3 Super's NVFP4 recipe keeps its last 14 of 88 layers so."""

from __future__ import annotations

import pytest
from sim_helpers import simulate

from workloads.spec import load_training_spec, stage_memory
from workloads.validation import load_table, plan_row, select_rows


def _spec(precision: str, first: int = 0, last: int = 0, pp: int = 1):
    return load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "llama3-8b", "layers": 8},
            "parallelism": {"tp": 2, "pp": pp, "dp": 4 // pp, "recompute": "selective"},
            "batch": {"global_seqs": 16, "micro": 1},
            "precision": precision,
            "steps": 1,
            "kernels": {"bf16_first_layers": first, "bf16_last_layers": last},
        },
        file="bf16.yaml",
    )


def test_which_layers_stay_bf16():
    spec = _spec("fp8", 1, 2)
    assert [spec.bf16_layer(i) for i in range(8)] == [True] + [False] * 5 + [True, True]
    assert not any(_spec("bf16", 1, 2).bf16_layer(i) for i in range(8))  # nothing to keep: all bf16 already


def test_bf16_layers_cost_between_the_two_precisions_and_all_of_them_are_a_bf16_job():
    fp8 = simulate(_spec("fp8"), "h100-dgx.yaml")[2]
    bf16 = simulate(_spec("bf16"), "h100-dgx.yaml")[2]
    some = simulate(_spec("fp8", 1, 2), "h100-dgx.yaml")[2]
    every = simulate(_spec("fp8", 3, 5), "h100-dgx.yaml")[2]
    assert fp8 < some < bf16
    assert every == pytest.approx(bf16, rel=1e-12)  # the same kernels, the same GEMMs


def test_bf16_layers_keep_16_bit_gemm_inputs():
    plain, kept = stage_memory(_spec("fp8", pp=2)), stage_memory(_spec("fp8", 0, 4, pp=2))
    assert kept[0].activations == plain[0].activations  # the first stage's layers are all fp8
    assert kept[1].activations > plain[1].activations


def test_the_nemotron_3_super_nvfp4_rows_take_the_recipes_bf16_layers():
    table, _ = load_table("workloads/reference/megatron_bridge_26x_runs.yaml")
    [fp4] = select_rows(table, ["*26.04-*Nemotron_3_Super-DGX-GB300-64-NVFP4*"])
    [fp8] = select_rows(table, ["*26.04-*Nemotron_3_Super-DGX-GB300-64-MXFP8*"])
    kernels = plan_row(fp4, table).spec["kernels"]
    assert (kernels["bf16_first_layers"], kernels["bf16_last_layers"]) == (1, 14)
    assert "bf16_last_layers" not in plan_row(fp8, table).spec["kernels"]


def test_the_stored_workload_keeps_the_bf16_layers():
    import yaml

    from workloads.spec import load_training_spec, spec_text

    spec = _spec("fp8", 1, 2)
    again = load_training_spec(yaml.safe_load(spec_text(spec)), file="again.yaml")
    assert again.kernels == spec.kernels and again.bf16_layer(7)


def test_bf16_mtp_keeps_only_the_mtp_modules_in_bf16():
    """kernels.bf16_mtp (Megatron-Bridge's keep_mtp_spec_in_bf16): the MTP modules' layers run bf16 GEMMs,
    the model's own last layer stays fp8; the step gets longer, the last stage keeps 16-bit MTP inputs."""

    def spec(bf16_mtp: bool, last: int = 0):
        return load_training_spec(
            {
                "kind": "training",
                "model": {"preset": "llama3-8b", "layers": 4, "mtp_layers": 1},
                "parallelism": {"tp": 2, "dp": 4},
                "batch": {"global_seqs": 16, "micro": 1},
                "precision": "fp8",
                "steps": 1,
                "kernels": {"bf16_mtp": bf16_mtp, "bf16_last_layers": last},
            },
            file="mtp.yaml",
        )

    plain, kept = simulate(spec(False), "h100-dgx.yaml"), simulate(spec(True), "h100-dgx.yaml")
    assert kept[2] > plain[2]
    assert not spec(True).bf16_layer(3)  # the model's last layer itself stays fp8
    assert stage_memory(spec(True))[0].activations > stage_memory(spec(False))[0].activations
    # the last layer in bf16 already takes its MTP module with it
    assert (
        simulate(spec(True, last=1), "h100-dgx.yaml")[2] == simulate(spec(False, last=1), "h100-dgx.yaml")[2]
    )
