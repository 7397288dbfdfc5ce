"""Collective-communication kernels: NCCL-style α–β costs over a multi-tier group, and max-min fair sharing.

Pure functions over numpy arrays, ``@njit(cache=True)``; each kernel ``f`` has a plain-numpy ``f_ref`` that
says what it means and is what the tests compare against. ``simcore.collectives`` turns a profile and a
``GroupLayout`` into the arrays taken here; see ``docs/collectives.md`` for the model.

**Levels.** A group is described by K levels (padded with size 1): level 0 is the scale-up domain
(``sizes[0]`` = ranks per domain), level k >= 1 is scale-out tier k-1 (``sizes[k]`` = children of one
tier block that the group touches: domains under a leaf block, leaf blocks under a spine block, ...).
Per level: ``bw_Bps`` = achievable bandwidth per rank and direction (efficiency, oversubscription and
concurrency already applied), ``lat_s`` = hardware latency of one step, ``tech`` = which row of NCCL's
hardware-latency table applies (TECH_SCALE_UP = NVLINK, TECH_NET = NET).

**Every cost is affine in the message size**, t(n) = lat + slope·n (modeling-notes §1.2: α–β), so the
kernels first compute ``(lat, slope)`` per (group, algorithm, protocol) and then evaluate many sizes at
the cost of a multiply-add each; the chosen pair is the one with the lowest time (NCCL's
``ncclTopoGetAlgoTime`` rule, modeling-notes §1.4).

**Constants** are NCCL's (``src/graph/tuning.cc``, modeling-notes §1.4): base latencies per algorithm and
protocol, per-step hardware latencies per link type, and protocol bandwidth efficiencies (LL carries 4 B
of data per 8 B store, LL128 120 B per 128 B line). The profile's latency is the hardware step latency
(what LL sees); heavier protocols add NCCL's measured difference ``hwLat[proto] - hwLat[LL]``.
"""

from __future__ import annotations

import numba
import numpy as np

# ----------------------------------------------------------------------------------------------- codes
OP_NAMES = (
    "allreduce",
    "reducescatter",
    "allgather",
    "alltoall",
    "alltoallv",
    "broadcast",
    "reduce",
    "sendrecv",
    "barrier",
)
(
    OP_ALLREDUCE,
    OP_REDUCESCATTER,
    OP_ALLGATHER,
    OP_ALLTOALL,
    OP_ALLTOALLV,
    OP_BROADCAST,
    OP_REDUCE,
    OP_SENDRECV,
    OP_BARRIER,
) = range(len(OP_NAMES))

ALGO_NAMES = ("ring", "tree", "nvls", "hier", "rhd", "pairwise", "p2p")
A_RING, A_TREE, A_NVLS, A_HIER, A_RHD, A_PAIRWISE, A_P2P = range(len(ALGO_NAMES))
NALGO = len(ALGO_NAMES)

PROTO_NAMES = ("LL", "LL128", "Simple")
P_LL, P_LL128, P_SIMPLE = range(len(PROTO_NAMES))
NPROTO = len(PROTO_NAMES)

TECH_SCALE_UP = 0  # NCCL's NVLINK row
TECH_NET = 1  # NCCL's NET row

# Which algorithms implement which operation (rows: OP_NAMES, columns: ALGO_NAMES).
APPLICABLE = np.array(
    [
        # ring   tree   nvls   hier   rhd    pairw  p2p
        [True, True, True, True, True, False, False],  # allreduce
        [True, False, True, True, True, False, False],  # reducescatter
        [True, False, True, True, True, False, False],  # allgather
        [False, False, False, True, False, True, False],  # alltoall
        [False, False, False, True, False, True, False],  # alltoallv
        [True, True, False, False, False, False, False],  # broadcast
        [True, True, False, False, False, False, False],  # reduce
        [False, False, False, False, False, False, True],  # sendrecv
        [True, True, True, True, True, False, False],  # barrier (an allreduce of nothing)
    ]
)
APPLICABLE.flags.writeable = False

# NCCL baseLatencies[algo][LL, LL128, Simple] in µs (tuning.cc). NVLS has none. Algorithms NCCL lacks
# (hier, rhd, pairwise, p2p) pay the ring's launch cost.
_BASE_RING = (6.6, 14.0, 8.4)
BASE_LAT_S = (
    np.array([_BASE_RING, (6.8, 14.0, 8.4), (0.0, 0.0, 0.0), _BASE_RING, _BASE_RING, _BASE_RING, _BASE_RING])
    * 1e-6
)
BASE_LAT_S.flags.writeable = False

# NCCL hwLatencies[hw][algo][LL, LL128, Simple] in µs for the two latency families we use: ring-like
# (point-to-point steps: ring, hier, rhd, pairwise, p2p, and NVLS's owner steps) and tree-like.
FAM_RING, FAM_TREE = 0, 1
HW_LAT_US = np.array(
    [
        [(0.6, 1.9, 3.4), (0.6, 1.25, 4.0)],  # NVLINK: ring, tree
        [(2.7, 4.0, 14.0), (5.0, 8.5, 14.0)],  # NET:    ring, tree
    ]
)
# What each protocol adds to the hardware step latency (LL adds nothing: its latency is the link's).
HW_OVERHEAD_S = (HW_LAT_US - HW_LAT_US[:, :, :1]) * 1e-6
HW_OVERHEAD_S.flags.writeable = False
HW_LAT_US.flags.writeable = False

# Protocol bandwidth efficiency per algorithm (tuning.cc): Ring LL x0.5, LL128 x0.92; Tree LL /3.8, LL128
# x120/128 (7/9 inside one node); NVLS runs Simple only (0 = not available).
_EFF_RING = (0.5, 0.92, 1.0)
PROTO_BW_EFF = np.array(
    [_EFF_RING, (1.0 / 3.8, 120.0 / 128.0, 1.0), (0.0, 0.0, 1.0), _EFF_RING, _EFF_RING, _EFF_RING, _EFF_RING]
)
PROTO_BW_EFF.flags.writeable = False
# NCCL's tree LL128 inside a single node runs at 7/9 of the bus bandwidth (120/128 across nodes).
TREE_LL128_EFF_ONE_DOMAIN = 7.0 / 9.0


# ----------------------------------------------------------------------------------------------- helpers
@numba.njit(cache=True)
def _clog2(s: int) -> int:
    """ceil(log2 s): rounds of a doubling/halving schedule over s ranks."""
    r = 0
    v = 1
    while v < s:
        v *= 2
        r += 1
    return r


@numba.njit(cache=True)
def _floor_pow2(s: int) -> int:
    v = 1
    while v * 2 <= s:
        v *= 2
    return v


@numba.njit(cache=True)
def _tree_load(d: int) -> float:
    """Bytes per node per direction of NCCL's double binary tree over d nodes, in units of n.

    Each of the two trees carries n/2 up (reduce) and down (broadcast). Summed over both trees the busiest
    node sends (and receives) n for 2 nodes, 1.5n for 3 (both trees are chains) and 2n from 4 nodes on
    (interior with a parent and two children in one tree, leaf in the other; NCCL ``trees.cc``).
    """
    if d <= 1:
        return 0.0
    if d == 2:
        return 1.0
    if d == 3:
        return 1.5
    return 2.0


@numba.njit(cache=True)
def _group_coeffs(
    op: int,
    sizes: np.ndarray,
    bw: np.ndarray,
    lat: np.ndarray,
    tech: np.ndarray,
    p: int,
    nvls_eff: float,
    imbalance: float,
    out_lat: np.ndarray,
    out_slope: np.ndarray,
) -> None:
    """Fill ``out_lat``/``out_slope`` [NALGO, NPROTO] for one group (inf where not applicable)."""
    inf = np.inf
    out_lat[:, :] = inf
    out_slope[:, :] = inf
    if p <= 1:  # a collective over one rank moves nothing
        for a in range(NALGO):
            if APPLICABLE[op, a]:
                for pr in range(NPROTO):
                    if PROTO_BW_EFF[a, pr] > 0.0:
                        out_lat[a, pr] = 0.0
                        out_slope[a, pr] = 0.0
        return
    k_levels = sizes.shape[0]
    prefix = np.ones(k_levels + 1, dtype=np.int64)  # prefix[k] = prod sizes[:k]
    suffix = np.ones(k_levels + 1, dtype=np.int64)  # suffix[k] = prod sizes[k:]
    for k in range(k_levels):
        prefix[k + 1] = prefix[k] * sizes[k]
    for k in range(k_levels - 1, -1, -1):
        suffix[k] = suffix[k + 1] * sizes[k]
    p0 = sizes[0]
    d = min(suffix[1], p)  # scale-up domains the group spans
    b0 = bw[0]
    # Flat ring: the ring leaves each domain through the NICs of that domain's p0 members (one channel per
    # rail), so a scale-out crossing carries p0 NICs' worth; the slowest level bounds the pipelined ring.
    # Each member is the exit of one channel in p0: its scale-up links carry (p0-1)/p0 of its ring traffic
    # when the ring spans domains (multi-node rccl-tests on MI300X / MI325X beat one node's busbw by 10 %).
    bring = inf
    bmin_out = inf
    crosses = False
    for k in range(1, k_levels):
        if sizes[k] > 1:
            bring = min(bring, p0 * bw[k])
            bmin_out = min(bmin_out, bw[k])
            crosses = True
    if p0 > 1:
        bring = min(bring, b0 * p0 / (p0 - 1) if crosses else b0)
    top = 0
    for k in range(k_levels):
        if sizes[k] > 1:
            top = k
    is_ar = op in (OP_ALLREDUCE, OP_BARRIER)
    is_rsag = op in (OP_REDUCESCATTER, OP_ALLGATHER)
    is_a2a = op in (OP_ALLTOALL, OP_ALLTOALLV)
    is_bcast = op in (OP_BROADCAST, OP_REDUCE)
    imb = imbalance if op == OP_ALLTOALLV else 1.0
    a_ring = np.empty(k_levels)
    a_tree = np.empty(k_levels)
    for pr in range(NPROTO):
        for k in range(k_levels):
            a_ring[k] = lat[k] + HW_OVERHEAD_S[tech[k], FAM_RING, pr]
            a_tree[k] = lat[k] + HW_OVERHEAD_S[tech[k], FAM_TREE, pr]
        # One pass around a flat ring: p-d hops inside domains, the rest crossing their level.
        ring_pass = max(p - d, 0) * a_ring[0]
        for k in range(1, k_levels):
            ring_pass += (suffix[k] - suffix[k + 1]) * a_ring[k]
        # One sweep up a tree: a chain inside the domain, log2 hops per scale-out level.
        tree_sweep = (p0 - 1) * a_tree[0]
        for k in range(1, k_levels):
            tree_sweep += _clog2(sizes[k]) * a_tree[k]
        # Phases of the hierarchical algorithms (one per level with more than one member).
        steps_lin = 0.0  # sum (s-1)·α over levels
        steps_log = 0.0  # sum ceil(log2 s)·α
        frac = 0.0  # sum (s-1)/s · (n / prefix) / B  per byte of n
        rhd_lat = 0.0
        rhd_slope = 0.0
        for k in range(k_levels):
            s = sizes[k]
            if s <= 1:
                continue
            steps_lin += (s - 1) * a_ring[k]
            steps_log += _clog2(s) * a_ring[k]
            frac += (s - 1) / s / prefix[k] / bw[k]
            pp = _floor_pow2(s)
            extra = 0.0 if pp == s else 2.0
            rhd_lat += (2.0 * _clog2(pp) + extra) * a_ring[k]
            rhd_slope += (2.0 * (pp - 1) / pp + extra) / prefix[k] / bw[k]

        e = PROTO_BW_EFF[A_RING, pr]
        e_tree = PROTO_BW_EFF[A_TREE, pr]
        if pr == P_LL128 and d == 1:
            e_tree = TREE_LL128_EFF_ONE_DOMAIN
        base = BASE_LAT_S[A_RING, pr]
        base_tree = BASE_LAT_S[A_TREE, pr]
        nvls_ok = pr == P_SIMPLE and nvls_eff > 0.0 and p0 >= 2
        a_nv = lat[0] + HW_OVERHEAD_S[tech[0], FAM_RING, P_SIMPLE]
        if is_ar:
            out_lat[A_RING, pr] = base + 2.0 * ring_pass
            out_slope[A_RING, pr] = 2.0 * (p - 1) / p / (bring * e)
            # Double binary tree: chain inside the domain (2n per GPU), tree across domains; pipelined.
            bw_tree = 0.0
            if p0 > 1:
                bw_tree = 2.0 / b0
            if d > 1:
                bw_tree = max(bw_tree, _tree_load(d) / (p0 * bmin_out))
            out_lat[A_TREE, pr] = base_tree + 2.0 * tree_sweep
            out_slope[A_TREE, pr] = bw_tree / e_tree
            if nvls_ok:
                # In-switch reduction: each GPU sends n+n/p0 and receives n/p0+n (ld_reduce + multicast
                # store); across domains NCCL's NVLSTree pipelines it with a tree over the NICs.
                lat_nv = BASE_LAT_S[A_NVLS, pr] + 2.0 * (p0 - 1) * a_nv
                bw_nv = (1.0 + 1.0 / p0) / (b0 * nvls_eff)
                if d > 1:
                    for k in range(1, k_levels):
                        lat_nv += 2.0 * _clog2(sizes[k]) * (lat[k] + HW_OVERHEAD_S[tech[k], FAM_TREE, pr])
                    bw_nv = max(bw_nv, _tree_load(d) / (p0 * bmin_out))
                out_lat[A_NVLS, pr] = lat_nv
                out_slope[A_NVLS, pr] = bw_nv
            out_lat[A_HIER, pr] = base + 2.0 * steps_lin
            out_slope[A_HIER, pr] = 2.0 * frac / e
            out_lat[A_RHD, pr] = base + rhd_lat
            out_slope[A_RHD, pr] = rhd_slope / e
            if op == OP_BARRIER:
                for a in range(NALGO):
                    if out_slope[a, pr] < inf:
                        out_slope[a, pr] = 0.0
        elif is_rsag:
            out_lat[A_RING, pr] = base + ring_pass
            out_slope[A_RING, pr] = (p - 1) / p / (bring * e)
            if nvls_ok and d == 1:
                out_lat[A_NVLS, pr] = BASE_LAT_S[A_NVLS, pr] + (p0 - 1) * a_nv
                out_slope[A_NVLS, pr] = (p0 - 1) / p0 / (b0 * nvls_eff)
            out_lat[A_HIER, pr] = base + steps_lin
            out_slope[A_HIER, pr] = frac / e
            out_lat[A_RHD, pr] = base + steps_log
            out_slope[A_RHD, pr] = frac / e
        elif is_a2a:
            # Direct exchange: n/p to each peer; NVLink and NIC transfers run at the same time, and so do
            # the transfers to every scale-out level: the NIC carries them all, a tier's uplink those to
            # the levels above it, and the busiest of these bounds the exchange (max, not a sum).
            peers_lat = 0.0
            up_bytes = (p0 - 1) / p / b0 if p0 > 1 else 0.0
            for k in range(k_levels):
                peers_lat += (sizes[k] - 1) * prefix[k] * a_ring[k]
            out_bytes = 0.0
            above = 0.0  # bytes per byte of n to this level and the levels above it
            for k in range(k_levels - 1, 0, -1):
                if sizes[k] > 1:
                    above += (sizes[k] - 1) * prefix[k] / p
                    out_bytes = max(out_bytes, above / bw[k])
            out_lat[A_PAIRWISE, pr] = base + peers_lat
            out_slope[A_PAIRWISE, pr] = imb * max(up_bytes, out_bytes) / e
            hier_a2a = 0.0
            for k in range(k_levels):
                if sizes[k] > 1:
                    hier_a2a += (sizes[k] - 1) / sizes[k] / bw[k]
            out_lat[A_HIER, pr] = base + steps_lin
            out_slope[A_HIER, pr] = imb * hier_a2a / e
        elif is_bcast:
            out_lat[A_RING, pr] = base + ring_pass
            out_slope[A_RING, pr] = 1.0 / (bring * e)
            bw_tree = 0.0
            if p0 > 1:
                bw_tree = 1.0 / b0
            if d > 1:
                bw_tree = max(bw_tree, 1.0 / (p0 * bmin_out))
            out_lat[A_TREE, pr] = base_tree + tree_sweep
            out_slope[A_TREE, pr] = bw_tree / e_tree
        else:  # sendrecv: one message across the highest level the pair spans
            out_lat[A_P2P, pr] = base + a_ring[top]
            out_slope[A_P2P, pr] = 1.0 / (bw[top] * e)
    # Algorithms whose levels have no bandwidth (all-inf slope) stay inf; keep lat and slope consistent.
    for a in range(NALGO):
        for pr in range(NPROTO):
            if not (out_slope[a, pr] < inf) or not APPLICABLE[op, a] or PROTO_BW_EFF[a, pr] == 0.0:
                out_lat[a, pr] = inf
                out_slope[a, pr] = inf


# ----------------------------------------------------------------------------------------------- kernels
@numba.njit(cache=True)
def collective_coeffs(
    op: int,
    sizes: np.ndarray,
    bw_Bps: np.ndarray,
    lat_s: np.ndarray,
    tech: np.ndarray,
    ranks: np.ndarray,
    nvls_eff: np.ndarray,
    imbalance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Affine cost t = lat + slope·n of every (algorithm, protocol) for G groups.

    ``sizes``/``tech`` int64 [G, K], ``bw_Bps``/``lat_s`` float64 [G, K], ``ranks`` int64 [G], ``nvls_eff``
    float64 [G] (0: no in-switch reduction). Returns ``lat_s`` and ``slope_s_per_B`` float64
    [G, NALGO, NPROTO], inf where the pair cannot run the operation.
    """
    g_count = sizes.shape[0]
    out_lat = np.empty((g_count, NALGO, NPROTO))
    out_slope = np.empty((g_count, NALGO, NPROTO))
    for g in range(g_count):
        _group_coeffs(
            op,
            sizes[g],
            bw_Bps[g],
            lat_s[g],
            tech[g],
            ranks[g],
            nvls_eff[g],
            imbalance,
            out_lat[g],
            out_slope[g],
        )
    return out_lat, out_slope


@numba.njit(cache=True)
def collective_times(
    nbytes: np.ndarray,
    group_idx: np.ndarray,
    lat_s: np.ndarray,
    slope_s_per_B: np.ndarray,
    algo_mask: np.ndarray,
    proto_mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fastest allowed (algorithm, protocol) for each query ``i`` = (``nbytes[i]``, group ``group_idx[i]``).

    Returns time (s, inf when nothing allowed can run), algorithm index and protocol index (-1 when none).
    Ties go to the lower index (ring before tree, LL before Simple).
    """
    m = nbytes.shape[0]
    t_out = np.empty(m)
    a_out = np.empty(m, dtype=np.int64)
    p_out = np.empty(m, dtype=np.int64)
    for i in range(m):
        g = group_idx[i]
        n = nbytes[i]
        best = np.inf
        ba = -1
        bp = -1
        for a in range(NALGO):
            if not algo_mask[a]:
                continue
            for pr in range(NPROTO):
                if not proto_mask[pr]:
                    continue
                lat = lat_s[g, a, pr]
                if lat == np.inf:
                    continue
                t = lat + slope_s_per_B[g, a, pr] * n
                if t < best:
                    best = t
                    ba = a
                    bp = pr
        t_out[i] = best
        a_out[i] = ba
        p_out[i] = bp
    return t_out, a_out, p_out


# ----------------------------------------------------------------------------------------------- references
def tree_load_ref(d: int) -> float:
    """Reference of ``_tree_load``: busiest node's bytes per direction, in units of n, of a tree over d nodes."""
    return {0: 0.0, 1: 0.0, 2: 1.0, 3: 1.5}.get(d, 2.0)


def collective_coeffs_ref(
    op: int,
    sizes: np.ndarray,
    bw_Bps: np.ndarray,
    lat_s: np.ndarray,
    tech: np.ndarray,
    ranks: np.ndarray,
    nvls_eff: np.ndarray,
    imbalance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain-numpy reference of :func:`collective_coeffs`: the cost formulas written as array expressions.

    Per group and protocol (vectors over the K levels):

    - step latency α_k = lat_k + overhead[tech_k, family, proto]; base = NCCL base latency.
    - ring: passes·(Σ hops_k·α_k) with hops_0 = p-d, hops_k = N_k - N_{k+1} (N_k = prod sizes[k:]);
      bandwidth min(B_0·[p0/(p0-1) when it crosses domains], p0·B_k) over the levels it crosses; bytes
      2(p-1)/p·n (AR), (p-1)/p·n (RS/AG), n (bcast).
    - tree (AR): 2·[(p0-1)·α_0 + Σ ceil(log2 s_k)·α_k]; bytes max(2n/B_0, load(d)·n/(p0·min B_k)).
    - nvls (AR): 2(p0-1)·α_0,Simple [+ tree across domains]; bytes max((1+1/p0)·n/(B_0·e_nvls), tree part).
    - hier: Σ 2(s_k-1)·α_k (AR), Σ (s_k-1)·α_k (RS/AG/A2A); bytes Σ c·(s_k-1)/s_k·n/prefix_k/B_k.
    - rhd: Σ (2·log2 s'_k + 2[s_k≠s'_k])·α_k with s' the power of two below s_k.
    - pairwise (A2A): Σ (s_k-1)·prefix_k·α_k; bytes imb·max(intra, Σ_{k≥1} inter_k).
    - p2p: α_top + n/B_top.
    """
    g_count, k_levels = sizes.shape
    lat_out = np.full((g_count, NALGO, NPROTO), np.inf)
    slope_out = np.full((g_count, NALGO, NPROTO), np.inf)
    for g in range(g_count):
        s = sizes[g].astype(np.int64)
        p = int(ranks[g])
        if p <= 1:
            ok = APPLICABLE[op][:, None] & (PROTO_BW_EFF > 0)
            lat_out[g][ok] = 0.0
            slope_out[g][ok] = 0.0
            continue
        bw = bw_Bps[g]
        prefix = np.concatenate(([1], np.cumprod(s)))[:-1]
        suffix = np.concatenate((np.cumprod(s[::-1])[::-1], [1]))
        p0 = int(s[0])
        d = int(min(suffix[1], p))
        multi = s > 1
        out_levels = multi.copy()
        out_levels[0] = False
        cand = [bw[0] * (p0 / (p0 - 1) if out_levels.any() else 1.0)] if p0 > 1 else []
        cand += list(p0 * bw[out_levels])
        bring = min(cand) if cand else np.inf
        bmin_out = bw[out_levels].min() if out_levels.any() else np.inf
        top = int(np.flatnonzero(multi).max()) if multi.any() else 0
        log2s = np.ceil(np.log2(np.maximum(s, 1)) - 1e-12).astype(np.int64)
        pow2 = 2 ** np.floor(np.log2(np.maximum(s, 1)) + 1e-12).astype(np.int64)
        hops = np.empty(k_levels)
        hops[0] = max(p - d, 0)
        hops[1:] = suffix[1:-1] - suffix[2:]
        imb = imbalance if op == OP_ALLTOALLV else 1.0
        for pr in range(NPROTO):
            a_ring = lat_s[g] + HW_OVERHEAD_S[tech[g], FAM_RING, pr]
            a_tree = lat_s[g] + HW_OVERHEAD_S[tech[g], FAM_TREE, pr]
            ring_pass = float(np.dot(hops, a_ring))
            tree_sweep = (p0 - 1) * a_tree[0] + float(np.dot(log2s[1:], a_tree[1:]))
            sm = s[multi]
            frac = float(np.sum((sm - 1) / sm / prefix[multi] / bw[multi]))
            steps_lin = float(np.sum((sm - 1) * a_ring[multi]))
            steps_log = float(np.sum(log2s[multi] * a_ring[multi]))
            pw = pow2[multi]
            extra = np.where(pw == sm, 0.0, 2.0)
            rhd_lat = float(np.sum((2.0 * np.log2(pw) + extra) * a_ring[multi]))
            rhd_slope = float(np.sum((2.0 * (pw - 1) / pw + extra) / prefix[multi] / bw[multi]))
            e, e_tree = PROTO_BW_EFF[A_RING, pr], PROTO_BW_EFF[A_TREE, pr]
            if pr == P_LL128 and d == 1:
                e_tree = TREE_LL128_EFF_ONE_DOMAIN
            base, base_tree = BASE_LAT_S[A_RING, pr], BASE_LAT_S[A_TREE, pr]
            nvls_ok = pr == P_SIMPLE and nvls_eff[g] > 0 and p0 >= 2
            a_nv = lat_s[g][0] + HW_OVERHEAD_S[tech[g][0], FAM_RING, P_SIMPLE]
            L, S = lat_out[g], slope_out[g]
            if op in (OP_ALLREDUCE, OP_BARRIER):
                L[A_RING, pr], S[A_RING, pr] = base + 2 * ring_pass, 2 * (p - 1) / p / (bring * e)
                terms = ([2 / bw[0]] if p0 > 1 else []) + (
                    [tree_load_ref(d) / (p0 * bmin_out)] if d > 1 else []
                )
                L[A_TREE, pr], S[A_TREE, pr] = base_tree + 2 * tree_sweep, max(terms) / e_tree
                if nvls_ok:
                    lat_nv = 2 * (p0 - 1) * a_nv
                    bw_nv = (1 + 1 / p0) / (bw[0] * nvls_eff[g])
                    if d > 1:
                        a_tree_s = lat_s[g] + HW_OVERHEAD_S[tech[g], FAM_TREE, pr]
                        lat_nv += 2 * float(np.dot(log2s[1:], a_tree_s[1:]))
                        bw_nv = max(bw_nv, tree_load_ref(d) / (p0 * bmin_out))
                    L[A_NVLS, pr], S[A_NVLS, pr] = lat_nv, bw_nv
                L[A_HIER, pr], S[A_HIER, pr] = base + 2 * steps_lin, 2 * frac / e
                L[A_RHD, pr], S[A_RHD, pr] = base + rhd_lat, rhd_slope / e
                if op == OP_BARRIER:
                    S[:, pr] = np.where(np.isfinite(S[:, pr]), 0.0, np.inf)
            elif op in (OP_REDUCESCATTER, OP_ALLGATHER):
                L[A_RING, pr], S[A_RING, pr] = base + ring_pass, (p - 1) / p / (bring * e)
                if nvls_ok and d == 1:
                    L[A_NVLS, pr], S[A_NVLS, pr] = (p0 - 1) * a_nv, (p0 - 1) / p0 / (bw[0] * nvls_eff[g])
                L[A_HIER, pr], S[A_HIER, pr] = base + steps_lin, frac / e
                L[A_RHD, pr], S[A_RHD, pr] = base + steps_log, frac / e
            elif op in (OP_ALLTOALL, OP_ALLTOALLV):
                peers = (s - 1) * prefix
                intra = (p0 - 1) / p / bw[0] if p0 > 1 else 0.0
                # every level's traffic at once: level k's links carry it and all above it
                above = np.cumsum((peers[out_levels] / p)[::-1])[::-1]
                inter = float(np.max(above / bw[out_levels])) if len(above) else 0.0
                L[A_PAIRWISE, pr] = base + float(np.dot(peers, a_ring))
                S[A_PAIRWISE, pr] = imb * max(intra, inter) / e
                L[A_HIER, pr] = base + steps_lin
                S[A_HIER, pr] = imb * float(np.sum((sm - 1) / sm / bw[multi])) / e
            elif op in (OP_BROADCAST, OP_REDUCE):
                L[A_RING, pr], S[A_RING, pr] = base + ring_pass, 1 / (bring * e)
                terms = ([1 / bw[0]] if p0 > 1 else []) + ([1 / (p0 * bmin_out)] if d > 1 else [])
                L[A_TREE, pr], S[A_TREE, pr] = base_tree + tree_sweep, max(terms) / e_tree
            else:
                L[A_P2P, pr], S[A_P2P, pr] = base + a_ring[top], 1 / (bw[top] * e)
        bad = ~np.isfinite(slope_out[g]) | ~APPLICABLE[op][:, None] | (PROTO_BW_EFF == 0)
        lat_out[g][bad] = np.inf
        slope_out[g][bad] = np.inf
    return lat_out, slope_out


def collective_times_ref(
    nbytes: np.ndarray,
    group_idx: np.ndarray,
    lat_s: np.ndarray,
    slope_s_per_B: np.ndarray,
    algo_mask: np.ndarray,
    proto_mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference of :func:`collective_times`: evaluate every allowed affine cost and take the argmin."""
    lat = lat_s[group_idx].reshape(len(nbytes), -1)
    slope = slope_s_per_B[group_idx].reshape(len(nbytes), -1)
    allowed = (np.asarray(algo_mask, bool)[:, None] & np.asarray(proto_mask, bool)[None, :]).ravel()
    with np.errstate(invalid="ignore"):
        t = lat + slope * np.asarray(nbytes, float)[:, None]
    t[:, ~allowed] = np.inf
    t[~np.isfinite(lat)] = np.inf
    best = np.argmin(t, axis=1)
    tb = t[np.arange(len(nbytes)), best]
    none = ~np.isfinite(tb)
    a = np.where(none, -1, best // NPROTO)
    p = np.where(none, -1, best % NPROTO)
    return tb, a.astype(np.int64), p.astype(np.int64)


# ----------------------------------------------------------------------------------------------- max-min
@numba.njit(cache=True)
def _heap_push(keys: np.ndarray, ids: np.ndarray, size: int, key: float, ident: int) -> int:
    i = size
    keys[i] = key
    ids[i] = ident
    while i > 0:
        parent = (i - 1) // 2
        if keys[parent] <= keys[i]:
            break
        keys[parent], keys[i] = keys[i], keys[parent]
        ids[parent], ids[i] = ids[i], ids[parent]
        i = parent
    return size + 1


@numba.njit(cache=True)
def _heap_pop(keys: np.ndarray, ids: np.ndarray, size: int) -> int:
    """Remove the root (caller read keys[0], ids[0] first); returns the new size."""
    size -= 1
    keys[0] = keys[size]
    ids[0] = ids[size]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and keys[left + 1] < keys[left]:
            child = left + 1
        if keys[i] <= keys[child]:
            break
        keys[child], keys[i] = keys[i], keys[child]
        ids[child], ids[i] = ids[i], ids[child]
        i = child
    return size


@numba.njit(cache=True)
def maxmin_rates(
    flow_link_indptr: np.ndarray,
    flow_link_indices: np.ndarray,
    link_capacity_Bps: np.ndarray,
    flow_rate_cap_Bps: np.ndarray,
) -> np.ndarray:
    """Max-min fair rates of flows over shared links (progressive filling, modeling-notes §1.7 (b)).

    Flow f uses links ``flow_link_indices[flow_link_indptr[f]:flow_link_indptr[f+1]]`` and never exceeds
    ``flow_rate_cap_Bps[f]`` (inf: no cap). Bottleneck order (Bertsekas & Gallager): repeatedly take the
    link with the smallest fair share (remaining capacity / unfrozen flows), freeze its flows at that share,
    and charge them to their other links. A per-flow cap is a private link of one flow. A lazy min-heap
    keeps this O((L + F + nnz) log) since shares only grow as flows freeze. A flow with no link and no cap
    gets inf.
    """
    n_flows = flow_link_indptr.shape[0] - 1
    n_links = link_capacity_Bps.shape[0]
    nnz = flow_link_indices.shape[0]
    count = np.zeros(n_links, dtype=np.int64)
    for j in range(nnz):
        count[flow_link_indices[j]] += 1
    link_ptr = np.zeros(n_links + 1, dtype=np.int64)
    for lk in range(n_links):
        link_ptr[lk + 1] = link_ptr[lk] + count[lk]
    fill = link_ptr[:-1].copy()
    link_flows = np.empty(nnz, dtype=np.int64)
    for f in range(n_flows):
        for j in range(flow_link_indptr[f], flow_link_indptr[f + 1]):
            lk = flow_link_indices[j]
            link_flows[fill[lk]] = f
            fill[lk] += 1
    rem = link_capacity_Bps.astype(np.float64).copy()
    active = count.copy()
    rates = np.full(n_flows, -1.0)
    cap_size = n_links + n_flows + nnz + 1
    keys = np.empty(cap_size)
    ids = np.empty(cap_size, dtype=np.int64)
    size = 0
    for lk in range(n_links):
        if active[lk] > 0:
            size = _heap_push(keys, ids, size, max(rem[lk], 0.0) / active[lk], lk)
    frozen = 0
    for f in range(n_flows):
        if flow_rate_cap_Bps[f] < np.inf:
            size = _heap_push(keys, ids, size, max(flow_rate_cap_Bps[f], 0.0), n_links + f)
        elif flow_link_indptr[f + 1] == flow_link_indptr[f]:
            rates[f] = np.inf
            frozen += 1
    while size > 0 and frozen < n_flows:
        share = keys[0]
        ident = ids[0]
        size = _heap_pop(keys, ids, size)
        if ident < n_links:
            lk = ident
            if active[lk] == 0 or max(rem[lk], 0.0) / active[lk] != share:
                continue  # stale entry
            for j in range(link_ptr[lk], link_ptr[lk + 1]):
                f = link_flows[j]
                if rates[f] >= 0.0:
                    continue
                rates[f] = share
                frozen += 1
                for q in range(flow_link_indptr[f], flow_link_indptr[f + 1]):
                    other = flow_link_indices[q]
                    rem[other] -= share
                    active[other] -= 1
                    if active[other] > 0 and other != lk:
                        size = _heap_push(keys, ids, size, max(rem[other], 0.0) / active[other], other)
        else:
            f = ident - n_links
            if rates[f] >= 0.0:
                continue
            rates[f] = share
            frozen += 1
            for q in range(flow_link_indptr[f], flow_link_indptr[f + 1]):
                other = flow_link_indices[q]
                rem[other] -= share
                active[other] -= 1
                if active[other] > 0:
                    size = _heap_push(keys, ids, size, max(rem[other], 0.0) / active[other], other)
    return rates


def maxmin_rates_ref(
    flow_link_indptr: np.ndarray,
    flow_link_indices: np.ndarray,
    link_capacity_Bps: np.ndarray,
    flow_rate_cap_Bps: np.ndarray,
) -> np.ndarray:
    """Reference of :func:`maxmin_rates`: literal progressive filling (water-filling) on a dense matrix.

    All unfrozen flows rise together; the rise stops when a link saturates or a flow reaches its cap,
    and those flows freeze. Repeat until every flow is frozen.
    """
    n_flows = len(flow_link_indptr) - 1
    n_links = len(link_capacity_Bps)
    a = np.zeros((n_links, n_flows))
    for f in range(n_flows):
        for lk in flow_link_indices[flow_link_indptr[f] : flow_link_indptr[f + 1]]:
            a[lk, f] += 1.0
    cap = np.asarray(link_capacity_Bps, float)
    fcap = np.asarray(flow_rate_cap_Bps, float)
    rates = np.zeros(n_flows)
    frozen = np.zeros(n_flows, bool)
    free = (a.sum(axis=0) == 0) & ~np.isfinite(fcap)
    rates[free] = np.inf
    frozen |= free
    while not frozen.all():
        act = ~frozen
        n_per_link = a[:, act].sum(axis=1)
        done = frozen & ~free
        rem = cap - a[:, done] @ rates[done] - n_per_link * rates[act][0]
        with np.errstate(divide="ignore", invalid="ignore"):
            inc_link = np.where(n_per_link > 0, np.maximum(rem, 0.0) / n_per_link, np.inf)
        inc_cap = fcap[act] - rates[act]
        delta = min(inc_link.min(initial=np.inf), inc_cap.min(initial=np.inf))
        rates[act] += delta
        sat_links = (n_per_link > 0) & (inc_link <= delta * (1 + 1e-12) + 1e-300)
        hit = act & ((a[sat_links].sum(axis=0) > 0) | (rates >= fcap * (1 - 1e-12)))
        frozen |= hit
    return rates
