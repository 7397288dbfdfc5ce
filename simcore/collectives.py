"""Collective communication times: a profile + a group's placement -> seconds, algorithm and protocol.

``CollectiveModel(profile, cluster)`` is built once per simulation. It turns a ``GroupLayout`` (how a group
sits on the scale-up domain and the fabric tiers, from ``simcore.cluster``) into per-level arrays — ranks,
achievable bandwidth per rank and direction, step latency — and asks the numba kernels in
``simcore.kernels.collectives`` for the cost of every algorithm and protocol; the fastest wins unless the
caller pins one (NCCL's rule, modeling-notes §1.4). Auto leaves out recursive halving-doubling (``rhd``),
which NCCL does not have: it is an explicit what-if (``algo="rhd"``). Sizes follow the nccl-tests convention S
(modeling-notes §1.3): all-reduce/broadcast/reduce/sendrecv the per-rank buffer, all-gather/reduce-scatter
the total gathered size, all-to-all the total a rank sends to all others.

Bandwidth per rank (modeling-notes §1.5 calibration, docs/collectives.md):

- scale-up: ``scale_up.bw_per_direction_Bps × scale_up.efficiency`` (a full mesh gives a group of p0 of
  its ``domain_size`` GPUs only (p0-1)/(domain_size-1) of that);
- scale-out tier t: ``nics_per_gpu × nic_bandwidth × scale_out.efficiency``, and for traffic that leaves
  tier-(t-1) blocks min(NIC, NIC / (oversubscription of tiers 0..t-1 × concurrency)) (``fabric.shortcut_bw_Bps``).

Memoisation lives on the instance (no module-level caches): two simulations in one process never share.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np

from simcore.cluster import TIER_SCALE_UP, Cluster, GroupLayout, contiguous_min_per_domain, make_layout
from simcore.errors import ConfigError
from simcore.fabric import shortcut_bw_Bps
from simcore.kernels import collectives as kc
from simcore.profile import Profile

OPS = kc.OP_NAMES
ALGORITHMS = kc.ALGO_NAMES
PROTOCOLS = kc.PROTO_NAMES
ALGO_ALIASES = {
    "direct": "pairwise",
    "nvls_tree": "nvls",
    "hierarchical": "hier",
    "halving_doubling": "rhd",
    "double_binary_tree": "tree",
}

# Operations whose NIC traffic is each rank's own (all-to-all: every rank sends to every peer; send/recv:
# one pair), not a domain's share spread over its members' NICs.
_PER_RANK_NIC_OPS = (kc.OP_ALLTOALL, kc.OP_ALLTOALLV, kc.OP_SENDRECV)

# nccl-tests busbw = algbw × factor (modeling-notes §1.3, nccl-tests src/*.cu).


def busbw_factor(op: str, ranks: int) -> float:
    """nccl-tests bus-bandwidth factor: 2(p-1)/p all-reduce, (p-1)/p RS/AG/A2A, 1 bcast/reduce/sendrecv."""
    if ranks <= 1 or op == "barrier":
        return 0.0 if op == "barrier" else 1.0
    if op == "allreduce":
        return 2.0 * (ranks - 1) / ranks
    if op in ("reducescatter", "allgather", "alltoall", "alltoallv"):
        return (ranks - 1) / ranks
    return 1.0


@dataclass(frozen=True)
class CollectiveTiming:
    """Time of one collective and how it would run."""

    time_s: float
    algorithm: str
    protocol: str


@dataclass(frozen=True)
class CollectiveTimes:
    """Times of one collective over many sizes (``times``): arrays aligned with the sizes."""

    nbytes: np.ndarray
    time_s: np.ndarray
    algorithm: np.ndarray  # str
    protocol: np.ndarray  # str


@dataclass(frozen=True)
class LevelArrays:
    """A group as the kernels see it: one entry per level (0 = scale-up, k = scale-out tier k-1)."""

    sizes: np.ndarray  # int64 [K] ranks (level 0) or children per block (k >= 1)
    bw_Bps: np.ndarray  # float64 [K] per rank, per direction, achievable
    lat_s: np.ndarray  # float64 [K] hardware latency of one step
    tech: np.ndarray  # int64 [K] TECH_SCALE_UP | TECH_NET
    ranks: int
    nvls_eff: float


def _choose(kind: str, value: str, names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    """Validate a name with a did-you-mean hint."""
    key = value.strip()
    lowered = {n.lower(): n for n in (*names, *extra)}
    if key.lower() in lowered:
        return lowered[key.lower()]
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.5)
    hint = f"did you mean {lowered[close[0]]!r}?" if close else None
    raise ConfigError(
        f"unknown {kind}", value=value, expected=f"one of {', '.join((*names, *extra))}", hint=hint
    )


def parse_op(op: str) -> int:
    return OPS.index(_choose("collective operation", op, OPS))


def parse_algo(algo: str) -> int:
    """-1 for auto, else the algorithm index (aliases such as ``direct`` accepted)."""
    name = _choose("algorithm", algo, ALGORITHMS, ("auto", *ALGO_ALIASES))
    name = ALGO_ALIASES.get(name, name)
    return -1 if name == "auto" else ALGORITHMS.index(name)


def parse_proto(proto: str) -> int:
    name = _choose("protocol", proto, PROTOCOLS, ("auto",))
    return -1 if name == "auto" else PROTOCOLS.index(name)


class CollectiveModel:
    """Times collectives on one profile's hardware; build once per run, call ``time`` per collective."""

    def __init__(self, profile: Profile, cluster: Cluster | None = None) -> None:
        self.profile = profile
        self.cluster = cluster if cluster is not None else Cluster(profile)
        su, so = profile.scale_up, profile.scale_out
        self.scale_up_Bps = su.bw_per_direction_Bps * su.efficiency
        self.nic_Bps = so.nics_per_gpu * so.nic_bandwidth * so.efficiency
        self.nvls_eff = su.in_switch_efficiency if su.in_switch_reduction and su.topology == "switch" else 0.0
        tiers = so.tiers
        self._cum_os = (
            tuple(float(x) for x in np.cumprod([t.oversubscription for t in tiers])) if tiers else ()
        )
        # Hardware latency of a hop routed by tier t: NIC to NIC, up through tiers below t, across t, down.
        self._tier_lat = tuple(
            so.latency + tiers[t].latency + 2.0 * sum(tiers[j].latency for j in range(t))
            for t in range(len(tiers))
        )
        self._memo: dict[tuple, CollectiveTiming] = {}
        self._levels_memo: dict[tuple, LevelArrays] = {}
        self._coeff_memo: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ placement
    def layout_for(self, ranks: int, first_gpu: int = 0) -> GroupLayout:
        """Layout of ``ranks`` consecutive GPUs from ``first_gpu`` (how nccl-tests places a job)."""
        if ranks < 1:
            raise ConfigError(
                "a collective needs at least one rank", path="--ranks", value=ranks, expected="ranks >= 1"
            )
        last = first_gpu + ranks
        if last > self.cluster.gpus:
            need = self.cluster.racks_needed(last)
            raise ConfigError(
                f"{ranks} ranks need {need} racks of {self.cluster.gpus_per_rack} GPUs but the cluster has "
                f"{self.cluster.racks} ({self.cluster.gpus} GPUs)",
                path="--ranks",
                value=ranks,
                hint=f"use --racks {need}",
            )
        # Contiguous GPUs: count the blocks each level touches directly (Cluster.layout would sort every
        # member; the result is the same, tests/test_collectives.py checks it).
        domains = (last - 1) // self.cluster.domain_size - first_gpu // self.cluster.domain_size + 1
        blocks = tuple((last - 1) // span - first_gpu // span + 1 for span in self.cluster.tier_spans)
        fewest = contiguous_min_per_domain(first_gpu, last, self.cluster.domain_size)
        return make_layout(ranks, domains, blocks, fewest)

    def scale_out_bw_Bps(self, tier: int, concurrency: float = 1.0) -> float:
        """Per-GPU bandwidth of traffic routed by fabric tier ``tier`` (it leaves blocks of tiers below)."""
        if tier <= 0 or not self._cum_os:
            shortcut_bw_Bps(self.nic_Bps, 1.0, concurrency)  # validates concurrency
            return self.nic_Bps
        return shortcut_bw_Bps(self.nic_Bps, self._cum_os[min(tier, len(self._cum_os)) - 1], concurrency)

    def levels(self, layout: GroupLayout, concurrency: float = 1.0) -> LevelArrays:
        """The kernel's view of a group: ranks, bandwidth and latency per level (memoised)."""
        key = (layout, concurrency)
        hit = self._levels_memo.get(key)
        if hit is not None:
            return hit
        if not 0.0 < concurrency <= 1.0:
            raise ConfigError(
                "concurrency must be in (0, 1]",
                value=concurrency,
                expected="the fraction of GPUs under a block using the tier at the same time",
            )
        su = self.profile.scale_up
        n_tiers = max(len(self._tier_lat), 1)
        k_levels = 1 + n_tiers
        sizes = np.ones(k_levels, dtype=np.int64)
        bw = np.empty(k_levels)
        lat = np.empty(k_levels)
        tech = np.full(k_levels, kc.TECH_NET, dtype=np.int64)
        p0 = max(1, layout.ranks_per_domain)
        sizes[0] = p0
        b_up = self.scale_up_Bps
        if su.topology == "full_mesh" and self.cluster.domain_size > 1 and p0 > 1:
            b_up *= (p0 - 1) / (self.cluster.domain_size - 1)  # only the links to the group's members
        bw[0] = b_up
        lat[0] = su.latency
        tech[0] = kc.TECH_SCALE_UP
        if self._tier_lat:
            fan = layout.tier_fanout
            for t in range(len(self._tier_lat)):
                s = fan[t] if t < len(fan) else 1
                if t == len(self._tier_lat) - 1 and t < len(layout.tier_blocks) and layout.tier_blocks[t] > 1:
                    s *= layout.tier_blocks[t]  # several top-tier blocks: they meet at the top tier
                sizes[1 + t] = s if layout.top_tier >= t else 1
                bw[1 + t] = self.scale_out_bw_Bps(t, concurrency)
                lat[1 + t] = self._tier_lat[t]
        else:  # no tiers described: one flat scale-out level
            sizes[1] = max(1, layout.domains)
            bw[1] = self.nic_Bps
            lat[1] = self.profile.scale_out.latency
        if layout.top_tier == TIER_SCALE_UP:
            sizes[1:] = 1
        out = LevelArrays(sizes, bw, lat, tech, int(layout.size), float(self.nvls_eff))
        for arr in (sizes, bw, lat, tech):
            arr.flags.writeable = False
        self._levels_memo[key] = out
        return out

    # ------------------------------------------------------------------ costs
    def coefficients(
        self, op: str, layout: GroupLayout, concurrency: float = 1.0, imbalance: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lat_s, slope_s_per_B) [NALGO, NPROTO]: t = lat + slope·n for every algorithm and protocol."""
        key = (op, layout, concurrency, imbalance)
        hit = self._coeff_memo.get(key)
        if hit is not None:
            return hit
        op_i = parse_op(op)
        if imbalance < 1.0 or not math.isfinite(imbalance):
            raise ConfigError(
                "all-to-all-v imbalance must be >= 1",
                value=imbalance,
                expected="max/mean bytes per rank, >= 1",
            )
        lv = self.levels(layout, concurrency)
        share = np.ones(len(lv.bw_Bps))
        p0, fewest = max(1, layout.ranks_per_domain), layout.nic_ranks_per_domain
        if fewest < p0 and op_i not in _PER_RANK_NIC_OPS:
            # A ring or tree leaves every domain through that domain's members' NICs: the sparsest domain
            # (8 + 1 ranks: one NIC) bounds it, not the mean the kernel's p0 stands for.
            share[1:] = fewest / p0
        bw = lv.bw_Bps * share
        lat, slope = self._kernel(op_i, lv, bw, imbalance)
        ring_bw = self._ring_bw(lv, concurrency) * share
        if np.any(ring_bw != bw):
            lat_r, slope_r = self._kernel(op_i, lv, ring_bw, imbalance)
            lat[0, kc.A_RING], slope[0, kc.A_RING] = lat_r[0, kc.A_RING], slope_r[0, kc.A_RING]
        if layout.nic_ranks_per_domain < 2 and layout.top_tier != TIER_SCALE_UP:
            lat[0, kc.A_NVLS] = slope[0, kc.A_NVLS] = math.inf  # a domain with one member has no NVLS
        out = (lat[0], slope[0])
        out[0].flags.writeable = False
        out[1].flags.writeable = False
        self._coeff_memo[key] = out
        return out

    @staticmethod
    def _kernel(
        op_i: int, lv: LevelArrays, bw: np.ndarray, imbalance: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's (lat, slope) [1, NALGO, NPROTO] for one group with per-level bandwidths ``bw``."""
        return kc.collective_coeffs(
            op_i,
            lv.sizes[None, :],
            bw[None, :],
            lv.lat_s[None, :],
            lv.tech[None, :],
            np.array([lv.ranks], dtype=np.int64),
            np.array([lv.nvls_eff]),
            float(imbalance),
        )

    def _ring_bw(self, lv: LevelArrays, concurrency: float) -> np.ndarray:
        """Per-level bandwidth a flat ring sees: it leaves a fabric block once per channel, not from every GPU.

        A group with m domains under a block exits it from one of them, so of the GPUs under the block
        (all in such groups when concurrency is 1) only 1/m send through its uplink at once: the shortcut
        takes concurrency / m, m = the product of the group's fan-outs below that level (the flow model's
        rail rings load the uplinks the same way).
        """
        bw = lv.bw_Bps.copy()
        if not self._tier_lat:
            return bw
        inside = 1
        for k in range(1, len(bw)):
            bw[k] = self.scale_out_bw_Bps(k - 1, concurrency / inside)
            inside *= int(lv.sizes[k])
        return bw

    def _masks(self, op: str, layout: GroupLayout, algo: str, proto: str) -> tuple[np.ndarray, np.ndarray]:
        a = parse_algo(algo)
        pr = parse_proto(proto)
        op_name = OPS[parse_op(op)]
        algo_mask = np.ones(kc.NALGO, dtype=np.bool_)
        proto_mask = np.ones(kc.NPROTO, dtype=np.bool_)
        if a >= 0:
            self._check_algo(op_name, a, pr, layout)
            algo_mask[:] = False
            algo_mask[a] = True
        else:
            # auto = what NCCL would pick: it has no recursive halving-doubling, so that stays opt-in.
            algo_mask[kc.A_RHD] = False
        if pr >= 0:
            proto_mask[:] = False
            proto_mask[pr] = True
        return algo_mask, proto_mask

    def _check_algo(self, op: str, a: int, pr: int, layout: GroupLayout) -> None:
        """Clear errors for a pinned algorithm the operation or the hardware cannot run."""
        name = ALGORITHMS[a]
        op_i = OPS.index(op)
        if not kc.APPLICABLE[op_i, a]:
            able = [ALGORITHMS[i] for i in range(kc.NALGO) if kc.APPLICABLE[op_i, i]]
            raise ConfigError(
                f"algorithm {name!r} does not implement {op}",
                path="--algo",
                value=name,
                expected=f"one of auto, {', '.join(able)}",
            )
        if pr >= 0 and kc.PROTO_BW_EFF[a, pr] == 0.0:
            able = [PROTOCOLS[i] for i in range(kc.NPROTO) if kc.PROTO_BW_EFF[a, i] > 0]
            raise ConfigError(
                f"algorithm {name!r} cannot use protocol {PROTOCOLS[pr]}",
                path="--proto",
                value=PROTOCOLS[pr],
                expected=f"one of auto, {', '.join(able)}",
            )
        if a == kc.A_NVLS and layout.size > 1:
            su = self.profile.scale_up
            src = self.profile.source_file or self.profile.name
            if not su.in_switch_reduction or su.topology != "switch":
                raise ConfigError(
                    "nvls needs in-switch reduction, which this hardware does not have",
                    file=src,
                    path="scale_up.in_switch_reduction",
                    value=su.in_switch_reduction,
                    expected="true (NVLink SHARP switches) or another --algo",
                )
            if layout.nic_ranks_per_domain < 2:
                raise ConfigError(
                    "nvls needs at least 2 ranks of the group in each scale-up domain",
                    path="--algo",
                    value=name,
                    expected="ring, tree or hier for this group",
                )
            if op in ("reducescatter", "allgather") and layout.top_tier != TIER_SCALE_UP:
                raise ConfigError(
                    f"nvls {op} runs inside one scale-up domain only",
                    path="--algo",
                    value=name,
                    expected="ring, hier or rhd for a group spanning domains",
                )

    def time(
        self,
        op: str,
        nbytes: float,
        layout: GroupLayout,
        algo: str = "auto",
        proto: str = "auto",
        concurrency: float = 1.0,
        imbalance: float = 1.0,
    ) -> CollectiveTiming:
        """Time of one collective of ``nbytes`` (nccl-tests S) over a group placed as ``layout``.

        ``concurrency`` in (0, 1]: fraction of the GPUs under a fabric block that use the tier at the same
        time (1.0 when every data-parallel group communicates at once). ``imbalance`` (all-to-all-v only):
        bytes of the busiest rank over the mean, >= 1. Memoised per (op, nbytes, layout, algo, proto, ...).
        """
        key = (op, nbytes, layout, algo, proto, concurrency, imbalance)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        if not nbytes >= 0 or not math.isfinite(nbytes):
            raise ConfigError("collective size must be a finite number of bytes >= 0", value=nbytes)
        lat, slope = self.coefficients(op, layout, concurrency, imbalance)
        algo_mask, proto_mask = self._masks(op, layout, algo, proto)
        if layout.size <= 1:  # nothing to communicate
            out = self._memo[key] = CollectiveTiming(0.0, "none", "none")
            return out
        n = 0.0 if op == "barrier" else float(nbytes)
        best = math.inf
        ba = bp = -1
        for a in np.flatnonzero(algo_mask).tolist():
            for pr in np.flatnonzero(proto_mask).tolist():
                la = lat[a, pr]
                if la == math.inf:
                    continue
                t = la + slope[a, pr] * n
                if t < best:
                    best, ba, bp = t, a, pr
        if ba < 0:
            raise ConfigError(
                f"no algorithm can run {op} on this group with the requested settings",
                value=f"algo={algo}, proto={proto}",
                expected="--algo auto --proto auto",
            )
        out = CollectiveTiming(float(best), ALGORITHMS[ba], PROTOCOLS[bp])
        self._memo[key] = out
        return out

    def times(
        self,
        op: str,
        nbytes: np.ndarray,
        layout: GroupLayout,
        algo: str = "auto",
        proto: str = "auto",
        concurrency: float = 1.0,
        imbalance: float = 1.0,
    ) -> CollectiveTimes:
        """``time`` vectorised over sizes: one kernel call for the whole array."""
        nb = np.ascontiguousarray(np.asarray(nbytes, dtype=np.float64).ravel())
        if nb.size and (not np.all(np.isfinite(nb)) or nb.min() < 0):
            raise ConfigError("collective sizes must be finite numbers of bytes >= 0")
        lat, slope = self.coefficients(op, layout, concurrency, imbalance)
        algo_mask, proto_mask = self._masks(op, layout, algo, proto)
        q = np.zeros_like(nb) if op == "barrier" else nb
        t, a, pr = kc.collective_times(
            q, np.zeros(len(q), dtype=np.int64), lat[None], slope[None], algo_mask, proto_mask
        )
        if len(a) and a.min() < 0:
            raise ConfigError(
                f"no algorithm can run {op} on this group with the requested settings",
                value=f"algo={algo}, proto={proto}",
                expected="--algo auto --proto auto",
            )
        if layout.size <= 1:  # nothing to communicate
            none = np.full(len(nb), "none")
            return CollectiveTimes(nb, np.zeros(len(nb)), none, none.copy())
        return CollectiveTimes(nb, t, np.asarray(ALGORITHMS)[a], np.asarray(PROTOCOLS)[pr])

    def busbw_Bps(
        self,
        op: str,
        nbytes: float,
        layout: GroupLayout,
        algo: str = "auto",
        proto: str = "auto",
        concurrency: float = 1.0,
        imbalance: float = 1.0,
    ) -> float:
        """nccl-tests bus bandwidth of one collective (algbw × busbw_factor)."""
        t = self.time(op, nbytes, layout, algo, proto, concurrency, imbalance).time_s
        return nbytes / t * busbw_factor(op, layout.size) if t > 0 else 0.0

    def scale_out_bytes_per_gpu(self, op: str, nbytes: float, layout: GroupLayout, algorithm: str) -> float:
        """Bytes each member pushes through its NIC (per direction) under ``algorithm``.

        What a flow-level run (``simcore.fabric.FlowNetwork``) needs per member on its rail path, and the NIC
        activity for the power model. Follows the same traffic accounting as the kernels.
        """
        lv = self.levels(layout)
        p, p0 = lv.ranks, int(lv.sizes[0])
        d = int(np.prod(lv.sizes[1:]))
        fewest = layout.nic_ranks_per_domain  # the sparsest domain's members carry its share
        if layout.top_tier == TIER_SCALE_UP or p <= 1 or op == "barrier":
            return 0.0
        n = float(nbytes)
        a = ALGO_ALIASES.get(algorithm, algorithm)
        if op == "sendrecv":
            return n
        if op in ("alltoall", "alltoallv"):
            return (p - p0) / p * n
        if op in ("broadcast", "reduce"):
            return n / fewest
        coll = 2.0 if op == "allreduce" else 1.0
        if a == "ring":
            return coll * (p - 1) / p * n / fewest
        if a in ("tree", "nvls"):
            return kc.tree_load_ref(d) * n / fewest
        return coll * (d - 1) / d * n / fewest  # hier / rhd: the scale-out phases move n/p0 per member
