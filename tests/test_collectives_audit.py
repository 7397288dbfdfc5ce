"""Audit of the collective model: physics found wrong by probing closed forms and placements."""

from __future__ import annotations

import numpy as np
import pytest

from simcore.cluster import Cluster
from simcore.collectives import CollectiveModel
from simcore.fabric import FabricLinks, FlowNetwork
from simcore.profile import load_profile

GIB = 2**30


@pytest.fixture(scope="module")
def dgx() -> CollectiveModel:
    p = load_profile("h100-dgx.yaml")
    return CollectiveModel(p, Cluster(p, racks=2))


# ------------------------------------------------------------------ groups spread unevenly over domains
@pytest.mark.parametrize("ranks", [9, 10, 17])
def test_a_ring_leaving_a_sparse_domain_is_bound_by_its_nics(dgx: CollectiveModel, ranks: int) -> None:
    """9 ranks on 8-GPU servers are 8 + 1: the ring enters and leaves the lone GPU through its one NIC.

    Every byte of the ring (2(p-1)/p·n per rank, busbw's numerator) crosses that server's boundary, so busbw
    cannot beat the sparsest server's NICs: (ranks mod 8) × 47 GB/s. The model took ceil(9/2) = 5 NICs
    (235 GB/s, 5x the bound)."""
    layout = dgx.layout_for(ranks)
    fewest = ranks % 8
    assert layout.nic_ranks_per_domain == fewest
    nic = dgx.nic_Bps
    bb = dgx.busbw_Bps("allreduce", 8 * GIB, layout, algo="ring")
    assert bb <= fewest * nic * (1 + 1e-9)
    assert bb == pytest.approx(fewest * nic, rel=0.02)  # bandwidth-bound at 8 GiB
    for op in ("allgather", "reducescatter", "broadcast"):
        assert dgx.busbw_Bps(op, 8 * GIB, layout, algo="ring") <= fewest * nic * (1 + 1e-9)
    # NVLS needs two members in every domain; auto must not use it across a lone GPU's server.
    assert dgx.time("allreduce", 8 * GIB, layout).algorithm != "nvls" or fewest >= 2


def test_even_groups_are_unchanged(dgx: CollectiveModel) -> None:
    """16 ranks = 8 + 8: the sparsest domain is the mean one; the ring is NIC-bound at 8 NICs."""
    layout = dgx.layout_for(16)
    assert layout.nic_ranks_per_domain == layout.ranks_per_domain == 8
    bb = dgx.busbw_Bps("allreduce", 8 * GIB, layout, algo="ring")
    assert bb == pytest.approx(8 * dgx.nic_Bps, rel=0.02)


def test_cluster_layouts_know_the_sparsest_domain(dgx: CollectiveModel) -> None:
    cl = dgx.cluster
    contiguous = cl.layout(np.arange(4, 17))  # 4 + 8 + 1
    assert (contiguous.domains, contiguous.nic_ranks_per_domain) == (3, 1)
    assert dgx.layout_for(13, first_gpu=4) == contiguous
    strided = cl.layout(np.array([0, 6, 12, 18, 24, 30, 36, 42]))  # tp 2 x cp 3: stride 6 over 8-GPU servers
    assert strided.nic_ranks_per_domain == 1
    assert cl.layouts(np.array([[0, 1, 8, 9, 10, 11], [0, 1, 2, 8, 9, 10]])) == [
        cl.layouts(np.array([[0, 1, 8, 9, 10, 11]]))[0],
        cl.layouts(np.array([[0, 1, 2, 8, 9, 10]]))[0],
    ]
    a, b = cl.layouts(np.array([[0, 1, 8, 9, 10, 11], [0, 1, 2, 8, 9, 10]]))
    assert (a.nic_ranks_per_domain, b.nic_ranks_per_domain) == (2, 3)
    # The synchronous job waits for the group with the fewest NICs in a domain.
    assert cl.worst_layout(np.array([[0, 1, 2, 8, 9, 10], [0, 1, 8, 9, 10, 11]])).nic_ranks_per_domain == 2


def test_flow_bytes_of_an_uneven_ring_match_the_analytical_time(dgx: CollectiveModel) -> None:
    """Flow mode moves ``scale_out_bytes_per_gpu`` over the rail pairs (one per member of the sparsest
    domain): alone on the fabric it must take the analytical ring's bandwidth time."""
    members = np.arange(9)
    layout = dgx.cluster.layout(members)
    n = 4e9
    one = dgx.scale_out_bytes_per_gpu("allreduce", n, layout, "ring")
    net = FlowNetwork()
    fab = FabricLinks(net, dgx.cluster)
    src, dst = fab.rail_pairs(members)
    indptr, idx = fab.paths(src, dst)
    net.start_many(0.0, indptr, idx, np.full(len(src), one))
    t_flow = max(net.drain().values())
    _lat, slope = dgx.coefficients("allreduce", layout)
    assert t_flow == pytest.approx(slope[0, 2] * n, rel=1e-9)  # ring, Simple: bandwidth term


# ------------------------------------------------------------------ rings and oversubscribed uplinks
TIERS_4_DOMAINS_2TO1 = [
    "scale_out.tiers=[{name: leaf, span_gpus: 32, oversubscription: 2},"
    " {name: spine, span_gpus: 4096, oversubscription: 2}]"
]


@pytest.mark.parametrize(("tp", "dp"), [(8, 16), (4, 32), (2, 64)])
def test_a_ring_leaves_a_block_once_so_concurrency_one_matches_the_flow_model(tp: int, dp: int) -> None:
    """Every DP group of a tp x dp job all-reduces at once (concurrency 1) over leaf blocks of 4 servers
    with 2:1 uplinks. A ring crosses each block boundary once per channel: of the 32 GPUs under a leaf,
    8 send through its 16-NIC uplink, so the ring runs at NIC rate (the flow model: max-min over the rail
    rings of all groups). The shortcut charged every GPU's ring traffic to the uplink: NIC/2, 2x slow."""
    from simcore.cluster import ParallelDims

    p = load_profile("h100-dgx.yaml", TIERS_4_DOMAINS_2TO1)
    cl = Cluster(p, racks=4)
    model = CollectiveModel(p, cl)
    groups = ParallelDims(tp=tp, dp=dp).all_groups("dp")
    layout = cl.worst_layout(groups)
    assert layout.top_tier == 1 and layout.domains == 16
    n = 1e9
    one = model.scale_out_bytes_per_gpu("allreduce", n, layout, "ring")
    net = FlowNetwork()
    fab = FabricLinks(net, cl)
    for row in groups:
        src, dst = fab.rail_pairs(row)
        indptr, idx = fab.paths(src, dst)
        net.start_many(0.0, indptr, idx, np.full(len(src), one))
    t_flow = max(net.drain().values())
    _lat, slope = model.coefficients("allreduce", layout, concurrency=1.0)
    assert slope[0, 2] * n == pytest.approx(t_flow, rel=1e-9)  # ring, Simple
    # Hierarchical: every member sends its share across the block in the inter-domain phase (no change),
    # and traffic that stays inside one leaf is never throttled.
    half = model.coefficients("allreduce", layout, concurrency=0.5)[1]
    assert slope[3, 2] > half[3, 2]


def test_two_dp_groups_per_server_pair_still_share_a_block_boundary() -> None:
    """Groups with one domain per block (every ring hop leaves it) keep the full concurrency: two such
    groups under a 2:1 uplink take twice as long as one (tests/test_collectives.py's case)."""
    p = load_profile("h100-dgx.yaml", TIERS_4_DOMAINS_2TO1)
    cl = Cluster(p, racks=4)
    model = CollectiveModel(p, cl)
    layout = cl.layout(np.array([0, 32, 64, 96]))  # one rank per leaf block
    alone = model.time("allreduce", 4 * GIB, layout, algo="ring", concurrency=0.5).time_s
    shared = model.time("allreduce", 4 * GIB, layout, algo="ring", concurrency=1.0).time_s
    assert shared / alone == pytest.approx(2.0, rel=0.01)
