"""Flow-level contention: max-min fair sharing of links between concurrent transfers (no simpy inside).

``FlowNetwork`` holds links (capacity in B/s, per direction) and active flows (a path of links, bytes left,
an optional rate cap). Rates are the max-min fair allocation (``simcore.kernels.collectives.maxmin_rates``,
modeling-notes §1.7 (b)), re-solved whenever a flow starts or finishes; between those events every flow
drains at a constant rate, so the next completion is exact. The engine drives it: ``start`` at issue time,
``next_completion`` to schedule a wake-up, ``finish`` when it fires.

``FabricLinks`` lays a ``Cluster``'s scale-out fabric into a network: one transmit and one receive link per
GPU (its share of the NICs), and an up and a down link per block of every fabric tier, of capacity
GPUs-in-block × per-GPU NIC bandwidth / cumulative oversubscription (a tier's oversubscription throttles
traffic that leaves one of its blocks). ``shortcut_bw_Bps`` is the analytical equivalent for symmetric
jobs that ``simcore.collectives`` uses.
"""

from __future__ import annotations

import math

import numpy as np

from simcore.cluster import Cluster
from simcore.errors import ConfigError
from simcore.kernels.collectives import maxmin_rates

# A flow whose remaining bytes fall below this fraction of its size (or 1 byte) counts as complete:
# draining at floating-point rates leaves crumbs.
_DONE_BYTES = 1e-9


def shortcut_bw_Bps(nic_Bps: float, oversubscription: float, concurrency: float) -> float:
    """Per-GPU bandwidth through an oversubscribed uplink when a fraction of the GPUs below use it at once.

    An uplink of a block of G GPUs carries G·NIC/oversubscription; if ``concurrency``·G GPUs send through it
    at once, each gets NIC/(oversubscription·concurrency), never more than its own NIC: the symmetric-job
    limit of max-min sharing (``FlowNetwork`` agrees on symmetric cases, see tests/test_fabric.py).
    """
    if not 0.0 < concurrency <= 1.0:
        raise ConfigError(
            "concurrency must be in (0, 1]",
            value=concurrency,
            expected="the fraction of GPUs under a block using the tier at the same time",
        )
    return min(nic_Bps, nic_Bps / (oversubscription * concurrency))


class FlowNetwork:
    """Links and active flows with max-min fair rates; time advances only when the caller says so."""

    def __init__(self) -> None:
        self._cap = np.zeros(0)
        self._n_links = 0
        self._now = 0.0
        self._next_id = 0
        self._slot_of: dict[int, int] = {}
        self._free: list[int] = []
        width = 8
        self._path = np.full((0, width), -1, dtype=np.int64)
        self._plen = np.zeros(0, dtype=np.int64)
        self._remaining = np.zeros(0)
        self._size = np.zeros(0)
        self._rate_cap = np.zeros(0)
        self._rate = np.zeros(0)
        self._flow_id = np.zeros(0, dtype=np.int64)
        self._active = np.zeros(0, dtype=bool)

    # ------------------------------------------------------------------ links
    @property
    def now(self) -> float:
        return self._now

    @property
    def n_links(self) -> int:
        return self._n_links

    @property
    def n_flows(self) -> int:
        return len(self._slot_of)

    def add_link(self, capacity_Bps: float) -> int:
        """Add one directed link; returns its id."""
        return int(self.add_links(np.array([capacity_Bps], dtype=np.float64))[0])

    def add_links(self, capacity_Bps: np.ndarray) -> np.ndarray:
        """Add many directed links at once (a cluster has millions); returns their ids."""
        capacity_Bps = np.asarray(capacity_Bps, dtype=np.float64).ravel()
        if np.any(capacity_Bps < 0) or np.any(np.isnan(capacity_Bps)):
            raise ConfigError(
                "link capacity must be a non-negative bandwidth",
                value=float(capacity_Bps.min()),
                expected="B/s >= 0",
            )
        first = self._n_links
        need = first + len(capacity_Bps)
        if need > len(self._cap):
            grown = np.zeros(max(need, 2 * len(self._cap)))
            grown[:first] = self._cap[:first]
            self._cap = grown
        self._cap[first:need] = capacity_Bps
        self._n_links = need
        return np.arange(first, need, dtype=np.int64)

    def capacity(self, link_id: int) -> float:
        return float(self._cap[link_id])

    # ------------------------------------------------------------------ flows
    def start(
        self, now: float, link_ids: np.ndarray | list[int], nbytes: float, rate_cap: float = math.inf
    ) -> int:
        """Start a flow of ``nbytes`` over ``link_ids`` at time ``now``; rates are re-solved. Returns its id."""
        links = np.asarray(link_ids, dtype=np.int64).ravel()
        ids = self.start_many(
            now,
            np.array([0, len(links)]),
            links,
            np.array([nbytes], dtype=np.float64),
            np.array([rate_cap], dtype=np.float64),
        )
        return int(ids[0])

    def start_many(
        self,
        now: float,
        indptr: np.ndarray,
        indices: np.ndarray,
        nbytes: np.ndarray,
        rate_cap: np.ndarray | float = math.inf,
    ) -> np.ndarray:
        """Start many flows at once (CSR paths: flow i uses ``indices[indptr[i]:indptr[i+1]]``); one re-solve."""
        self.advance(now)
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        k = len(indptr) - 1
        nbytes = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), (k,))
        caps = np.broadcast_to(np.asarray(rate_cap, dtype=np.float64), (k,))
        if np.any(nbytes < 0) or np.any(np.isnan(nbytes)):
            raise ConfigError("a flow needs a non-negative number of bytes", expected="nbytes >= 0")
        if len(indices) and (indices.min() < 0 or indices.max() >= self._n_links):
            raise ConfigError(
                "flow uses an unknown link",
                value=int(indices.max()),
                expected=f"link ids below {self._n_links}",
            )
        lens = np.diff(indptr)
        slots = self._alloc(k, int(lens.max()) if k else 0)
        self._path[slots] = -1
        rows = np.repeat(slots, lens)
        cols = np.arange(len(indices)) - np.repeat(indptr[:-1], lens)
        self._path[rows, cols] = indices
        self._plen[slots] = lens
        self._remaining[slots] = nbytes
        self._size[slots] = nbytes
        self._rate_cap[slots] = caps
        self._active[slots] = True
        ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
        self._next_id += k
        self._flow_id[slots] = ids
        self._slot_of.update(zip(ids.tolist(), slots.tolist(), strict=True))
        self._solve()
        return ids

    def advance(self, now: float) -> None:
        """Drain every active flow at its current rate up to ``now`` (time never goes back)."""
        dt = now - self._now
        if dt < -1e-12 * max(1.0, abs(now)):
            raise ValueError(f"FlowNetwork time went back from {self._now} to {now}")
        if dt > 0:
            act = self._active
            with np.errstate(invalid="ignore"):
                drained = self._remaining[act] - self._rate[act] * dt
            self._remaining[act] = np.maximum(np.nan_to_num(drained, nan=0.0, neginf=0.0), 0.0)
            self._now = now

    def next_completion(self) -> tuple[float, int] | None:
        """(time, flow id) of the earliest flow to finish at the current rates; None if nothing will."""
        act = np.flatnonzero(self._active)
        if not len(act):
            return None
        rem = self._remaining[act]
        rate = self._rate[act]
        done = rem <= np.maximum(_DONE_BYTES * self._size[act], 1e-6)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.where(done, 0.0, np.where(rate > 0, rem / rate, np.inf))
        i = int(np.argmin(eta))
        if not np.isfinite(eta[i]):
            return None
        t = self._now + float(eta[i])
        if t <= self._now:
            # It finishes within the clock's resolution (now + eta rounds to now): it is done now, or a
            # caller waking at t would find it unfinished forever.
            self._remaining[act[i]] = 0.0
        return t, int(self._flow_id[act[i]])

    def finish(self, flow_id: int, now: float | None = None) -> None:
        """Remove a flow (completed or cancelled) and re-solve the others' rates."""
        self.finish_many([flow_id], now)

    def finish_many(self, flow_ids: list[int] | np.ndarray, now: float | None = None) -> None:
        if now is not None:
            self.advance(now)
        for fid in np.asarray(flow_ids, dtype=np.int64).tolist():
            slot = self._slot_of.pop(fid, None)
            if slot is None:
                raise KeyError(f"no active flow {fid}")
            self._active[slot] = False
            self._rate[slot] = 0.0
            self._free.append(slot)
        self._solve()

    def rate(self, flow_id: int) -> float:
        return float(self._rate[self._slot_of[flow_id]])

    def remaining(self, flow_id: int) -> float:
        return float(self._remaining[self._slot_of[flow_id]])

    def rates(self, flow_ids: np.ndarray) -> np.ndarray:
        slots = np.array([self._slot_of[int(f)] for f in flow_ids], dtype=np.int64)
        return self._rate[slots].copy()

    def drain(self) -> dict[int, float]:
        """Run every active flow to completion (no new arrivals); returns each flow's finish time."""
        out: dict[int, float] = {}
        while True:
            nxt = self.next_completion()
            if nxt is None:
                break
            t, _ = nxt
            self.advance(t)
            ids = self.completed().tolist()
            out.update(dict.fromkeys(ids, t))
            self.finish_many(ids)
        return out

    def completed(self) -> np.ndarray:
        """Ids of active flows that have delivered all their bytes (still to be ``finish``-ed)."""
        act = np.flatnonzero(self._active)
        done = act[self._remaining[act] <= np.maximum(_DONE_BYTES * self._size[act], 1e-6)]
        return self._flow_id[done].copy()

    # ------------------------------------------------------------------ internals
    def _alloc(self, k: int, width: int) -> np.ndarray:
        if width > self._path.shape[1]:
            wider = np.full((self._path.shape[0], width), -1, dtype=np.int64)
            wider[:, : self._path.shape[1]] = self._path
            self._path = wider
        take = min(k, len(self._free))
        slots = [self._free.pop() for _ in range(take)]
        extra = k - take
        if extra:
            first = len(self._plen)
            grow = max(extra, first)
            self._path = np.vstack([self._path, np.full((grow, self._path.shape[1]), -1, dtype=np.int64)])
            for name in ("_plen", "_flow_id"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow, dtype=np.int64)]))
            for name in ("_remaining", "_size", "_rate_cap", "_rate"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow)]))
            self._active = np.concatenate([self._active, np.zeros(grow, dtype=bool)])
            slots.extend(range(first, first + extra))
            self._free.extend(range(first + extra, first + grow))
        return np.asarray(slots, dtype=np.int64)

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Active flows as (slots, indptr, indices, rate caps): what the solver sees."""
        slots = np.flatnonzero(self._active)
        lens = self._plen[slots]
        indptr = np.zeros(len(slots) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        paths = self._path[slots]
        indices = paths[paths >= 0] if paths.size else np.zeros(0, dtype=np.int64)
        return slots, indptr, np.ascontiguousarray(indices, dtype=np.int64), self._rate_cap[slots]

    def _solve(self) -> None:
        slots, indptr, indices, caps = self.csr()
        if not len(slots):
            return
        rates = maxmin_rates(indptr, indices, self._cap[: self._n_links], np.ascontiguousarray(caps))
        self._rate[slots] = rates


class FabricLinks:
    """A cluster's scale-out fabric (and optionally its scale-up ports) as links of a ``FlowNetwork``.

    Per GPU: ``nic_tx``/``nic_rx`` of capacity nics_per_gpu × nic_bandwidth × efficiency. Per block b of
    tier t (``span_gpus`` GPUs): ``up[t][b]``/``down[t][b]`` of capacity GPUs-in-block × that per-GPU NIC
    bandwidth / (oversubscription of tiers 0..t multiplied), crossed by traffic between different tier-t
    blocks. With ``scale_up=True`` also ``su_tx``/``su_rx`` per GPU (NVSwitch is non-blocking, so only the
    GPU ports can be shared). Paths of rail-aligned traffic (the ring/hierarchical scale-out phases) come
    from :meth:`rail_pairs`.
    """

    def __init__(
        self, network: FlowNetwork, cluster: Cluster, *, gpus: int | None = None, scale_up: bool = False
    ) -> None:
        prof = cluster.profile
        so = prof.scale_out
        self.network = network
        self.cluster = cluster
        self.gpus = cluster.gpus if gpus is None else int(gpus)
        self.nic_Bps = so.nics_per_gpu * so.nic_bandwidth * so.efficiency
        self.domain_size = cluster.domain_size
        n = self.gpus
        self.nic_tx = network.add_links(np.full(n, self.nic_Bps))
        self.nic_rx = network.add_links(np.full(n, self.nic_Bps))
        self.spans = tuple(t.span_gpus for t in so.tiers)
        self.cum_oversubscription = tuple(
            float(x) for x in np.cumprod([t.oversubscription for t in so.tiers])
        )
        self.up: list[np.ndarray] = []
        self.down: list[np.ndarray] = []
        for span, cum in zip(self.spans, self.cum_oversubscription, strict=True):
            blocks = math.ceil(n / span)
            in_block = np.minimum(span, n - span * np.arange(blocks))
            cap = in_block * self.nic_Bps / cum
            self.up.append(network.add_links(cap))
            self.down.append(network.add_links(cap))
        self.su_tx: np.ndarray | None = None
        self.su_rx: np.ndarray | None = None
        if scale_up:
            su = prof.scale_up
            b_up = su.bw_per_direction_Bps * su.efficiency
            self.su_tx = network.add_links(np.full(n, b_up))
            self.su_rx = network.add_links(np.full(n, b_up))

    def uplink_capacity_Bps(self, tier: int) -> float:
        """Capacity of one full block's uplink at ``tier``."""
        return self.spans[tier] * self.nic_Bps / self.cum_oversubscription[tier]

    def paths(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR paths (indptr, link ids) of flows src[i] -> dst[i], vectorised over pairs."""
        src = np.asarray(src, dtype=np.int64).ravel()
        dst = np.asarray(dst, dtype=np.int64).ravel()
        n_tiers = len(self.spans)
        width = 2 + 2 * n_tiers
        table = np.full((len(src), width), -1, dtype=np.int64)
        same_domain = (src // self.domain_size) == (dst // self.domain_size)
        if self.su_tx is not None and self.su_rx is not None:
            table[same_domain, 0] = self.su_tx[src[same_domain]]
            table[same_domain, 1] = self.su_rx[dst[same_domain]]
        out = ~same_domain
        table[out, 0] = self.nic_tx[src[out]]
        table[out, 1] = self.nic_rx[dst[out]]
        for t, span in enumerate(self.spans):
            cross = out & ((src // span) != (dst // span))
            table[cross, 2 + 2 * t] = self.up[t][src[cross] // span]
            table[cross, 3 + 2 * t] = self.down[t][dst[cross] // span]
        keep = table >= 0
        indptr = np.zeros(len(src) + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=indptr[1:])
        return indptr, table[keep]

    def path(self, src: int, dst: int) -> np.ndarray:
        """Links of one flow src -> dst."""
        _, idx = self.paths(np.array([src]), np.array([dst]))
        return idx

    def rail_all_pairs(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(src, dst) of the scale-out flows of an all-to-all over ``members``: the k-th member of each
        scale-up domain sends to the k-th member of every other domain (PXN: a token for another rail first
        crosses NVLink to the member on the destination's rail, so every scale-out flow is rail-aligned);
        the domain's share for a whole destination domain leaves through one NIC. A group inside one
        domain has no scale-out flows."""
        grid = self._rail_grid(members)
        if grid is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        a, b = np.nonzero(~np.eye(len(grid), dtype=bool))  # every ordered pair of different domains
        return grid[a].ravel(), grid[b].ravel()

    def rail_pairs(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(src, dst) of the scale-out hops of a ring/hierarchical collective over ``members``.

        Members are grouped by scale-up domain; the k-th member of each domain sends to the k-th member of
        the next domain (one ring channel per rail, as NCCL lays rings out on rail-optimised fabrics). A group
        inside one domain has no scale-out hops.
        """
        grid = self._rail_grid(members)
        if grid is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return grid.ravel(), np.roll(grid, -1, axis=0).ravel()

    def _rail_grid(self, members: np.ndarray) -> np.ndarray | None:
        """``[domains, rails]``: the k-th member of each scale-up domain the group spans (as many rails as
        its sparsest domain has members); None for a group inside one domain."""
        members = np.sort(np.asarray(members, dtype=np.int64).ravel())
        uniq, start = np.unique(members // self.domain_size, return_index=True)
        if len(uniq) < 2:
            return None
        per = int(np.diff(np.append(start, len(members))).min())
        return np.stack([members[s : s + per] for s in start])
