"""Uneven pipeline stages: ``parallelism.layers_per_chunk``, the balanced split racksim suggests, and the
validation rows (DeepSeek-V3's 61 layers) that need it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sim_helpers import COMPUTE_ONLY, simulate

from simcore.errors import ConfigError
from workloads import model as mdl
from workloads import pipeline_layout
from workloads.memory import stage_params, training_memory
from workloads.spec import _memory_kwargs, load_training_spec, spec_mapping
from workloads.validation import load_table, map_row, select_rows


def _spec(parallelism: dict[str, Any], gbs: int = 8) -> Any:
    data = {
        "kind": "training",
        "model": dict(COMPUTE_ONLY),
        "parallelism": {"tp": 1, "dp": 1, "recompute": "none", **parallelism},
        "batch": {"global_seqs": gbs, "micro": 1},
        "steps": 1,
    }
    return load_training_spec(data, file="layout.yaml")


def _step_time(spec: Any) -> float:
    return simulate(spec)[2]


# ------------------------------------------------------------------------------------------ the split
@pytest.mark.parametrize("layers", [2, 7, 16, 32, 61, 80, 126])
@pytest.mark.parametrize("pp,vp", [(1, 1), (2, 1), (3, 1), (4, 2), (8, 1), (8, 4), (16, 1)])
def test_balanced_split_is_most_even_and_agrees_with_the_automatic_one(layers, pp, vp):
    sizes = mdl.balanced_chunk_layers(layers, pp, vp)
    if pp * vp > layers:
        assert sizes is None
        return
    assert len(sizes) == pp * vp and sum(sizes) == layers
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    chunks = pp * vp
    if layers % chunks == 0:  # the automatic even split
        assert list(sizes) == [layers // chunks] * chunks == mdl.auto_chunk_layers(layers, pp, vp)
    elif pp > 1 and (layers + 2) % chunks == 0:  # Llama 3: first and last chunk one layer short
        n = (layers + 2) // chunks
        assert list(sizes) == [n - 1] + [n] * (chunks - 2) + [n - 1] == mdl.auto_chunk_layers(layers, pp, vp)
    else:
        assert mdl.auto_chunk_layers(layers, pp, vp) is None
    if min(sizes) < max(sizes):  # the ends (embedding, output + loss) get the lighter chunks first
        assert sizes[-1] == min(sizes)
        assert sizes[0] == min(sizes) or sizes.count(min(sizes)) == 1


def test_deepseek_v3_on_eight_chunks():
    assert mdl.balanced_chunk_layers(61, 8, 1) == (7, 8, 8, 8, 8, 8, 7, 7)
    spec = mdl.load_preset("deepseek-v3")
    stages = mdl.pipeline_layers(spec, 4, 2, layers_per_chunk=(7, 8, 8, 8, 8, 8, 7, 7))
    # chunk j on stage j % pp: stage 0 holds chunks 0 and 4
    assert stages[0] == (range(0, 7), range(31, 39))
    assert [len(c) for s in stages for c in s] == [7, 8, 8, 8, 8, 7, 8, 7]
    assert sorted(i for s in stages for c in s for i in c) == list(range(61))


def test_end_chunks_can_hold_only_the_embedding_and_the_loss():
    """Megatron's account_for_embedding/loss_in_pipeline_split with as many chunks as layers + 2 (Llama 3.1
    405B's 126 layers on pp 16 x vp 8): the first chunk runs only the embedding, the last only the output
    layer and loss, every other chunk one layer."""
    assert mdl.auto_chunk_layers(126, 16, 8) == [0] + [1] * 126 + [0]
    stages = mdl.pipeline_layers(mdl.load_preset("llama3-405b"), 16, 8)
    assert len(stages[0][0]) == 0 and len(stages[15][7]) == 0
    assert sorted(i for s in stages for c in s for i in c) == list(range(126))
    assert mdl.auto_chunk_layers(126, 1, 1) == [126] and mdl.auto_chunk_layers(125, 16, 8) is None


def _dp_bytes(machine: Any, prefix: str) -> float:
    table = machine.recorder.table()
    names = np.array(machine.recorder.names)[table["name"]]
    return float(table["nbytes"][np.char.startswith(names, prefix)].sum())


@pytest.mark.parametrize(
    "zero,overlap,prefixes",
    [
        (0, True, ("dp_grad",)),
        (1, True, ("dp_grad", "dp_param")),
        (2, False, ("dp_grad", "dp_param")),
        (3, True, ("fsdp_grad", "fsdp_allgather")),
    ],
)
def test_edge_only_chunks_still_reduce_and_gather_the_embedding_and_head(zero, overlap, prefixes):
    """16 layers on pp 2 x vp 9 = 18 chunks (end chunks empty) hold the same parameters as pp 2 x vp 8:
    the data-parallel gradient reduction and parameter gathers move the same bytes, embedding and LM head
    included (they travel in the empty chunks' own buckets)."""
    par = {"pp": 2, "dp": 2, "zero": zero, "dp_overlap": overlap}
    spec_edge = _spec({**par, "vp": 9}, gbs=4)
    spec_even = _spec({**par, "vp": 8}, gbs=4)
    assert mdl.pipeline_layers(spec_edge.model, 2, 9)[0][0] == range(0, 0)
    _, edge, t_edge = simulate(spec_edge)
    _, even, t_even = simulate(spec_even)
    for prefix in prefixes:
        assert _dp_bytes(edge, prefix) == pytest.approx(_dp_bytes(even, prefix), rel=1e-12), prefix
        assert _dp_bytes(edge, prefix) > 0
    assert t_edge > 0 and t_even > 0


def test_an_embedding_only_chunk_waits_for_its_parameters():
    """ZeRO-1 gathers the updated parameters bucket by bucket at the step start; the embedding-only first
    chunk must not send micro-batch 0 on before its own bucket (the embedding) has arrived."""
    _, machine, _ = simulate(_spec({"pp": 2, "vp": 9, "dp": 2, "zero": 1}, gbs=4))
    table = machine.recorder.table()
    names = np.array(machine.recorder.names)[table["name"]]
    stage0 = table["rank_class"] == 0
    first_gather_end = table["t_end"][stage0 & (names == "dp_param_allgather")].min()
    first_send = table["t_start"][stage0 & (names == "pp_send_act mb0")].min()
    assert first_send >= first_gather_end


def test_zero3_workspace_counts_the_edges_it_gathers():
    """ZeRO-3 gathers the embedding with the first layer (alone in an embedding-only chunk) and the final
    norm and LM head with the last: the largest gather unit of each end stage includes them."""
    model = _spec({"pp": 3, "layers_per_chunk": [0, 16, 0], "zero": 3}).model
    edges = {"pp": 3, "layers_per_chunk": (0, 16, 0)}
    embedding = model.vocab * model.hidden
    assert stage_params(model, stage_index=0, **edges).largest_layer == pytest.approx(embedding, rel=1e-12)
    head = embedding + model.hidden  # untied LM head (vocab x hidden) and the final RMSNorm's weight
    assert stage_params(model, stage_index=2, **edges).largest_layer == pytest.approx(head, rel=1e-12)
    layer = sum(mdl.layer_param_split(model, 0))
    even = stage_params(model, pp=2, stage_index=0)
    assert even.largest_layer == pytest.approx(layer + embedding, rel=1e-12)


def test_one_chunk_more_than_layers_suggests_an_embedding_only_chunk():
    with pytest.raises(ConfigError) as info:
        mdl.pipeline_layers(mdl.load_preset("llama3-8b"), 3, 11, layers_per_chunk=(1,) * 33)
    assert "set layers_per_chunk: [0, 1, 1" in str(info.value)


def test_edge_only_chunks_run_the_same_in_full_fidelity():
    spec = _spec({"pp": 2, "vp": 9, "dp": 2, "zero": 1}, gbs=4)
    assert simulate(spec)[2] == pytest.approx(simulate(spec, fidelity="full")[2], rel=1e-9)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "value,why",
    [
        ([4, 4, 4], "3 chunks for pp 4"),
        ([4, 4, 4, 5], "sums to 17, not 16"),
        ([6, 0, 5, 5], "an empty chunk inside the pipeline"),
        ([-1, 6, 6, 5], "a negative chunk"),
        ("4,4,4,4", "not a list"),
        ([4, 4, 4.5, 3.5], "not whole numbers"),
    ],
)
def test_bad_layers_per_chunk_names_the_field(value, why):
    with pytest.raises(ConfigError) as info:
        _spec({"pp": 4, "layers_per_chunk": value})
    assert info.value.path == "parallelism.layers_per_chunk", why
    assert "layout.yaml" in str(info.value)


def test_pp_not_splitting_the_layers_suggests_a_layout():
    with pytest.raises(ConfigError) as info:
        _spec({"pp": 5})
    msg = str(info.value)
    assert "5·1 = 5 does not divide layers = 16" in msg
    assert "layers_per_chunk: [3, 3, 4, 3, 3]" in msg  # 16 over 5: the one heavier chunk in the middle


# ------------------------------------------------------------------------------------------ behaviour
def test_explicit_automatic_split_changes_nothing():
    auto = _step_time(_spec({"pp": 4}))
    explicit = _step_time(_spec({"pp": 4, "layers_per_chunk": [4, 4, 4, 4]}))
    assert explicit == auto  # same layers on the same stages: the same simulation, bit for bit


def test_the_heaviest_stage_sets_the_pace():
    """pp 4, m = 8 micro-batches, compute-bound layers: 1F1B takes about (m - 1) x the slowest stage's
    forward + backward plus one pass through every stage (fill and drain), so with stage times
    proportional to layers n_i the step scales as (m - 1) max(n) + sum(n). Within 3 % (p2p transfers, the
    embedding and LM head on the end stages)."""

    def closed_form(sizes: list[int]) -> float:
        return (8 - 1) * max(sizes) + sum(sizes)

    even = _step_time(_spec({"pp": 4}))
    for sizes in ([4, 4, 3, 5], [3, 3, 3, 7]):
        t = _step_time(_spec({"pp": 4, "layers_per_chunk": sizes}))
        assert t / even == pytest.approx(closed_form(sizes) / closed_form([4, 4, 4, 4]), rel=0.03), sizes
        assert t > even


def test_memory_follows_the_layers_of_each_stage():
    spec = _spec({"pp": 4, "layers_per_chunk": [3, 3, 3, 7]})
    mem = [training_memory(spec.model, **_memory_kwargs(spec, s)) for s in range(4)]
    weights = [m.weights for m in mem]
    # stages 1 and 2 hold 3 layers each, stage 3 holds 7 (+ the final norm and LM head)
    assert weights[1] == pytest.approx(weights[2], rel=1e-12)
    assert weights[3] > 7 / 3 * weights[1] * 0.999


# ------------------------------------------------------------------------------------------ validation
def test_deepseek_rows_run_with_the_recipe_layout_or_the_most_even_one():
    """Megatron-Bridge's DeepSeek-V3 recipe fixes a layout per (pp, vp) (the last chunk one layer with the MTP
    depth and the loss); a (pp, vp) it has none for (GB300's pp 2 x vp 4) gets the most even split."""
    table, _ = load_table()
    rows = select_rows(table, ["DeepSeekV3"])
    assert len(rows) == 8
    recipe_layouts = 0
    for row in rows:
        plan = map_row(row, table)
        par = plan.spec["parallelism"]
        if "pipeline_layout" in par:
            recipe_layouts += 1
            mtp = plan.spec["model"].get("mtp_layers", 0)
            sizes = pipeline_layout.layers_per_chunk(
                par["pipeline_layout"], mtp_layers=mtp, file=None, path="p"
            )
            assert any(a.startswith("pipeline layout not printed: the recipe's") for a in plan.assumptions)
            assert sizes[-1] <= 1 < sizes[1]  # the MTP depth and the loss make the last chunk the lightest
        else:
            sizes = par["layers_per_chunk"]
            assert any("most even" in a for a in plan.assumptions)
        assert len(sizes) == par["pp"] * par["vp"] and sum(sizes) == 61
    assert recipe_layouts == 6


def test_interleaved_memory_walks_the_schedule_with_uneven_chunks():
    """pp 2, vp 2, 4 micro-batches, layers [7, 1, 1, 7]: stage 0 holds model chunks 0 (7 layers) and 2 (1).
    Megatron's interleaved schedule warms up 4 chunk-forwards (mb0 c0, mb1 c0, mb0 c1, mb1 c1: 16 layers),
    then F(mb2 c0) +7, B(mb0 c1) -1, F(mb3 c0) +7: a peak of 29 layers' activations, not the 20 an average
    over the stage's chunks gives. The simulated peak is the memory model's, to the byte."""
    spec = _spec({"pp": 2, "vp": 2, "layers_per_chunk": [7, 1, 1, 7]}, gbs=4)
    mem = [training_memory(spec.model, **_memory_kwargs(spec, s)) for s in range(2)]
    per_layer = mem[0].chunk_activations[0] / 7
    assert mem[0].chunk_activations == pytest.approx((7 * per_layer, per_layer), rel=1e-12)
    assert mem[0].in_flight == pytest.approx(29 * per_layer, rel=1e-12)
    _, machine, _ = simulate(spec)
    assert list(machine.mem_peak) == pytest.approx([m.total for m in mem], rel=1e-12)


def test_a_stale_layout_after_changing_pp_says_it_can_be_dropped():
    with pytest.raises(ConfigError) as info:
        _spec({"pp": 2, "layers_per_chunk": [3, 3, 5, 5]})  # written for pp 4
    assert "drop layers_per_chunk (--set parallelism.layers_per_chunk=null)" in str(info.value)
    assert _spec({"pp": 2, "layers_per_chunk": None}).parallelism.layers_per_chunk is None


# ------------------------------------------------------------------------------------------ Megatron layouts
@pytest.mark.parametrize(
    "layout,chunks",
    [
        ("Et*4|(t*4|)*14tmL", (4,) * 15 + (1,)),  # DeepSeek-V3 on 16 chunks, one MTP depth with the loss
        ("Et|(tt|)*30mL", (1,) + (2,) * 30 + (0,)),  # its H100 layout: the last chunk MTP and loss only
        ("Et*16|t*16|t*16|t*13L", (16, 16, 16, 13)),
        ("E|t*8|t*8|L", (0, 8, 8, 0)),
        (" E t*2 | ( t t | ) * 2 t L ", (2, 2, 2, 1)),  # spaces are ignored
        ("E((t|)*2)*2tL", (1, 1, 1, 1, 1)),  # nested repeats
        ("Et*3,|t*5|t*5|t*3,L", (3, 5, 5, 3)),  # commas are cosmetic, as in Megatron
    ],
)
def test_megatron_layout_strings_count_layers_per_chunk(layout, chunks):
    got = pipeline_layout.layers_per_chunk(layout, mtp_layers=layout.count("m"), file=None, path="p")
    assert got == chunks


def test_a_layout_string_runs_exactly_as_its_list():
    by_string = _spec({"pp": 4, "pipeline_layout": "Et*3|t*5|t*5|t*3L"}, gbs=8)
    by_list = _spec({"pp": 4, "layers_per_chunk": [3, 5, 5, 3]}, gbs=8)
    assert by_string.parallelism.layers_per_chunk == (3, 5, 5, 3)
    assert _step_time(by_string) == _step_time(by_list)
    assert "pipeline_layout" not in spec_mapping(by_string)["parallelism"]  # reloadable: the list stands


@pytest.mark.parametrize(
    "layout,fragment",
    [
        ("Et*4|t*4|t*4|t*4", "the loss (L) must close the last chunk"),
        ("t*4|t*4|t*4|t*4L", "the embedding (E) must open the first chunk"),
        ("Et*4|t*4|Et*4|t*4L", "the embedding (E) must open the first chunk, once"),
        ("Et*4|t*4|t*4|t*4mL", "the model has mtp_layers = 0"),
        ("Et*4|t*4|t*4|tmt*3L", "before the loss"),
        ("Et*4|(t*4|*2t*4L", "a '(' without its ')'"),
        ("Et*4|t*4)|t*4|t*4L", "a ')' at character 9 without its '('"),
        ("Et*|t*4|t*4|t*4L", "'*' at character 3 without a count"),
        ("Et*4|t*4|t*4|x*4L", "unknown character 'x'"),
        ("Et*4|t*4|t*4L", "the layout has 3 chunks and 12 layers"),
        ("Et*4|t*4|t*4|t*5L", "the layout has 4 chunks and 17 layers"),
        ("E(t|)*99999999tL", "repeats to more than 1,000,000 tokens"),
        ("Et*8|t*8L|", "the loss (L) must close the last chunk"),  # Megatron: an empty third chunk
        ("Et*8||t*4|t*4L", "chunk 1 holds no layer"),
    ],
)
def test_bad_pipeline_layout_names_the_field(layout, fragment):
    with pytest.raises(ConfigError) as info:
        _spec({"pp": 4, "pipeline_layout": layout})
    assert info.value.path == "parallelism.pipeline_layout"
    assert fragment in str(info.value) and "layout.yaml" in str(info.value)


def test_a_layout_and_a_list_together_are_an_error():
    with pytest.raises(ConfigError, match="both a pipeline layout and layers_per_chunk"):
        _spec({"pp": 4, "pipeline_layout": "Et*4|t*4|t*4|t*4L", "layers_per_chunk": [4, 4, 4, 4]})


def test_the_mtp_depths_go_with_the_loss():
    assert pipeline_layout.layers_per_chunk("Et*30|t*31mL", mtp_layers=1, file=None, path="p") == (30, 31)
    with pytest.raises(ConfigError, match="before the loss"):
        pipeline_layout.layers_per_chunk("Et*30m|t*31L", mtp_layers=1, file=None, path="p")
    with pytest.raises(ConfigError, match="the layout has 0 MTP depths"):
        pipeline_layout.layers_per_chunk("Et*30|t*31L", mtp_layers=1, file=None, path="p")
