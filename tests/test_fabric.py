"""Tests for flow-level contention: the max-min kernel, FlowNetwork, FabricLinks and the analytical shortcut."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.cluster import Cluster
from simcore.collectives import CollectiveModel
from simcore.errors import ConfigError
from simcore.fabric import FabricLinks, FlowNetwork, shortcut_bw_Bps
from simcore.kernels.collectives import maxmin_rates, maxmin_rates_ref
from simcore.profile import load_profile

SETTINGS = settings(max_examples=40, deadline=None)
NIC = 50e9 * 0.94

# 8-GPU domains; leaf blocks of 16 GPUs (2 domains) with 2:1 uplinks; a non-blocking spine.
FABRIC = [
    "scale_up.domain_size=8",
    "rack.gpus_per_tray=8",
    "rack.trays_per_rack=2",
    "cluster.racks=4",
    "scale_up.bandwidth=900 GB/s",
    "scale_up.efficiency=0.82",
    "scale_up.in_switch_reduction=false",
    "scale_out.nic_bandwidth=400 Gb/s",
    "scale_out.efficiency=0.94",
    "scale_out.tiers=[{name: leaf, span_gpus: 16, oversubscription: 2, latency: 1 us},"
    " {name: spine, span_gpus: 4096, oversubscription: 1, latency: 2 us}]",
]


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster(load_profile("gen2.yaml", overrides=FABRIC))


def _csr(paths: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.zeros(len(paths) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in paths], out=indptr[1:])
    idx = np.array([lk for p in paths for lk in p], dtype=np.int64)
    return indptr, idx


# ---------------------------------------------------------------------------------------------- kernel
@st.composite
def _flow_problem(draw: st.DrawFn) -> tuple:
    n_links = draw(st.integers(1, 8))
    n_flows = draw(st.integers(1, 12))
    paths = [
        draw(st.lists(st.integers(0, n_links - 1), min_size=0, max_size=4, unique=True))
        for _ in range(n_flows)
    ]
    cap = np.array([draw(st.sampled_from([1.0, 2.0, 3.0, 10.0, 0.5])) * 1e9 for _ in range(n_links)])
    fcap = np.array([draw(st.sampled_from([math.inf, math.inf, 0.7e9, 2e9, 0.0])) for _ in range(n_flows)])
    return paths, cap, fcap


@SETTINGS
@given(_flow_problem())
def test_maxmin_kernel_matches_progressive_filling(problem: tuple) -> None:
    paths, cap, fcap = problem
    indptr, idx = _csr(paths)
    got = maxmin_rates(indptr, idx, cap, fcap)
    ref = maxmin_rates_ref(indptr, idx, cap, fcap)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-3)  # two algorithms: equal up to rounding
    # Max-min fairness: feasible, and every finite flow is capped or has a saturated link where it is largest.
    load = np.zeros(len(cap))
    for f, p in enumerate(paths):
        for lk in p:
            load[lk] += got[f]
    assert np.all(load <= cap * (1 + 1e-9) + 1e-3)
    for f, p in enumerate(paths):
        if not np.isfinite(got[f]):
            assert not p and math.isinf(fcap[f])
            continue
        if got[f] >= fcap[f] * (1 - 1e-9):
            continue
        bottleneck = [
            lk
            for lk in p
            if load[lk] >= cap[lk] * (1 - 1e-9)
            and all(got[g] <= got[f] * (1 + 1e-9) for g, q in enumerate(paths) if lk in q)
        ]
        assert bottleneck, f"flow {f} has no bottleneck"


def test_maxmin_textbook_cases() -> None:
    # Parking lot: flow 0 crosses links 0 and 1 (cap 1), flows 1 and 2 use one each -> all 0.5.
    indptr, idx = _csr([[0, 1], [0], [1]])
    np.testing.assert_allclose(maxmin_rates(indptr, idx, np.array([1.0, 1.0]), np.full(3, np.inf)), 0.5)
    # Uneven: link 0 cap 1 shared by flows 0,1; link 1 cap 3 shared by flows 1,2 -> 0.5, 0.5, 2.5.
    indptr, idx = _csr([[0], [0, 1], [1]])
    np.testing.assert_allclose(
        maxmin_rates(indptr, idx, np.array([1.0, 3.0]), np.full(3, np.inf)), [0.5, 0.5, 2.5]
    )
    # A cap frees capacity for the others.
    indptr, idx = _csr([[0], [0], [0]])
    np.testing.assert_allclose(
        maxmin_rates(indptr, idx, np.array([3.0]), np.array([0.5, np.inf, np.inf])), [0.5, 1.25, 1.25]
    )


# ---------------------------------------------------------------------------------------------- FlowNetwork
def test_flow_network_single_and_staggered_flows() -> None:
    net = FlowNetwork()
    link = net.add_link(10.0)
    a = net.start(0.0, [link], 100.0)
    assert net.rate(a) == 10.0
    assert net.next_completion() == (10.0, a)
    b = net.start(4.0, [link], 30.0)  # a has 60 B left; both now get 5 B/s
    assert net.remaining(a) == pytest.approx(60.0)
    assert net.rate(a) == net.rate(b) == 5.0
    t, first = net.next_completion()
    assert (t, first) == (pytest.approx(10.0), b)
    net.finish(b, now=t)
    assert net.rate(a) == 10.0  # re-solved on finish
    assert net.next_completion()[0] == pytest.approx(13.0)


def test_flow_network_drain_and_caps() -> None:
    net = FlowNetwork()
    links = net.add_links(np.array([8.0, 8.0]))
    f0 = net.start(0.0, links, 16.0, rate_cap=2.0)
    f1 = net.start(0.0, [links[0]], 12.0)
    done = net.drain()
    assert done[f1] == pytest.approx(2.0)  # 6 B/s while f0 is capped at 2
    assert done[f0] == pytest.approx(8.0)
    assert net.n_flows == 0 and net.next_completion() is None


def test_flow_network_rejects_bad_input() -> None:
    net = FlowNetwork()
    link = net.add_link(1.0)
    with pytest.raises(ConfigError):
        net.start(0.0, [link + 5], 1.0)
    with pytest.raises(ConfigError):
        net.start(0.0, [link], -1.0)
    with pytest.raises(ConfigError):
        net.add_link(-1.0)
    net.start(1.0, [link], 1.0)
    with pytest.raises(ValueError):
        net.advance(0.5)


# ---------------------------------------------------------------------------------------------- fabric
def test_fabric_links_paths(cluster: Cluster) -> None:
    net = FlowNetwork()
    fab = FabricLinks(net, cluster, scale_up=True)
    assert fab.uplink_capacity_Bps(0) == pytest.approx(16 * NIC / 2)
    assert fab.uplink_capacity_Bps(1) == pytest.approx(4096 * NIC / 2)  # cumulative oversubscription
    assert fab.path(0, 1).tolist() == [fab.su_tx[0], fab.su_rx[1]]  # same domain: NVLink ports
    assert fab.path(0, 8).tolist() == [fab.nic_tx[0], fab.nic_rx[8]]  # same leaf block: NICs only
    assert fab.path(0, 16).tolist() == [fab.nic_tx[0], fab.nic_rx[16], fab.up[0][0], fab.down[0][1]]
    src, dst = fab.rail_pairs(np.concatenate([np.arange(0, 8), np.arange(16, 24)]))
    assert src.tolist() == [*range(0, 8), *range(16, 24)]
    assert dst.tolist() == [*range(16, 24), *range(0, 8)]


def _ring_flows(net: FlowNetwork, fab: FabricLinks, members: np.ndarray, nbytes: float) -> np.ndarray:
    src, dst = fab.rail_pairs(members)
    indptr, idx = fab.paths(src, dst)
    return net.start_many(net.now, indptr, idx, np.full(len(src), nbytes))


def test_two_allreduces_on_a_2to1_tier_each_take_twice_as_long(cluster: Cluster) -> None:
    """Scale-out phases of two DP all-reduces sharing 2:1 leaf uplinks; and two that share nothing."""
    nbytes = 1e9
    group_a = np.concatenate([np.arange(0, 8), np.arange(16, 24)])  # domains 0 and 2: leaf blocks 0, 1
    group_b = np.concatenate([np.arange(8, 16), np.arange(24, 32)])  # domains 1 and 3: same blocks
    alone = FlowNetwork()
    fab = FabricLinks(alone, cluster)
    _ring_flows(alone, fab, group_a, nbytes)
    t_alone = max(alone.drain().values())
    assert t_alone == pytest.approx(nbytes / NIC)  # 8 flows per 8-NIC uplink: full NIC rate
    both = FlowNetwork()
    fab = FabricLinks(both, cluster)
    _ring_flows(both, fab, group_a, nbytes)
    _ring_flows(both, fab, group_b, nbytes)
    t_both = max(both.drain().values())
    assert t_both / t_alone == pytest.approx(2.0, rel=1e-9)
    # Two groups that stay inside their leaf blocks share no uplink: no slowdown.
    apart = FlowNetwork()
    fab = FabricLinks(apart, cluster)
    _ring_flows(apart, fab, np.arange(0, 16), nbytes)
    _ring_flows(apart, fab, np.arange(16, 32), nbytes)
    assert max(apart.drain().values()) == pytest.approx(t_alone)


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_flow_network_agrees_with_the_concurrency_shortcut(cluster: Cluster, groups: int) -> None:
    """Symmetric job: ``2 x groups`` two-rank DP groups, each spanning leaf blocks 0 and 1.

    Every hop leaves its leaf block, so ``2 x groups`` of the 16 GPUs under a block use its 2:1 uplink at
    once; max-min sharing then gives each flow exactly min(NIC, NIC / (oversubscription x concurrency)).
    """
    net = FlowNetwork()
    fab = FabricLinks(net, cluster)
    nbytes = 1e9
    for k in range(groups):
        members = np.array([k, 16 + k])  # one rank per leaf block: every hop leaves the block
        _ring_flows(net, fab, members, nbytes)
        members = np.array([8 + k, 24 + k])
        _ring_flows(net, fab, members, nbytes)
    t_flow = max(net.drain().values())
    concurrency = 2 * groups / 16  # GPUs under a leaf block using its uplink at once
    t_shortcut = nbytes / shortcut_bw_Bps(NIC, 2.0, concurrency)
    assert t_flow == pytest.approx(t_shortcut, rel=1e-9)


def test_flow_network_matches_collective_model_ring_bandwidth(cluster: Cluster) -> None:
    """The CollectiveModel's ring time (latency removed) equals draining its rail flows in a FlowNetwork."""
    model = CollectiveModel(cluster.profile, cluster)
    members = np.array([0, 16, 32, 48])  # one rank per domain, 4 leaf blocks (spine level)
    layout = cluster.layout(members)
    n = 4e9
    p = len(members)
    _lat, slope = model.coefficients("allreduce", layout, concurrency=1.0)
    model_bw_time = slope[0, 2] * n  # ring, Simple: the bandwidth term
    net = FlowNetwork()
    fab = FabricLinks(net, cluster)
    for k in range(8):  # every GPU under each leaf block runs such a group: concurrency 1
        _ring_flows(net, fab, members + k, 2 * (p - 1) / p * n)
        _ring_flows(net, fab, members + 8 + k, 2 * (p - 1) / p * n)
    assert max(net.drain().values()) == pytest.approx(model_bw_time, rel=1e-9)
    assert model.scale_out_bytes_per_gpu("allreduce", n, layout, "ring") == pytest.approx(2 * (p - 1) / p * n)


def test_shortcut_validates_concurrency() -> None:
    assert shortcut_bw_Bps(10.0, 4.0, 0.25) == 10.0
    assert shortcut_bw_Bps(10.0, 4.0, 1.0) == 2.5
    with pytest.raises(ConfigError):
        shortcut_bw_Bps(10.0, 2.0, 1.5)


def test_a_flow_finishing_below_the_clocks_resolution_completes_now():
    """At t = 1e6 s the clock resolves ~1.2e-10 s; 2 bytes at 1 TB/s take 2e-12 s (above the 1e-6-byte
    done threshold, below the resolution): now + eta rounds to now, so the flow must count as done now,
    or an event loop waking at that time would find it unfinished forever (a livelock seen with
    --contention flow)."""
    net = FlowNetwork()
    link = net.add_link(1e12)
    net.advance(1e6)
    fid = net.start(1e6, [link], 2.0)
    t, nxt = net.next_completion()
    assert nxt == fid and t == 1e6
    net.advance(t)
    assert net.completed().tolist() == [fid]
    assert net.drain() == {fid: 1e6}
