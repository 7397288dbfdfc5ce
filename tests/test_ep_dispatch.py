"""parallelism.ep_dispatch: DeepEP sends a token once per destination scale-up domain (and DeepSeek-V3's
group-limited routing caps those domains), so an expert all-to-all that crosses domains puts fewer bytes on
the NICs; inside one domain nothing changes."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from sim_helpers import simulate

from simcore.activity import GROUP_IDS, KIND_COLLECTIVE
from simcore.cluster import Cluster, make_layout
from simcore.collectives import CollectiveModel
from simcore.engine import Machine
from simcore.errors import ConfigError
from simcore.profile import load_profile
from workloads.model import MoESpec, domain_touch_probabilities, domains_per_token, load_model, load_preset
from workloads.spec import load_training_spec, model_to_mapping
from workloads.training import TrainingJob
from workloads.validation import NotRunnable, load_table, map_row, select_rows


def _monte_carlo(moe: MoESpec, sizes: list[int], tokens: int = 40_000, seed: int = 7) -> float:
    """Distinct domains per token by drawing routes: top groups at random, then top_k experts inside them;
    domain j holds the next ``sizes[j]`` experts."""
    rng = np.random.default_rng(seed)
    e, k = moe.experts, moe.top_k
    g_all, g_pick = moe.route_groups, moe.route_group_topk or moe.route_groups
    per_group = e // g_all
    bounds = np.cumsum(sizes)
    touched = np.empty(tokens)
    for t in range(tokens):
        groups = rng.choice(g_all, size=g_pick, replace=False)
        pool = (groups[:, None] * per_group + np.arange(per_group)[None, :]).ravel()
        experts = rng.choice(pool, size=k, replace=False)
        touched[t] = len(np.unique(np.searchsorted(bounds, experts, side="right")))
    return float(touched.mean())


@pytest.mark.parametrize(
    "experts,top_k,groups,group_topk,domains",
    [
        (256, 8, 8, 4, 8),  # DeepSeek-V3 on EP 64 over 8-GPU servers: one routing group per server
        (256, 8, 8, 4, 32),  # EP 256: a group spans 4 servers
        (256, 8, 8, 4, 4),  # two groups per server
        (256, 8, 1, 0, 8),  # no group limit
        (128, 8, 1, 0, 2),  # Qwen3-30B-A3B over two servers
        (8, 2, 1, 0, 4),  # Mixtral: few experts
        (96, 8, 8, 2, 12),  # groups of 12 over domains of 8: neither nests in the other
        (256, 8, 8, 4, [32, 224]),  # EP 64 on 72-GPU domains: 8 ranks in one, 56 in the next
        (256, 8, 8, 4, [24, 72, 72, 88]),  # uneven and not aligned with the groups
    ],
)
def test_domains_per_token_matches_drawn_routes(experts, top_k, groups, group_topk, domains):
    moe = MoESpec(
        experts=experts,
        top_k=top_k,
        expert_ffn_hidden=1,
        route_groups=groups,
        route_group_topk=group_topk,
    )
    sizes = [experts // domains] * domains if isinstance(domains, int) else domains
    exact = domains_per_token(moe, domains)
    assert exact == pytest.approx(_monte_carlo(moe, sizes), rel=0.01)
    assert 1.0 <= exact <= min(top_k, len(sizes))


def test_group_limit_and_fewer_domains_mean_fewer_copies():
    free = MoESpec(experts=256, top_k=8, expert_ffn_hidden=1)
    limited = MoESpec(experts=256, top_k=8, expert_ffn_hidden=1, route_groups=8, route_group_topk=4)
    assert domains_per_token(limited, 8) == pytest.approx(3.629, abs=1e-3)  # C(96,8)/C(128,8) closed form
    assert domains_per_token(free, 8) == pytest.approx(
        8 * (1 - np.prod([(224 - i) / (256 - i) for i in range(8)]))
    )
    for d in (2, 4, 8, 16, 32):
        assert domains_per_token(limited, d) <= domains_per_token(free, d)
    values = [domains_per_token(free, d) for d in (1, 2, 4, 8, 16, 32)]
    assert values == sorted(values) and values[0] == 1.0


def _spec(dispatch: str, ep: int) -> object:
    return load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "qwen3-30b-a3b", "seq_len": 2048, "layers": 2},
            "parallelism": {"tp": 1, "dp": 16, "ep": ep, "recompute": "none", "ep_dispatch": dispatch},
            "batch": {"global_seqs": 32, "micro": 1},
            "steps": 1,
        },
        file="dispatch.yaml",
    )


def _ep_bytes_and_step(spec: object) -> tuple[float, float]:
    _, machine, step = simulate(spec)
    table = machine.recorder.table()
    ep = (table["group"] == GROUP_IDS["ep"]) & (table["kind"] == KIND_COLLECTIVE)
    return float(table["nbytes"][ep].sum()), step


def test_deepep_moves_fewer_bytes_only_when_the_group_crosses_domains():
    # EP 16 spans both 8-GPU servers: deduplication shrinks its all-to-alls by E[domains touched] / top_k
    plain_bytes, plain_step = _ep_bytes_and_step(_spec("alltoall", ep=16))
    deep_bytes, deep_step = _ep_bytes_and_step(_spec("deepep", ep=16))
    moe = load_preset("qwen3-30b-a3b").moe
    assert plain_bytes > 0
    assert deep_bytes == pytest.approx(plain_bytes * domains_per_token(moe, 2) / moe.top_k, rel=1e-12)
    assert deep_step < plain_step
    # EP 8: the group is one server; DeepEP's intranode path moves what an all-to-all moves, and only skips
    # the all-to-all dispatcher's regrouping of the received tokens by local expert (two copies per pass)
    (a2a_bytes, a2a_step), (deep_bytes, deep_step) = (
        _ep_bytes_and_step(_spec(d, ep=8)) for d in ("alltoall", "deepep")
    )
    assert a2a_bytes == deep_bytes
    assert deep_step < a2a_step


def _job(preset: str, ep: int, dp: int, profile: str) -> TrainingJob:
    spec = load_training_spec(
        {
            "kind": "training",
            "model": {"preset": preset, "seq_len": 1024, "layers": 4},
            "parallelism": {"dp": dp, "ep": ep, "recompute": "none", "ep_dispatch": "deepep"},
            "batch": {"global_seqs": dp, "micro": 1},
        },
        file="nvl.yaml",
    )
    prof = load_profile(profile)
    cluster = Cluster(prof, racks=-(-spec.gpus // prof.gpus_per_rack))
    return TrainingJob(spec, Machine(simpy.Environment(), prof, cluster, CollectiveModel(prof, cluster)))


def test_uneven_domains_of_an_nvl72_rack_use_their_real_split():
    # EP 32 over 72-GPU domains: groups of 32 ranks split 32 | 8+24 | 16+16 ...; the job waits for the
    # busiest NIC: a GPU of the 8-rank part, whose copies mostly leave its domain
    job = _job("deepseek-v3", 32, 128, "gb200-nvl72.yaml")
    moe = job.spec.model.moe
    per_rank = moe.experts // 32
    expected = 0.0
    for small in range(1, 32):
        reach = domain_touch_probabilities(moe, [small * per_rank, (32 - small) * per_rank])
        if any(
            len(np.unique(row // 72)) == 2 and np.sum(row // 72 == row[0] // 72) == small
            for row in job.group_rows["ep"]
        ):
            expected = max(expected, reach[1] / (moe.top_k * (1 - small / 32)))
            expected = max(expected, reach[0] / (moe.top_k * (1 - (32 - small) / 32)))
    assert job.ep_send_scale == pytest.approx(expected, rel=1e-12)
    assert 0.0 < expected < 1.0
    # EP 128 on 72-GPU domains (128 experts do not split over 3 domains evenly): runs, and dedups
    assert 0.0 < _job("qwen3-30b-a3b", 128, 256, "gb200-nvl72.yaml").ep_send_scale < 1.0
    # inside one domain: nothing to deduplicate
    assert _job("qwen3-30b-a3b", 32, 64, "gb200-nvl72.yaml").ep_send_scale == 1.0


def test_forwarding_inside_the_domain_bounds_the_saving():
    # EP 16 over two 8-GPU servers: dedup alone would send a quarter of the bytes (one remote copy instead
    # of four). DeepEP still forwards every copy over the scale-up links: with those made slower (500 instead
    # of 900 GB/s), that forwarding (an all-to-all among one server's GPUs) sets the time, not the dedup.
    def scale(sets: tuple[str, ...]) -> tuple[float, float]:
        spec = load_training_spec(
            {
                "kind": "training",
                "model": {"preset": "qwen3-30b-a3b", "seq_len": 1024, "layers": 2},
                "parallelism": {"tp": 8, "dp": 2, "ep": 16, "recompute": "none", "ep_dispatch": "deepep"},
                "batch": {"global_seqs": 2, "micro": 1},
            },
            file="fwd.yaml",
        )
        prof = load_profile("h100-dgx.yaml", list(sets))
        cluster = Cluster(prof, racks=1)
        machine = Machine(simpy.Environment(), prof, cluster, CollectiveModel(prof, cluster))
        job = TrainingJob(spec, machine)
        layout = job.layouts["ep"]
        inside = make_layout(layout.ranks_per_domain, 1, tuple(1 for _ in layout.tier_blocks))
        model = machine.comm_model
        return job.ep_send_scale, model.time("alltoall", 2.0**30, inside).time_s / model.time(
            "alltoall", 2.0**30, layout
        ).time_s

    moe = load_preset("qwen3-30b-a3b").moe
    dedup = domains_per_token(moe, 2) / 2 / (moe.top_k / 2)  # remote domains / remote copies, even split
    fast, floor = scale(())
    assert fast == pytest.approx(dedup, rel=1e-9) and floor < dedup
    slow, floor = scale(("scale_up.bandwidth=500 GB/s",))
    assert dedup < floor < 1.0 and slow == pytest.approx(floor, rel=1e-9)


def test_bad_dispatch_and_routing_groups_are_one_line_errors():
    dense = {
        "kind": "training",
        "model": "llama3-8b",
        "parallelism": {"tp": 8, "ep_dispatch": "deepep"},
        "batch": {"global_seqs": 8, "micro": 1},
    }
    with pytest.raises(ConfigError, match=r"parallelism\.ep_dispatch"):
        load_training_spec(dense, file="x.yaml")
    preset = model_to_mapping(load_preset("deepseek-v3"))
    for moe, field in (
        ({"route_groups": 7}, "route_groups"),
        ({"route_groups": 8, "route_group_topk": 9}, "route_group_topk"),
        ({"route_groups": 128, "route_group_topk": 2}, "route_group_topk"),  # 2 groups of 2 < top_k 8
    ):
        with pytest.raises(ConfigError, match=field):
            load_model({**preset, "moe": {**preset["moe"], **moe}}, file="m.yaml")


def test_validation_applies_the_published_recipe_only_where_it_says_so():
    table, _ = load_table()
    h100 = map_row(select_rows(table, ["*DeepSeekV3_(dropless)-DGX-H100*"])[0], table)
    assert h100.spec["parallelism"]["ep_dispatch"] == "deepep"
    assert h100.spec["parallelism"]["ep_comm_overlap"] is True
    assert any("deepseek_llm_pretrain.py" in a for a in h100.assumptions)
    for pattern in ("*DeepSeekV3*-DGX-B200-*", "*Qwen3_235B*-DGX-H100-*"):
        for row in select_rows(table, [pattern]):
            try:
                plan = map_row(row, table)
            except NotRunnable:  # DeepSeek-V3 with its MTP module
                continue
            assert "ep_dispatch" not in plan.spec["parallelism"], plan.id
