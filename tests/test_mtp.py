"""model.mtp_layers: DeepSeek-V3's multi-token prediction (its report §2.2; Megatron-Core's MTP block). Each
module adds a transformer layer of the last layer's kind, norms and a 2h -> h projection, and runs the shared
output head once more, all on the last pipeline stage."""

from __future__ import annotations

import dataclasses

import pytest
from sim_helpers import simulate

from simcore.errors import ConfigError
from workloads import model as mdl
from workloads.spec import load_training_spec, stage_memory


def _spec(mtp: int, pp: int = 2):
    return load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "deepseek-v3", "layers": 8, "mtp_layers": mtp, "seq_len": 1024},
            "parallelism": {"tp": 1, "pp": pp, "dp": 8, "ep": 8, "recompute": "none"},
            "batch": {"global_seqs": 16, "micro": 1},
            "steps": 1,
        },
        file="mtp.yaml",
    )


def test_deepseek_v3_with_its_mtp_module_is_the_published_685b():
    ds = mdl.load_preset("deepseek-v3")
    mtp = dataclasses.replace(ds, mtp_layers=1)
    assert mdl.total_params(ds) == pytest.approx(671e9, rel=0.01)
    # The Hugging Face checkpoint stores the MTP module with its own copies of the embedding and the head
    # (training shares the model's): 685B in all.
    assert mdl.total_params(mtp) + 2 * ds.vocab * ds.hidden == pytest.approx(685e9, rel=0.01)
    layer = mdl.layer_params(ds, ds.layers - 1)
    assert mdl.mtp_params(mtp) == layer.total + 2 * ds.hidden**2 + 3 * ds.hidden
    # model FLOPs: the module's active parameters and the head once more (6 per parameter), its attention
    extra = mdl.model_flops_per_token(mtp) - mdl.model_flops_per_token(ds)
    attention = mdl.model_flops_per_token(ds) - 6.0 * (
        mdl.non_embedding_params(ds, active=True) + ds.vocab * ds.hidden
    )
    assert extra == pytest.approx(
        6.0 * (mdl.mtp_params(mtp, active=True) + ds.vocab * ds.hidden) + attention / ds.layers, rel=1e-9
    )


def test_the_last_stage_runs_and_keeps_the_module():
    plain, mtp = _spec(0), _spec(1)
    _, m0, step0 = simulate(plain, "gb200-nvl72.yaml")
    _, m1, step1 = simulate(mtp, "gb200-nvl72.yaml")
    assert step1 > step0

    def kernels(machine, name: str) -> int:
        table = machine.recorder.table()
        return sum(1 for i in table["name"] if machine.recorder.names[i].startswith(name))

    # per micro-batch (2 on the last stage), forward and backward: the module's input projection and the
    # shared head once more (fused segments outside attention / MoE are labelled "mlp")
    for phase in ("fwd", "bwd"):
        assert kernels(m1, f"{phase}:mlp") - kernels(m0, f"{phase}:mlp") == 2 * 2
        assert kernels(m1, f"{phase}:moe") > kernels(m0, f"{phase}:moe")  # the module's MoE layer
    mem0, mem1 = stage_memory(plain), stage_memory(mtp)
    assert mem1[0].total == pytest.approx(mem0[0].total)  # the first stage is untouched
    assert mem1[1].weights > mem0[1].weights and mem1[1].activations > mem0[1].activations


def test_mtp_layers_must_be_a_whole_number_at_least_0():
    with pytest.raises(ConfigError) as info:
        mdl.load_model(
            {**mdl.model_to_mapping(mdl.load_preset("llama3-8b")), "mtp_layers": -1}, file="m.yaml"
        )
    assert info.value.path == "model.mtp_layers"


def test_module_collectives_follow_megatron_tp_and_sequence_parallelism():
    ds = mdl.load_preset("deepseek-v3")

    def comms(sp: bool, phase: str) -> list[str]:
        program = mdl.mtp_input_program(ds, micro_batch=1, tp=2, sp=sp, phase=phase)
        return [c.op for c in program if isinstance(c, mdl.Comm)]

    # vocab-parallel lookup, column-parallel eh_proj (its input gathered with SP), output gathered
    assert comms(True, "fwd") == ["reducescatter", "allgather", "allgather"]
    assert comms(True, "bwd") == ["allgather", "allgather", "reducescatter", "allgather"]
    assert comms(False, "fwd") == ["allreduce", "allgather"]
    assert comms(False, "bwd") == ["allreduce"]
    assert not [c for c in mdl.mtp_input_program(ds, micro_batch=1) if isinstance(c, mdl.Comm)]


def test_the_last_stage_holds_the_module_and_an_embedding_copy():
    from workloads.memory import stage_params

    ds = dataclasses.replace(mdl.load_preset("deepseek-v3"), layers=8)
    kw = {"tp": 2, "pp": 2, "ep": 8, "stage_index": 1}
    plain = stage_params(ds, **kw)
    mtp = stage_params(dataclasses.replace(ds, mtp_layers=1), **kw)
    last = mdl.layer_params(ds, 7)
    proj = 2 * ds.hidden**2
    local = (last.attention - last.attention_tp_duplicated + last.dense_ffn) / 2 + (
        last.attention_tp_duplicated + last.norms + last.router + last.shared_experts
    )
    module = local + proj / 2 + (mdl.mtp_extra_params(ds) - proj)
    assert mtp.dense - plain.dense == pytest.approx(module + ds.vocab * ds.hidden / 2)
    assert mtp.experts - plain.experts == pytest.approx(last.routed_experts / 8)
    # ZeRO-3 gathers the modules together with the last layer, the final norm, the LM head and the modules'
    # copy of the embedding (both vocab-parallel over tp 2)
    head_and_copy = ds.hidden + 2 * ds.vocab * ds.hidden / 2
    assert mtp.largest_layer == pytest.approx(
        local + last.routed_experts / 8 + module + last.routed_experts / 8 + head_and_copy
    )
    # with pp 1 the stage already holds the embedding
    one = {"tp": 2, "pp": 1, "ep": 8, "stage_index": 0}
    diff = stage_params(dataclasses.replace(ds, mtp_layers=1), **one).dense - stage_params(ds, **one).dense
    assert diff == pytest.approx(module)


def test_serving_rejects_mtp_and_row_names_decide_it():
    from workloads.inference import load_inference_spec
    from workloads.validation import mtp_named

    with pytest.raises(ConfigError) as info:
        load_inference_spec(
            {
                "kind": "inference",
                "model": {"preset": "deepseek-v3", "mtp_layers": 1},
                "parallelism": {"tp": 8},
            },
            file="serve.yaml",
        )
    assert info.value.path == "model.mtp_layers"
    names = ("DeepSeekV3 (w/ MTP)", "DeepSeekV3 (w/o MTP)", "DeepSeekV3_(w/o_MTP)", "with MTP", "DeepSeekV3")
    assert [mtp_named(n) for n in names] == [1, 0, 0, 1, None]
