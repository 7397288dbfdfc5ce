"""Tests for the collective cost model: kernels vs references, closed forms, placement, monotonicity, errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.cluster import Cluster, GroupLayout
from simcore.collectives import CollectiveModel, CollectiveTiming, busbw_factor
from simcore.errors import ConfigError
from simcore.kernels import collectives as kc
from simcore.profile import Profile, load_profile

SETTINGS = settings(max_examples=25, deadline=None)
GIB = 2**30
US = 1e-6

# A small HGX-like cluster: 8-GPU NVLink domains, 2 domains per leaf block with 2:1 uplinks, a spine.
TIERS_2TO1 = (
    "scale_out.tiers=[{name: leaf, span_gpus: 16, oversubscription: 2, latency: 1 us},"
    " {name: spine, span_gpus: 4096, oversubscription: 1, latency: 2 us}]"
)
HGX = [
    "scale_up.domain_size=8",
    "rack.gpus_per_tray=8",
    "rack.trays_per_rack=4",
    "cluster.racks=16",
    "scale_up.bandwidth=900 GB/s",
    "scale_up.efficiency=0.82",
    "scale_up.latency=1 us",
    "scale_out.nic_bandwidth=400 Gb/s",
    "scale_out.efficiency=0.94",
    "scale_out.latency=3 us",
]


def _profile(*extra: str, base: tuple[str, ...] = tuple(HGX)) -> Profile:
    return load_profile("gen2.yaml", overrides=[*base, *extra])


@pytest.fixture(scope="module")
def hgx() -> CollectiveModel:
    return CollectiveModel(_profile(TIERS_2TO1))


# ---------------------------------------------------------------------------------------------- kernels
@st.composite
def _groups(draw: st.DrawFn) -> tuple:
    g = draw(st.integers(1, 4))
    k = draw(st.integers(1, 4))
    sizes = np.array(
        [[draw(st.integers(1, 12))] + [draw(st.integers(1, 6)) for _ in range(k - 1)] for _ in range(g)],
        dtype=np.int64,
    )
    ranks = np.array([max(1, int(np.prod(row)) - draw(st.integers(0, 1))) for row in sizes], dtype=np.int64)
    bw = np.array([[draw(st.floats(1e9, 1e12)) for _ in range(k)] for _ in range(g)])
    lat = np.array([[draw(st.floats(0.0, 5e-6)) for _ in range(k)] for _ in range(g)])
    tech = np.ones((g, k), dtype=np.int64)
    tech[:, 0] = kc.TECH_SCALE_UP
    nvls = np.array([draw(st.sampled_from([0.0, 0.6, 0.85])) for _ in range(g)])
    op = draw(st.integers(0, len(kc.OP_NAMES) - 1))
    imbalance = draw(st.floats(1.0, 3.0))
    return op, sizes, bw, lat, tech, ranks, nvls, imbalance


@SETTINGS
@given(_groups(), st.integers(0, 2**31), st.data())
def test_kernels_match_numpy_reference(group: tuple, seed: int, data: st.DataObject) -> None:
    op, sizes, bw, lat, tech, ranks, nvls, imbalance = group
    lat_k, slope_k = kc.collective_coeffs(op, sizes, bw, lat, tech, ranks, nvls, imbalance)
    lat_r, slope_r = kc.collective_coeffs_ref(op, sizes, bw, lat, tech, ranks, nvls, imbalance)
    # Same formulas written twice (loops vs array expressions): equal to rounding.
    np.testing.assert_array_equal(np.isinf(lat_k), np.isinf(lat_r))
    np.testing.assert_allclose(lat_k, lat_r, rtol=1e-12, atol=0)
    np.testing.assert_allclose(slope_k, slope_r, rtol=1e-12, atol=0)
    rng = np.random.default_rng(seed)
    m = 50
    nbytes = 2.0 ** rng.uniform(0, 36, m)
    gi = rng.integers(0, len(sizes), m)
    amask = np.array(data.draw(st.lists(st.booleans(), min_size=kc.NALGO, max_size=kc.NALGO)))
    pmask = np.array(data.draw(st.lists(st.booleans(), min_size=kc.NPROTO, max_size=kc.NPROTO)))
    t_k, a_k, p_k = kc.collective_times(nbytes, gi, lat_k, slope_k, amask, pmask)
    t_r, a_r, p_r = kc.collective_times_ref(nbytes, gi, lat_k, slope_k, amask, pmask)
    np.testing.assert_array_equal(t_k, t_r)
    np.testing.assert_array_equal(a_k, a_r)
    np.testing.assert_array_equal(p_k, p_r)


def test_nccl_constants_are_the_documented_ones() -> None:
    # modeling-notes §1.4 (tuning.cc): base latencies and per-step hardware latencies, µs.
    assert kc.BASE_LAT_S[kc.A_RING] * 1e6 == pytest.approx([6.6, 14.0, 8.4])
    assert kc.BASE_LAT_S[kc.A_TREE] * 1e6 == pytest.approx([6.8, 14.0, 8.4])
    assert kc.HW_LAT_US[kc.TECH_SCALE_UP, kc.FAM_RING].tolist() == [0.6, 1.9, 3.4]
    assert kc.HW_LAT_US[kc.TECH_NET, kc.FAM_TREE].tolist() == [5.0, 8.5, 14.0]
    assert kc.PROTO_BW_EFF[kc.A_RING].tolist() == [0.5, 0.92, 1.0]
    assert kc.PROTO_BW_EFF[kc.A_NVLS, kc.P_LL] == 0.0  # NVLS runs Simple only


# ---------------------------------------------------------------------------------------------- closed forms
def test_ring_allreduce_closed_form_single_tier() -> None:
    """t = base + 2(p-1)·α + 2(p-1)/p·n/B on one NVLink domain; α = hardware step + NCCL Simple overhead."""
    prof = _profile(
        "scale_up.bandwidth=800 GB/s",
        "scale_up.bandwidth_counts=bidirectional",
        "scale_up.efficiency=1.0",
        "scale_up.latency=2 us",
    )
    model = CollectiveModel(prof)
    layout = model.layout_for(8)
    b = 400e9
    p = 8
    for n in (0.0, 1e3, 1e6, 3e9):
        t = model.time("allreduce", n, layout, algo="ring", proto="Simple").time_s
        alpha = 2e-6 + (3.4 - 0.6) * US  # NCCL NVLINK ring: Simple 3.4 µs vs LL 0.6 µs
        expect = 8.4 * US + 2 * (p - 1) * alpha + 2 * (p - 1) / p * n / b
        assert t == pytest.approx(expect, rel=1e-12)  # exact formula: rounding only
        t_ll = model.time("allreduce", n, layout, algo="ring", proto="LL").time_s
        expect_ll = 6.6 * US + 2 * (p - 1) * 2e-6 + 2 * (p - 1) / p * n / (0.5 * b)  # LL: half the bandwidth
        assert t_ll == pytest.approx(expect_ll, rel=1e-12)


def test_ring_allreduce_closed_form_scale_out_only() -> None:
    """One rank per domain, one leaf: a pure NIC ring with α = NIC latency + leaf latency + NET overhead."""
    prof = _profile(TIERS_2TO1, "scale_out.efficiency=1.0")
    model = CollectiveModel(prof)
    layout = model.cluster.layout(np.array([0, 8]))  # two domains under one leaf block
    assert (layout.domains, layout.ranks_per_domain, layout.top_tier) == (2, 1, 0)
    n = 1e8
    t = model.time("allreduce", n, layout, algo="ring", proto="Simple").time_s
    alpha = 3 * US + 1 * US + (14.0 - 2.7) * US
    assert t == pytest.approx(8.4 * US + 2 * alpha + n / 50e9, rel=1e-12)


def _phase(model: CollectiveModel, op: str, n: float, layout: GroupLayout) -> float:
    base = kc.BASE_LAT_S[kc.A_RING, kc.P_SIMPLE]
    return model.time(op, n, layout, algo="ring", proto="Simple").time_s - base


def test_hierarchical_is_sum_of_its_phases_two_levels(hgx: CollectiveModel) -> None:
    """RS in the domain + AR across domains on n/p0 + AG in the domain (modeling-notes §1.2), one launch."""
    layout = hgx.cluster.layout(np.arange(16))  # 2 domains x 8, one leaf block
    n = 2.0 * GIB
    hier = hgx.time("allreduce", n, layout, algo="hier", proto="Simple").time_s
    intra = hgx.cluster.layout(np.arange(8))
    inter = hgx.cluster.layout(np.array([0, 8]))
    phases = (
        _phase(hgx, "reducescatter", n, intra)
        + _phase(hgx, "allreduce", n / 8, inter)
        + _phase(hgx, "allgather", n, intra)
    )
    assert hier == pytest.approx(kc.BASE_LAT_S[kc.A_RING, kc.P_SIMPLE] + phases, rel=1e-12)


def test_hierarchical_has_three_levels_beyond_the_leaf(hgx: CollectiveModel) -> None:
    """A group spanning leaf blocks (top_tier >= 1): RS d0 -> RS d1 -> AR d2 -> AG d1 -> AG d0 (ASTRA-sim)."""
    members = np.concatenate([np.arange(0, 8), np.arange(8, 16), np.arange(16, 24), np.arange(24, 32)])
    layout = hgx.cluster.layout(members)  # 4 domains in 2 leaf blocks
    assert layout.top_tier == 1
    lv = hgx.levels(layout)
    assert lv.sizes.tolist()[:3] == [8, 2, 2]
    n = 1.0 * GIB
    hier = hgx.time("allreduce", n, layout, algo="hier", proto="Simple").time_s
    d0 = hgx.cluster.layout(np.arange(8))
    d1 = hgx.cluster.layout(np.array([0, 8]))  # same leaf block
    d2 = hgx.cluster.layout(np.array([0, 16]))  # across the leaf uplinks
    assert d2.top_tier == 1
    phases = (
        _phase(hgx, "reducescatter", n, d0)
        + _phase(hgx, "reducescatter", n / 8, d1)
        + _phase(hgx, "allreduce", n / 16, d2)
        + _phase(hgx, "allgather", n / 8, d1)
        + _phase(hgx, "allgather", n, d0)
    )
    assert hier == pytest.approx(kc.BASE_LAT_S[kc.A_RING, kc.P_SIMPLE] + phases, rel=1e-12)


# ---------------------------------------------------------------------------------------------- placement
def test_same_group_size_costs_more_when_it_spans_more_tiers() -> None:
    model = CollectiveModel(load_profile("gen2.yaml"))
    cl = model.cluster
    in_domain = cl.layout(np.arange(8))
    across_racks = cl.layout(np.arange(8) * cl.gpus_per_rack)  # 8 racks, one leaf block
    across_leaves = cl.layout(np.arange(8) * cl.tier_spans[0])  # 8 leaf blocks
    assert (in_domain.top_tier, across_racks.top_tier, across_leaves.top_tier) == (-1, 0, 1)
    for n in (1e3, 1e6, 1e9):
        a, b, c = (model.time("allreduce", n, lay).time_s for lay in (in_domain, across_racks, across_leaves))
        assert a < b < c
    # Large messages: NVLink (~770 GB/s) vs one NIC per rank (~47 GB/s).
    ratio = (
        model.time("allreduce", 4 * GIB, across_racks).time_s
        / model.time("allreduce", 4 * GIB, in_domain).time_s
    )
    assert ratio > 10


@pytest.mark.parametrize(("first", "ranks"), [(0, 1), (0, 8), (3, 8), (0, 16), (5, 100), (0, 512), (250, 7)])
def test_contiguous_layout_matches_cluster_layout(hgx: CollectiveModel, first: int, ranks: int) -> None:
    expect = hgx.cluster.layout(np.arange(first, first + ranks))
    assert hgx.layout_for(ranks, first_gpu=first) == expect


def test_full_mesh_group_uses_only_links_to_its_members() -> None:
    """xGMI full mesh: a 2-rank group of an 8-GPU mesh gets one link of seven."""
    model = CollectiveModel(_profile("scale_up.topology=full_mesh", "scale_up.in_switch_reduction=false"))
    two = model.levels(model.layout_for(2)).bw_Bps[0]
    eight = model.levels(model.layout_for(8)).bw_Bps[0]
    assert two == pytest.approx(eight / 7)


def test_single_rank_group_costs_nothing(hgx: CollectiveModel) -> None:
    lay = hgx.layout_for(1)
    for op in ("allreduce", "allgather", "alltoall", "broadcast", "sendrecv", "barrier"):
        assert hgx.time(op, 1e6, lay) == CollectiveTiming(0.0, "none", "none")
        assert hgx.times(op, [1.0, 1e9], lay).algorithm.tolist() == ["none", "none"]


# ---------------------------------------------------------------------------------------------- monotone & sane
OPS_NO_BARRIER = [o for o in kc.OP_NAMES if o != "barrier"]


def _scaled(prof: Profile, up: float, out: float) -> Profile:
    return dataclasses.replace(
        prof,
        scale_up=dataclasses.replace(prof.scale_up, bandwidth=prof.scale_up.bandwidth * up),
        scale_out=dataclasses.replace(prof.scale_out, nic_bandwidth=prof.scale_out.nic_bandwidth * out),
    )


_LAYOUT_MEMBERS = [
    np.arange(8),
    np.arange(16),
    np.arange(0, 64, 8),
    np.arange(64),
    np.arange(6),
    np.array([0, 1, 16, 17, 32, 33]),
]


@SETTINGS
@given(
    st.sampled_from(OPS_NO_BARRIER),
    st.integers(0, len(_LAYOUT_MEMBERS) - 1),
    st.floats(0, 35),
    st.floats(1.0, 4.0),
    st.floats(1.0, 4.0),
    st.sampled_from([0.25, 0.5, 1.0]),
    st.booleans(),
)
def test_more_bandwidth_is_never_slower(
    op: str, li: int, log2n: float, f_up: float, f_out: float, conc: float, nvls: bool
) -> None:
    prof = _profile(TIERS_2TO1, f"scale_up.in_switch_reduction={str(nvls).lower()}")
    base = CollectiveModel(prof)
    fast = CollectiveModel(_scaled(prof, f_up, f_out), base.cluster)
    lay = base.cluster.layout(_LAYOUT_MEMBERS[li])
    n = 2.0**log2n
    t0 = base.time(op, n, lay, concurrency=conc).time_s
    t1 = fast.time(op, n, lay, concurrency=conc).time_s
    assert t1 <= t0 * (1 + 1e-12)


@SETTINGS
@given(
    st.sampled_from(OPS_NO_BARRIER),
    st.integers(0, len(_LAYOUT_MEMBERS) - 1),
    st.lists(st.floats(0, 2**36), min_size=2, max_size=30),
    st.sampled_from(["auto", "ring"]),
)
def test_larger_messages_never_take_less_time(op: str, li: int, sizes: list[float], algo: str) -> None:
    model = CollectiveModel(_profile(TIERS_2TO1))
    lay = model.cluster.layout(_LAYOUT_MEMBERS[li])
    if algo == "ring" and not kc.APPLICABLE[kc.OP_NAMES.index(op), kc.A_RING]:
        algo = "auto"
    n = np.sort(np.asarray(sizes))
    t = model.times(op, n, lay, algo=algo).time_s
    assert np.all(np.diff(t) >= 0)


@SETTINGS
@given(
    st.sampled_from(["allreduce", "reducescatter", "allgather", "alltoall", "broadcast"]),
    st.integers(0, len(_LAYOUT_MEMBERS) - 1),
    st.floats(10, 40),
    st.floats(0.3, 3.0),
)
def test_busbw_never_exceeds_line_rate_without_in_switch_reduction(
    op: str, li: int, log2n: float, f_out: float
) -> None:
    """busbw <= the line rate a member can use: NVLink, or its domain's NICs; in-switch reduction aside."""
    prof = _scaled(_profile(TIERS_2TO1, "scale_up.in_switch_reduction=false"), 1.0, f_out)
    model = CollectiveModel(prof)
    lay = model.cluster.layout(_LAYOUT_MEMBERS[li])
    n = 2.0**log2n
    busbw = model.busbw_Bps(op, n, lay)
    line_up = prof.scale_up.bw_per_direction_Bps if lay.ranks_per_domain > 1 else 0.0
    line_out = lay.ranks_per_domain * prof.scale_out.nics_per_gpu * prof.scale_out.nic_bandwidth
    bound = max(line_up, line_out if lay.domains > 1 else 0.0)
    assert busbw <= bound * (1 + 1e-9)


def test_busbw_approaches_the_achievable_line_rate(hgx: CollectiveModel) -> None:
    lay = hgx.layout_for(8)
    b_eff = 450e9 * 0.82
    busbw = [hgx.busbw_Bps("allreduce", n, lay, algo="ring") for n in (2.0**20, 2.0**26, 2.0**32, 2.0**38)]
    assert np.all(np.diff(busbw) > 0)
    assert busbw[-1] == pytest.approx(b_eff, rel=1e-3)  # latency is negligible at 256 GiB
    assert max(busbw) <= b_eff


def test_in_switch_reduction_busbw_can_exceed_the_line_rate() -> None:
    prof = _profile("scale_up.in_switch_reduction=true", "scale_up.in_switch_efficiency=0.85")
    model = CollectiveModel(prof)
    timing = model.time("allreduce", 8 * GIB, model.layout_for(8))
    assert timing.algorithm == "nvls"
    assert model.busbw_Bps("allreduce", 8 * GIB, model.layout_for(8)) > prof.scale_up.bw_per_direction_Bps


def test_protocol_moves_from_low_latency_to_high_bandwidth(hgx: CollectiveModel) -> None:
    lay = hgx.layout_for(8)
    assert hgx.time("allreduce", 1024, lay, algo="ring").protocol == "LL"
    assert hgx.time("allreduce", 4 * GIB, lay, algo="ring").protocol == "Simple"
    chosen = hgx.times("allreduce", 2.0 ** np.arange(4, 34), lay, algo="ring").protocol.tolist()
    assert "LL128" in chosen  # the middle of the range


def test_times_agrees_with_time(hgx: CollectiveModel) -> None:
    lay = hgx.cluster.layout(np.arange(32))
    sizes = 2.0 ** np.arange(0, 34, 1.5)
    for op in ("allreduce", "allgather", "alltoallv", "broadcast"):
        vec = hgx.times(op, sizes, lay, imbalance=1.5)
        for i, n in enumerate(sizes):
            one = hgx.time(op, float(n), lay, imbalance=1.5)
            assert (one.time_s, one.algorithm, one.protocol) == (
                vec.time_s[i],
                vec.algorithm[i],
                vec.protocol[i],
            )


# ---------------------------------------------------------------------------------------------- other ops
def test_alltoallv_imbalance_scales_the_bandwidth_term(hgx: CollectiveModel) -> None:
    lay = hgx.cluster.layout(np.arange(32))
    lat, slope = hgx.coefficients("alltoall", lay)
    lat_v, slope_v = hgx.coefficients("alltoallv", lay, imbalance=2.5)
    ok = np.isfinite(lat)
    np.testing.assert_array_equal(lat[ok], lat_v[ok])
    np.testing.assert_allclose(slope_v[ok], 2.5 * slope[ok], rtol=1e-12)
    even = hgx.time("alltoallv", 1 * GIB, lay, imbalance=1.0).time_s
    assert even == hgx.time("alltoall", 1 * GIB, lay).time_s


def test_alltoall_crossing_the_fabric_is_nic_bound(hgx: CollectiveModel) -> None:
    lay = hgx.cluster.layout(np.arange(16))  # 2 domains in one leaf block: no uplinks
    n = 4 * GIB
    t = hgx.time("alltoall", n, lay, algo="pairwise", proto="Simple").time_s
    assert t == pytest.approx(0.5 * n / 47e9, rel=0.01)  # half the bytes leave through a 47 GB/s NIC


def test_sendrecv_and_barrier(hgx: CollectiveModel) -> None:
    near = hgx.cluster.layout(np.array([0, 1]))
    far = hgx.cluster.layout(np.array([0, 8]))
    n = 1 * GIB
    assert hgx.time("sendrecv", n, near).time_s == pytest.approx(n / (450e9 * 0.82), rel=0.01)  # + ~12 us
    assert hgx.time("sendrecv", n, far).time_s == pytest.approx(n / 47e9, rel=0.01)
    lay = hgx.layout_for(64)
    barrier = {hgx.time("barrier", n, lay).time_s for n in (0, 1e3, 1e9)}
    assert len(barrier) == 1 and 0 < barrier.pop() < 100 * US


def test_broadcast_busbw_is_algbw(hgx: CollectiveModel) -> None:
    lay = hgx.layout_for(8)
    assert busbw_factor("broadcast", 8) == 1.0
    assert hgx.busbw_Bps("broadcast", 16 * GIB, lay) == pytest.approx(450e9 * 0.82, rel=0.01)


# ---------------------------------------------------------------------------------------------- concurrency
def test_concurrency_slows_only_oversubscribed_shared_tiers(hgx: CollectiveModel) -> None:
    """Two DP groups under one 2:1 leaf block take ~2x as long as one; TP in the domain never slows."""
    n = 4 * GIB
    tp = hgx.layout_for(8)
    assert hgx.time("allreduce", n, tp, concurrency=1.0) == hgx.time("allreduce", n, tp, concurrency=0.5)
    in_leaf = hgx.cluster.layout(np.arange(16))  # crosses only NICs and the leaf switch
    assert hgx.time("allreduce", n, in_leaf, concurrency=1.0) == hgx.time(
        "allreduce", n, in_leaf, concurrency=0.5
    )
    # One rank per domain, 4 leaf blocks: NIC-bound. Alone, its GPUs are half of those under each 2:1
    # uplink (concurrency 0.5: full NIC); a second such group doubles the load (concurrency 1: NIC/2).
    dp = hgx.cluster.layout(np.array([0, 16, 32, 48]))
    assert dp.top_tier == 1
    alone = hgx.time("allreduce", n, dp, concurrency=0.5).time_s
    shared = hgx.time("allreduce", n, dp, concurrency=1.0).time_s
    assert shared / alone == pytest.approx(2.0, rel=0.01)  # 4 GiB: latency is < 1 % of the time
    # 8 ranks per domain, ring: min(NVLink 369 x 8/7 (each GPU is the exit of one of the 8 channels, so its
    # NVLink carries 7/8 of its ring traffic), 8 NICs x 47 x share) = 376 alone, 188 shared.
    across = hgx.cluster.layout(np.concatenate([np.arange(0, 8), np.arange(16, 24)]))
    alone = hgx.time("allreduce", n, across, algo="ring", concurrency=0.5).time_s
    shared = hgx.time("allreduce", n, across, algo="ring", concurrency=1.0).time_s
    assert shared / alone == pytest.approx(376.0 / 188.0, rel=0.01)


def test_scale_out_bw_shortcut(hgx: CollectiveModel) -> None:
    nic = 50e9 * 0.94
    assert hgx.scale_out_bw_Bps(0, 1.0) == pytest.approx(nic)  # inside a leaf: never oversubscribed
    assert hgx.scale_out_bw_Bps(1, 1.0) == pytest.approx(nic / 2)
    assert hgx.scale_out_bw_Bps(1, 0.5) == pytest.approx(nic)
    assert hgx.scale_out_bw_Bps(1, 0.25) == pytest.approx(nic)  # never more than the NIC


def test_scale_out_bytes_per_gpu(hgx: CollectiveModel) -> None:
    lay = hgx.cluster.layout(np.arange(16))
    n = 1e9
    assert hgx.scale_out_bytes_per_gpu("allreduce", n, lay, "ring") == pytest.approx(2 * 15 / 16 * n / 8)
    assert hgx.scale_out_bytes_per_gpu("allreduce", n, lay, "hier") == pytest.approx(n / 8)
    assert hgx.scale_out_bytes_per_gpu("allreduce", n, hgx.layout_for(8), "ring") == 0.0


# ---------------------------------------------------------------------------------------------- memo
def test_memoised_per_instance_not_globally() -> None:
    prof = _profile(TIERS_2TO1)
    a = CollectiveModel(prof)
    b = CollectiveModel(dataclasses.replace(prof, scale_up=dataclasses.replace(prof.scale_up, latency=5e-6)))
    lay = a.layout_for(8)
    first = a.time("allreduce", 1024.0, lay)
    assert a.time("allreduce", 1024.0, lay) is first
    assert b.time("allreduce", 1024.0, lay).time_s > first.time_s  # no sharing between simulations


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, lay: m.time("allreduc", 1.0, lay), "did you mean 'allreduce'"),
        (lambda m, lay: m.time("allreduce", 1.0, lay, algo="rnig"), "did you mean 'ring'"),
        (lambda m, lay: m.time("allreduce", 1.0, lay, proto="simple2"), "did you mean 'Simple'"),
        (lambda m, lay: m.time("reducescatter", 1.0, lay, algo="tree"), "does not implement reducescatter"),
        (lambda m, lay: m.time("allreduce", 1.0, lay, algo="nvls", proto="LL"), "cannot use protocol LL"),
        (lambda m, lay: m.time("allreduce", 1.0, lay, concurrency=0.0), "concurrency"),
        (lambda m, lay: m.time("alltoallv", 1.0, lay, imbalance=0.5), "imbalance"),
        (lambda m, lay: m.time("allreduce", -1.0, lay), "bytes"),
        (lambda m, lay: m.layout_for(0), "at least one rank"),
        (lambda m, lay: m.layout_for(10**6), "--racks"),
    ],
)
def test_bad_input_is_one_clear_line(call, message: str) -> None:
    model = CollectiveModel(_profile(TIERS_2TO1, "scale_up.in_switch_reduction=true"))
    with pytest.raises(ConfigError, match=message) as err:
        call(model, model.layout_for(8))
    assert "\n" not in str(err.value)


def test_nvls_needs_in_switch_reduction() -> None:
    model = CollectiveModel(_profile("scale_up.in_switch_reduction=false"))
    with pytest.raises(ConfigError, match="in_switch_reduction"):
        model.time("allreduce", 1e6, model.layout_for(8), algo="nvls")
    # auto never picks it
    assert model.time("allreduce", 8 * GIB, model.layout_for(8)).algorithm != "nvls"


def test_ranks_beyond_cluster_say_how_many_racks() -> None:
    prof = _profile()
    model = CollectiveModel(prof, Cluster(prof, racks=2))
    with pytest.raises(ConfigError, match=r"need 3 racks.*--racks 3"):
        model.layout_for(65)
    bigger = CollectiveModel(prof, Cluster(prof, racks=3))
    assert math.isfinite(bigger.time("allreduce", 1e6, bigger.layout_for(65)).time_s)
