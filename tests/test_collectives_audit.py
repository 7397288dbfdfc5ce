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
