"""Speed of the collective model and the contention solver (pytest-benchmark; a few seconds in all).

Run: ``pytest benchmarks/test_bench_collectives.py``. Targets (the issue's): >= 1,000,000 collective-time
evaluations per second in one vectorised call; a 1 GiB hierarchical all-reduce over 4,096 and 65,536
ranks (8 per domain) in < 10 ms each, building the layout from the cluster included; 10,000 concurrent
flows re-solved (max-min) in < 50 ms. Rates go to ``benchmark.extra_info``.
"""

from __future__ import annotations

import numpy as np
import pytest

from simcore.cluster import Cluster
from simcore.collectives import CollectiveModel
from simcore.fabric import FabricLinks, FlowNetwork
from simcore.kernels import collectives as kc
from simcore.profile import Profile, load_profile

N_EVALS = 1_000_000
N_FLOWS = 10_000
GIB = 2**30


@pytest.fixture(scope="module")
def h100() -> Profile:
    return load_profile("h100-dgx.yaml")


def test_bench_vectorised_collective_times(benchmark: pytest.FixtureType, h100: Profile) -> None:
    """One ``times`` call over a million sizes (auto: every algorithm x protocol considered per size)."""
    model = CollectiveModel(h100)
    layout = model.layout_for(1024)
    sizes = 2.0 ** np.random.default_rng(0).uniform(0, 34, N_EVALS)
    model.times("allreduce", sizes[:10], layout)  # JIT / memo warm-up
    res = benchmark.pedantic(
        model.times, args=("allreduce", sizes, layout), rounds=5, iterations=1, warmup_rounds=1
    )
    assert np.all(np.isfinite(res.time_s))
    rate = N_EVALS / benchmark.stats.stats.mean
    benchmark.extra_info["evaluations_per_s"] = rate
    assert rate >= 1e6


def test_bench_kernel_many_groups(benchmark: pytest.FixtureType) -> None:
    """Kernels alone, vectorised over 10,000 groups and a million (size, group) queries."""
    rng = np.random.default_rng(1)
    g = 10_000
    sizes = np.stack(
        [rng.integers(1, 9, g), rng.integers(1, 17, g), rng.integers(1, 9, g), np.ones(g, int)], 1
    )
    bw = np.stack([np.full(g, 369e9), np.full(g, 47e9), np.full(g, 23.5e9), np.full(g, 47e9)], 1)
    lat = np.tile([1e-6, 4e-6, 6e-6, 9e-6], (g, 1))
    tech = np.tile([0, 1, 1, 1], (g, 1))
    ranks = sizes.prod(axis=1)
    nvls = np.full(g, 0.85)
    nbytes = 2.0 ** rng.uniform(0, 34, N_EVALS)
    gi = rng.integers(0, g, N_EVALS)
    masks = np.ones(kc.NALGO, np.bool_), np.ones(kc.NPROTO, np.bool_)

    def run() -> np.ndarray:
        lat_s, slope = kc.collective_coeffs(kc.OP_ALLREDUCE, sizes, bw, lat, tech, ranks, nvls, 1.0)
        return kc.collective_times(nbytes, gi, lat_s, slope, *masks)[0]

    run()
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["evaluations_per_s"] = N_EVALS / benchmark.stats.stats.mean
    assert N_EVALS / benchmark.stats.stats.mean >= 1e6


@pytest.mark.parametrize("ranks", [4096, 65536])
def test_bench_hierarchical_allreduce_at_scale(
    benchmark: pytest.FixtureType, h100: Profile, ranks: int
) -> None:
    """Fresh model + layout from the cluster + one 1 GiB hierarchical all-reduce, per round."""
    cluster = Cluster(h100, racks=ranks // h100.gpus_per_rack)

    def run() -> float:
        model = CollectiveModel(h100, cluster)
        layout = model.layout_for(ranks)  # from the cluster's geometry: GPUs 0..ranks-1
        return model.time("allreduce", float(GIB), layout, algo="hier").time_s

    run()
    t = benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    assert t > 0
    benchmark.extra_info["collective_time_s"] = t
    assert benchmark.stats.stats.mean < 0.010


def _flows(seed: int = 2) -> tuple[FlowNetwork, np.ndarray, np.ndarray]:
    """10,000 flows between random GPUs of a 16,384-GPU cluster with 2:1 leaf uplinks."""
    prof = load_profile(
        "h100-dgx.yaml",
        overrides=[
            "scale_out.tiers=[{name: leaf, span_gpus: 256, oversubscription: 2, latency: 1 us},"
            " {name: spine, span_gpus: 65536, oversubscription: 1, latency: 1 us}]"
        ],
    )
    cluster = Cluster(prof, racks=512)
    net = FlowNetwork()
    fab = FabricLinks(net, cluster)
    rng = np.random.default_rng(seed)
    src = rng.integers(0, cluster.gpus, N_FLOWS)
    dst = (src + rng.integers(8, cluster.gpus - 8, N_FLOWS)) % cluster.gpus
    indptr, idx = fab.paths(src, dst)
    return net, indptr, idx


def test_bench_maxmin_solver_10k_flows(benchmark: pytest.FixtureType) -> None:
    net, indptr, idx = _flows()
    caps = np.full(N_FLOWS, np.inf)
    link_cap = np.array([net.capacity(i) for i in range(net.n_links)])
    rates = benchmark.pedantic(
        kc.maxmin_rates, args=(indptr, idx, link_cap, caps), rounds=10, iterations=1, warmup_rounds=1
    )
    assert np.all(rates > 0)
    benchmark.extra_info["flows"] = N_FLOWS
    benchmark.extra_info["links"] = net.n_links
    assert benchmark.stats.stats.mean < 0.050


def test_bench_flow_network_event_10k_flows(benchmark: pytest.FixtureType) -> None:
    """A flow starting and one finishing among 10,000 active ones: two re-solves, bookkeeping included."""
    net, indptr, idx = _flows()
    ids = net.start_many(0.0, indptr, idx, np.full(N_FLOWS, 1e9))
    state = {"t": 0.0, "ids": list(ids)}

    def event() -> None:
        state["t"] += 1e-6
        new = net.start(state["t"], idx[indptr[0] : indptr[1]], 1e9)
        net.finish(state["ids"].pop(0), now=state["t"])
        state["ids"].append(new)

    benchmark.pedantic(event, rounds=10, iterations=1, warmup_rounds=1)
    assert net.n_flows == N_FLOWS
    benchmark.extra_info["re_solves_per_round"] = 2
    assert benchmark.stats.stats.mean < 2 * 0.050
