"""Cluster geometry and where parallel groups land (rank order tp-cp-ep-dp-pp, fastest first)."""

from __future__ import annotations

import numpy as np
import pytest

from simcore.cluster import TIER_SCALE_UP, Cluster, ParallelDims, validate_order
from simcore.errors import CapacityError, ConfigError
from simcore.profile import load_profile


@pytest.fixture(scope="module")
def hgx():
    """gen2 reshaped as 8-GPU servers (8-GPU domains), 4 servers per rack, 256-GPU leaves."""
    return load_profile(
        "gen2.yaml",
        [
            "scale_up.domain_size=8",
            "rack.gpus_per_tray=8",
            "rack.trays_per_rack=4",
            "cluster.racks=512",
            "rack.switch_trays=0",
            "scale_out.tiers=[{name: leaf, span_gpus: 256}, {name: spine, span_gpus: 4096},"
            " {name: core, span_gpus: 65536}]",
        ],
    )


def test_megatron_rank_order():
    d = ParallelDims(tp=8, dp=4, pp=2)
    assert list(d.members("tp", 0)) == list(range(8))
    assert list(d.members("dp", 0)) == [0, 8, 16, 24]
    assert list(d.members("pp", 0)) == [0, 32]
    assert d.coords(41) == {"tp": 1, "cp": 0, "ep": 0, "dp": 1, "pp": 1}
    assert d.rank_of(d.coords(41)) == 41


def test_all_groups_partition_the_world():
    d = ParallelDims(tp=2, cp=2, ep=2, dp=4, pp=3)
    for dim, size in (("tp", 2), ("cp", 2), ("ep", 2), ("dp", 4), ("pp", 3)):
        groups = d.all_groups(dim)
        assert groups.shape == (d.world // size, size)
        assert sorted(groups.ravel()) == list(range(d.world))
    assert sorted(d.all_groups("dp")[0]) == sorted(d.members("dp", 0))


def test_group_layouts_say_which_tier_they_cross(hgx):
    c = Cluster(hgx)
    lay = c.parallel_layouts(ParallelDims(tp=8, dp=128, pp=16))
    assert lay["tp"].top_tier == TIER_SCALE_UP and lay["tp"].ranks_per_domain == 8
    # DP stride 8: one member per 8-GPU server, 128 servers = 1024 GPUs = 4 leaf blocks of 256 -> spine.
    assert lay["dp"].domains == 128 and lay["dp"].ranks_per_domain == 1
    assert lay["dp"].tier_blocks[0] == 4 and lay["dp"].top_tier == 1
    # Same group size, different placement: 8 ranks in one domain vs 8 ranks on 8 servers.
    inside = c.layout(np.arange(8))
    spread = c.layout(np.arange(0, 64, 8))
    assert inside.top_tier == TIER_SCALE_UP and spread.top_tier == 0 and spread.domains == 8


def test_pipeline_sends_pair_stages_of_one_pipeline_only(hgx):
    # PP inside DP (the Llama 3 order): each pipeline is 4 neighbouring 8-GPU servers, all inside one
    # 256-GPU leaf. GPU g and g + stride (the PP stride, 8) also pair the last stage of one pipeline with the
    # first of the next, and at GPU 248 -> 256 that crosses a leaf: the sends must not be charged for it.
    c = Cluster(hgx, racks=64)
    dims = ParallelDims(tp=8, pp=4, dp=64, order=("tp", "cp", "ep", "pp", "dp"))
    pipes = dims.all_groups("pp")
    real = [c.layout(np.array(p[s : s + 2])).top_tier for p in pipes for s in range(3)]
    assert max(real) == 0  # every real send leaves its server but stays in its leaf
    assert c.layout(np.array([248, 256])).top_tier == 1  # the pair that is not a send
    assert c.parallel_layouts(dims)["pp_p2p"].top_tier == 0
    # Interleaving adds each pipeline's last stage -> first stage send (GPU 24 + g -> g), inside the leaf too.
    assert c.parallel_layouts(dims, pp_wrap=True)["pp_p2p"].top_tier == 0
    outer = ParallelDims(tp=8, pp=4, dp=8)  # PP outermost, 64 GPUs per stage: the job fits one leaf
    assert c.parallel_layouts(outer)["pp_p2p"].top_tier == 0
    assert c.parallel_layouts(outer, pp_wrap=True)["pp_p2p"].top_tier == 0  # 192 + g -> g: same leaf
    wide = ParallelDims(tp=8, pp=4, dp=32)  # 256 GPUs per stage: every stage its own leaf
    assert c.parallel_layouts(wide)["pp_p2p"].top_tier == 1


def test_job_larger_than_cluster_says_racks_needed(hgx):
    c = Cluster(hgx, racks=2)
    c.require(64)
    with pytest.raises(CapacityError, match=r"needs 65 GPUs = 3 racks of 32.*use --racks 3"):
        c.require(65)


def test_bad_rank_order():
    with pytest.raises(ConfigError, match="rank order"):
        validate_order("tp-dp-pp")
    assert validate_order("tp-cp-ep-dp-pp") == ("tp", "cp", "ep", "dp", "pp")


def test_place_names(hgx):
    c = Cluster(hgx)
    assert c.place(0) == "pod0/rack00/tray00/gpu0"
    assert c.place(33) == "pod0/rack01/tray00/gpu1"


def test_a_job_larger_than_the_top_fabric_tier_is_an_error():
    """A fat tree's top tier links span_gpus GPUs; a bigger job has blocks nothing connects."""
    prof = load_profile("mi300x.yaml")  # leaf 256, spine 8192 GPUs
    cluster = Cluster(prof, racks=300)
    cluster.require(8192)  # exactly the top tier
    with pytest.raises(ConfigError) as info:
        cluster.require(8200)
    assert info.value.path == "scale_out.tiers[1].span_gpus" and info.value.value == 8192
    assert "mi300x.yaml" in str(info.value) and "at least 8200" in str(info.value)
