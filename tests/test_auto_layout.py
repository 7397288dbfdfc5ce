"""The layout racksim chooses when a workload names only a model (``--workload PRESET``): the least TP x PP
that fits for a dense model, the narrowest TP that fits with the experts spread over expert parallelism for
an MoE model."""

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


@pytest.mark.parametrize(("preset", "hbm", "tp", "pp"), [("llama3-8b", 186e9, 1, 1), ("llama3-70b", 186e9, 4, 1),
                                                       ("llama3-70b", 80e9, 8, 1), ("llama3-8b", 80e9, 2, 1)])  # fmt: skip
def test_dense_models_take_the_least_model_parallelism_that_fits(preset, hbm, tp, pp):
    """Narayanan et al. (SC21): model parallelism only as far as memory needs (TP before PP), data
    parallelism for the rest; a small model on big GPUs runs without TP."""
    par = auto_training_spec(load_preset(preset), gpus=72, domain_size=72, hbm_bytes=hbm).parallelism
    assert (par.tp, par.pp) == (tp, pp)


def test_the_automatic_layout_beats_the_widest_tp(tmp_path):
    """llama3-8b on one gen2 rack: TP 1 (the automatic layout) against TP 8 with its communication
    overlapped: tokens per second per GPU nearly double (small GEMMs split eight ways lose efficiency)."""
    from simcore.runner import RunOptions, run

    opts = dict(profile="gen2.yaml", workload="llama3-8b", steps=1, write_trace=False)
    auto = run(RunOptions(**opts, out=tmp_path / "auto")).summary
    wide = run(RunOptions(**opts, sets=["parallelism.tp=8"], out=tmp_path / "tp8")).summary
    assert auto["workload"]["parallelism"]["tp"] == 1
    assert auto["tokens_per_s_per_gpu"] > 1.5 * wide["tokens_per_s_per_gpu"]


@pytest.mark.parametrize(("preset", "overlap"), [("llama3-70b", True), ("qwen3-30b-a3b", False)])
def test_auto_layouts_overlap_tp_communication_when_they_use_tp(preset, overlap):
    """Megatron-Bridge's pretraining recipes run TP with sequence parallelism and TP communication overlap;
    without it a TP 8 llama3-70b on gen2 spends 29 % of its step waiting on TP collectives."""
    par = auto_training_spec(load_preset(preset), gpus=64, domain_size=8, hbm_bytes=80e9).parallelism
    assert par.tp_comm_overlap is overlap and par.sequence_parallel is overlap and (par.tp > 1) is overlap


def test_a_narrow_scale_up_domain_bounds_expert_parallelism():
    spec = auto_training_spec(load_preset("qwen3-30b-a3b"), gpus=64, domain_size=4, hbm_bytes=80e9)
    assert spec.parallelism.ep == 4


@pytest.mark.parametrize(("gpus", "domain"), [(288, 144), (144, 72), (216, 72)])
def test_expert_groups_never_straddle_a_scale_up_domain(gpus, domain):
    """An EP group that straddles two NVLink domains runs its all-to-all over the scale-out network and paces
    the step: on 2 x 144-GPU domains DeepSeek-V3's auto layout once took EP 32 (blocks 128-159 straddle)
    and ran 3x slower than EP 16, so a bigger domain looked no better than a small one."""
    spec = auto_training_spec(load_preset("deepseek-v3"), gpus=gpus, domain_size=domain, hbm_bytes=288e9)
    par = spec.parallelism
    block = par.ep  # an EP group is ep consecutive ranks of a stage (workloads.training.expert_groups)
    assert all(s // domain == (s + block - 1) // domain for s in range(0, gpus, block))
    assert par.ep > 1


def test_tp_groups_never_straddle_a_scale_up_domain():
    """A 6-GPU domain (an odd what-if): llama3-70b's smallest fitting layout on 12-GPU domains is TP 4, which
    on 6-GPU domains would put ranks 4-7 across two of them; TP 2 (with PP 2) does not."""
    wide = auto_training_spec(load_preset("llama3-70b"), gpus=12, domain_size=12, hbm_bytes=192e9)
    assert (wide.parallelism.tp, wide.parallelism.pp) == (4, 1)
    spec = auto_training_spec(load_preset("llama3-70b"), gpus=12, domain_size=6, hbm_bytes=192e9)
    assert (spec.parallelism.tp, spec.parallelism.pp) == (2, 2)


def test_a_hand_made_layout_that_splits_groups_over_domains_gets_a_note():
    """TP 8 on 12-GPU domains: two of every three TP groups take parts of two domains; the run says so
    (it still runs: a what-if may mean it)."""
    from simcore.runner import RunOptions, run

    said: list[str] = []
    opts = RunOptions(
        profile="gen2.yaml",
        workload="llama3-8b",
        steps=1,
        sets=["scale_up.domain_size=12", "parallelism.tp=8"],
        write_trace=False,
        progress=said.append,
    )
    run(opts)
    notes = [m for m in said if m.startswith("note:")]
    assert len(notes) == 1 and "TP groups (8 GPUs each)" in notes[0] and "domains of 12" in notes[0]
    said.clear()
    run(
        RunOptions(
            profile="gen2.yaml", workload="llama3-8b", steps=1, write_trace=False, progress=said.append
        )
    )
    assert not [m for m in said if m.startswith("note:")]


@pytest.mark.parametrize(("preset", "domain"), [("llama3-8b", 4), ("llama3-70b", 4), ("llama3-8b", 1)])
def test_tp_never_spans_scale_up_domains(preset, domain):
    """A TP group wider than the scale-up domain would run every layer's collectives over the scale-out
    network: on 4-GPU domains the widest TP is 4 (a review caught TP 8 over two whole domains)."""
    spec = auto_training_spec(load_preset(preset), gpus=64, domain_size=domain, hbm_bytes=80e9)
    assert spec.parallelism.tp <= domain


def test_a_preset_too_big_for_its_racks_says_how_many_racks_it_needs(tmp_path):
    """llama3-405b on one 32-GPU gen1 rack: the memory model's own hint (tp 32, pp 14) names layouts the
    automatic layout never takes there; the error says the preset fits on 4 racks, and it does."""
    from simcore.errors import ConfigError
    from simcore.runner import RunOptions, run

    opts = dict(profile="gen1.yaml", workload="llama3-405b", steps=1, write_trace=False)
    with pytest.raises(
        ConfigError, match=r"does not fit on 1 rack of gen1 \(32 GPUs\).*fits on 4 racks"
    ) as err:
        run(RunOptions(**opts, out=tmp_path / "one"))
    assert "add --racks 4" in str(err.value)
    with pytest.raises(ConfigError, match=r"on 2 racks .*use --racks 4"):
        run(RunOptions(**opts, racks=2, out=tmp_path / "two"))
    # A --set that leaves memory to the layout (the precision the layout is then chosen for) keeps the advice.
    with pytest.raises(ConfigError, match=r"does not fit on 1 rack of gen1 .*add --racks 4"):
        run(RunOptions(**opts, sets=["precision=fp8"], out=tmp_path / "fp8"))
    assert not (tmp_path / "one").exists()


def test_a_preset_that_fits_no_count_of_racks_says_so_at_once(tmp_path, monkeypatch):
    """llama3-405b on gen1 with 4 GB of HBM fits no count of racks up to 4x the cluster (2,080): the error
    says so after a few tries, not after laying the model out on each count (~1 s each, over half an hour)."""
    import workloads.spec as spec_module
    from simcore.errors import ConfigError
    from simcore.runner import RunOptions, run

    calls = []
    real = spec_module.auto_training_spec

    def counted(*args, **kwargs):
        calls.append(kwargs.get("gpus"))
        if len(calls) > 10:
            pytest.fail(f"laid out on {len(calls)} GPU counts ({calls[-1]} GPUs)")
        return real(*args, **kwargs)

    monkeypatch.setattr(spec_module, "auto_training_spec", counted)
    opts = RunOptions(profile="gen1.yaml", workload="llama3-405b", steps=1, write_trace=False,
                      sets=["accelerator.hbm_capacity=4 GB"], out=tmp_path / "out")  # fmt: skip
    with pytest.raises(ConfigError, match=r"of 4\.0 GB per GPU, and on up to 2080 racks"):
        run(opts)


@pytest.mark.parametrize(("preset", "domain"), [("llama3-405b", 8), ("qwen3-30b-a3b", 72)])
def test_the_layout_memory_floor_is_below_every_automatic_layout(preset, domain):
    """auto_layout_floor_bytes bounds what auto_training_spec's layout needs on any count up to max_gpus."""
    from workloads.spec import auto_layout_floor_bytes

    model = load_preset(preset)
    floor = auto_layout_floor_bytes(model, max_gpus=2048, domain_size=domain)
    for gpus in (8, 72, 96, 512, 2048):
        # nothing fits in 1 GB: the layout closest to fitting
        spec = auto_training_spec(model, gpus=gpus, domain_size=domain, hbm_bytes=1e9)
        assert floor <= max(m.total for m in stage_memory(spec).values())
