"""Cluster geometry: GPU -> tray -> rack -> pod, scale-up domains, fabric tiers, and where groups land.

GPUs are numbered tray-major inside a rack and rack-major inside a pod; global rank r runs on GPU r.
Parallel groups follow a rank order (fastest-varying dimension first, Megatron's default
``tp-cp-ep-dp-pp``): a group of dimension d is the set of ranks that differ only in their d coordinate.
``GroupLayout`` says which levels of the hierarchy a group spans, which is all a collective cost model
needs to know about placement. Nothing here builds per-GPU Python objects, so 131,072 GPUs cost
a few numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simcore.errors import CapacityError, ConfigError
from simcore.profile import Profile

PARALLEL_DIMS = ("tp", "cp", "ep", "dp", "pp")
DEFAULT_ORDER = ("tp", "cp", "ep", "dp", "pp")
TIER_SCALE_UP = -1  # a group that never leaves its scale-up domain


@dataclass(frozen=True)
class GroupLayout:
    """How one communication group sits on the hardware hierarchy.

    ``ranks_per_domain`` members share each scale-up domain (p1 of a hierarchical collective) and the
    group spans ``domains`` domains (p2). ``tier_blocks[t]`` is how many distinct blocks of scale-out
    tier t (blocks of ``span_gpus`` GPUs) the group touches; ``top_tier`` is the highest tier the
    group's traffic must cross (-1: stays inside the scale-up domain, 0: leaf, 1: spine, ...).
    ``min_ranks_per_domain`` is the fewest members any spanned domain holds (0: unknown, taken as
    ``ranks_per_domain``): a ring or tree leaves every domain, so the one with the fewest NICs bounds it
    (9 ranks on 8-GPU servers are 8 + 1, not 5 + 4).
    """

    size: int
    ranks_per_domain: int
    domains: int
    tier_blocks: tuple[int, ...]
    top_tier: int
    min_ranks_per_domain: int = 0

    @property
    def nic_ranks_per_domain(self) -> int:
        """Members of the sparsest spanned domain: how many NICs carry a domain's share of the traffic."""
        return self.min_ranks_per_domain if self.min_ranks_per_domain > 0 else self.ranks_per_domain

    @property
    def tier_fanout(self) -> tuple[int, ...]:
        """Children per block at each scale-out tier (domains under a leaf block, leaf blocks per spine...)."""
        out: list[int] = []
        below = self.domains
        for blocks in self.tier_blocks:
            out.append(max(1, math.ceil(below / blocks)))
            below = blocks
        return tuple(out)

    @property
    def crosses(self) -> str:
        return "scale_up" if self.top_tier == TIER_SCALE_UP else f"tier{self.top_tier}"


@dataclass(frozen=True)
class ParallelDims:
    """Sizes of the parallel dimensions and their rank order (fastest-varying first).

    ``ep`` splits the data-parallel dimension for expert layers (Megatron's expert-data-parallel), so
    the GPU count is tp*cp*dp*pp and ep must divide dp (or tp*cp*dp when experts span tp*cp).
    """

    tp: int = 1
    cp: int = 1
    ep: int = 1
    dp: int = 1
    pp: int = 1
    order: tuple[str, ...] = DEFAULT_ORDER

    @property
    def world(self) -> int:
        return self.tp * self.cp * self.dp * self.pp

    def _layout_sizes(self) -> list[tuple[str, int]]:
        """Dimension sizes in order; ep is carved out of dp, so dp contributes dp/ep after ep."""
        sizes = {"tp": self.tp, "cp": self.cp, "ep": self.ep, "dp": self.dp // self.ep, "pp": self.pp}
        return [(d, sizes[d]) for d in self.order]

    def stride(self, dim: str) -> int:
        """Rank distance between neighbours in ``dim``."""
        if dim == "dp":
            # The full data-parallel group includes the ep sub-dimension.
            return min(self.stride("ep"), self._stride_plain("dp"))
        return self._stride_plain(dim)

    def _stride_plain(self, dim: str) -> int:
        stride = 1
        for name, size in self._layout_sizes():
            if name == dim:
                return stride
            stride *= size
        raise KeyError(dim)

    def members(self, dim: str, rank: int = 0) -> np.ndarray:
        """Global ranks of the ``dim`` group that contains ``rank``."""
        coords = self.coords(rank)
        if dim == "dp":
            # dp group = all ranks differing only in the ep and (dp/ep) coordinates.
            ranks = []
            for e in range(self.ep):
                for d in range(self.dp // self.ep):
                    c = dict(coords, ep=e, dp=d)
                    ranks.append(self.rank_of(c))
            return np.array(sorted(ranks), dtype=np.int64)
        size = dict(self._layout_sizes())[dim]
        return np.array([self.rank_of(dict(coords, **{dim: k})) for k in range(size)], dtype=np.int64)

    def all_groups(self, dim: str) -> np.ndarray:
        """Every ``dim`` group as rows of global ranks, shape (world / group size, group size)."""
        sizes = self._layout_sizes()
        names = [n for n, _ in sizes]
        shape = [s for _, s in sizes][::-1]  # slowest first, as numpy C order
        grid = np.arange(self.world, dtype=np.int64).reshape(shape)
        axes_rev = names[::-1]
        group_axes = [axes_rev.index("ep"), axes_rev.index("dp")] if dim == "dp" else [axes_rev.index(dim)]
        other = [a for a in range(len(shape)) if a not in group_axes]
        moved = np.transpose(grid, other + group_axes)
        return moved.reshape(-1, int(np.prod([shape[a] for a in group_axes])))

    def coords(self, rank: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, size in self._layout_sizes():
            out[name] = rank % size
            rank //= size
        return out

    def rank_of(self, coords: dict[str, int]) -> int:
        rank, stride = 0, 1
        for name, size in self._layout_sizes():
            rank += coords[name] * stride
            stride *= size
        return rank


def validate_order(
    order: str | tuple[str, ...], *, file: str | None = None, path: str = "parallelism.order"
) -> tuple[str, ...]:
    """Parse a rank order like ``tp-cp-ep-dp-pp`` (fastest first); every dimension exactly once."""
    dims = tuple(order.split("-")) if isinstance(order, str) else tuple(order)
    if sorted(dims) != sorted(PARALLEL_DIMS):
        raise ConfigError(
            "rank order must name each of tp, cp, ep, dp, pp once",
            file=file,
            path=path,
            value="-".join(dims),
            expected="e.g. tp-cp-ep-dp-pp (fastest-varying first)",
        )
    return dims


class Cluster:
    """The physical cluster: sizes of every level and where a GPU sits."""

    def __init__(self, profile: Profile, racks: int | None = None) -> None:
        self.profile = profile
        self.racks = racks if racks is not None else profile.cluster.racks
        if self.racks < 1:
            raise ConfigError(
                "a cluster needs at least one rack",
                path="--racks",
                value=self.racks,
                expected="a positive number of racks",
            )
        self.gpus_per_tray = profile.rack.gpus_per_tray
        self.gpus_per_rack = profile.gpus_per_rack
        self.domain_size = profile.scale_up.domain_size
        self.racks_per_pod = profile.cluster.racks_per_pod
        self.gpus = self.racks * self.gpus_per_rack
        self.tier_spans = tuple(t.span_gpus for t in profile.scale_out.tiers)

    @property
    def pods(self) -> int:
        return math.ceil(self.racks / self.racks_per_pod)

    def racks_needed(self, gpus: int) -> int:
        return math.ceil(gpus / self.gpus_per_rack)

    def require(self, gpus: int, *, job: str | None = None, sizes: str | None = None) -> None:
        """Raise a CapacityError saying how many racks a job of ``gpus`` needs when it does not fit.

        ``job`` names where the GPU count comes from (the workload file and its parallel sizes) and ``sizes``
        the fields to make smaller, so the user knows what to edit besides ``--racks``."""
        if gpus > self.gpus:
            need = self.racks_needed(gpus)
            raise CapacityError(
                f"the job needs {gpus} GPUs = {need} racks of {self.gpus_per_rack}"
                + (f" ({job})" if job else "")
                + f", but the cluster ({self.profile.source_file or self.profile.name}) has {self.racks} "
                f"rack{'s' * (self.racks != 1)} ({self.gpus} GPUs); "
                f"use --racks {need} or smaller {sizes or 'parallel sizes'}"
            )
        if self.tier_spans and gpus > self.tier_spans[-1]:
            top = len(self.tier_spans) - 1
            raise ConfigError(
                f"the job's {gpus} GPUs are more than the top fabric tier connects: no switch links its "
                "blocks to each other",
                file=self.profile.source_file,
                path=f"scale_out.tiers[{top}].span_gpus",
                value=self.tier_spans[-1],
                expected=f"at least {gpus} (raise it, or add a tier above) or a job of at most "
                f"{self.tier_spans[-1]} GPUs",
            )

    # ------------------------------------------------------------------ where things are
    def rack_of(self, gpu: np.ndarray | int) -> np.ndarray | int:
        return (
            np.asarray(gpu) // self.gpus_per_rack
            if isinstance(gpu, np.ndarray)
            else gpu // self.gpus_per_rack
        )

    def tray_of(self, gpu: np.ndarray | int) -> np.ndarray | int:
        return gpu // self.gpus_per_tray

    def domain_of(self, gpu: np.ndarray | int) -> np.ndarray | int:
        return gpu // self.domain_size

    def pod_of(self, gpu: np.ndarray | int) -> np.ndarray | int:
        return gpu // (self.gpus_per_rack * self.racks_per_pod)

    def place(self, gpu: int) -> str:
        """Human-readable place of a GPU, e.g. ``pod0/rack03/tray05/gpu2``."""
        rack = gpu // self.gpus_per_rack
        tray = (gpu % self.gpus_per_rack) // self.gpus_per_tray
        return f"pod{rack // self.racks_per_pod}/rack{rack:02d}/tray{tray:02d}/gpu{gpu % self.gpus_per_tray}"

    # ------------------------------------------------------------------ groups
    def layout(self, members: np.ndarray) -> GroupLayout:
        """Layout of one group given its GPUs (a 1-D array)."""
        members = np.asarray(members, dtype=np.int64)
        lo, hi = int(members.min()), int(members.max())
        if hi - lo + 1 == len(members):  # contiguous GPUs: count blocks arithmetically, no sort
            spans = (self.domain_size, *self.tier_spans)
            counts = [hi // s - lo // s + 1 for s in spans]
            fewest = contiguous_min_per_domain(lo, hi + 1, self.domain_size)
            return make_layout(len(members), counts[0], tuple(counts[1:]), fewest)
        return self.layouts(members.reshape(1, -1))[0]

    def layouts(self, groups: np.ndarray) -> list[GroupLayout]:
        """Layouts of many groups at once (rows of GPU indices), vectorised over groups."""
        groups = np.asarray(groups, dtype=np.int64)
        size = groups.shape[1]
        domains = _distinct_per_row(groups // self.domain_size)
        fewest = _min_run_per_row(groups // self.domain_size)
        blocks = [_distinct_per_row(groups // span) for span in self.tier_spans]
        out: list[GroupLayout] = []
        for i in range(groups.shape[0]):
            tier_blocks = tuple(int(b[i]) for b in blocks)
            out.append(make_layout(size, int(domains[i]), tier_blocks, int(fewest[i])))
        return out

    def worst_layout(self, groups: np.ndarray) -> GroupLayout:
        """The most spread-out layout among groups: a synchronous job waits for its slowest group."""
        groups = np.asarray(groups, dtype=np.int64)
        size = groups.shape[1]
        domains = _distinct_per_row(groups // self.domain_size)
        fewest = _min_run_per_row(groups // self.domain_size)
        blocks = [_distinct_per_row(groups // span) for span in self.tier_spans]
        # Rank by highest tier crossed, then by fewest ranks per domain (more scale-out traffic), then by
        # the sparsest domain (fewest NICs carrying a domain's share).
        top = np.full(groups.shape[0], TIER_SCALE_UP, dtype=np.int64)
        for t in range(len(self.tier_spans) - 1, -1, -1):
            below = domains if t == 0 else blocks[t - 1]
            crosses = (below > 1) & (top == TIER_SCALE_UP)
            top[crosses] = t
        key = (top * (size + 1) + domains) * (size + 1) + (size - fewest)
        i = int(np.argmax(key))
        return make_layout(size, int(domains[i]), tuple(int(b[i]) for b in blocks), int(fewest[i]))

    def parallel_layouts(self, dims: ParallelDims, *, pp_wrap: bool = False) -> dict[str, GroupLayout]:
        """Worst-case layout of every parallel dimension of a job placed from GPU 0. ``pp_wrap``: the last
        pipeline stage also sends to the first (an interleaved schedule's next model chunk)."""
        self.require(dims.world)
        out: dict[str, GroupLayout] = {}
        for dim in PARALLEL_DIMS:
            groups = dims.all_groups(dim)
            out[dim] = self.worst_layout(groups)
        # Pipeline send/recv crosses between neighbouring stages of one pipeline: a 2-member "group" per
        # stage boundary of every pipeline (not GPU g and g + stride: where pp is not the outermost
        # dimension, that pairs the last stage of one pipeline with the first of the next).
        if dims.pp > 1:
            pipes = dims.all_groups("pp")  # [pipelines, pp]: stages in order
            senders, receivers = pipes[:, :-1], pipes[:, 1:]
            if pp_wrap:
                senders = np.concatenate([senders, pipes[:, -1:]], axis=1)
                receivers = np.concatenate([receivers, pipes[:, :1]], axis=1)
            pairs = np.stack([senders.ravel(), receivers.ravel()], axis=1)
            out["pp_p2p"] = self.worst_layout(pairs)
        else:
            out["pp_p2p"] = make_layout(1, 1, tuple(1 for _ in self.tier_spans))
        return out


def _distinct_per_row(ids: np.ndarray) -> np.ndarray:
    """Number of distinct values in each row of a 2-D integer array."""
    if ids.shape[1] == 1:
        return np.ones(ids.shape[0], dtype=np.int64)
    s = np.sort(ids, axis=1)
    return 1 + np.count_nonzero(np.diff(s, axis=1), axis=1)


def _min_run_per_row(ids: np.ndarray) -> np.ndarray:
    """Fewest occurrences of any value in each row of a 2-D integer array (members of the sparsest domain)."""
    rows, width = ids.shape
    s = np.sort(ids, axis=1)
    starts = np.ones((rows, width), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    flat = np.flatnonzero(starts.ravel())
    runs = np.diff(np.append(flat, rows * width))
    first = np.searchsorted(flat, np.arange(rows) * width)
    return np.minimum.reduceat(runs, first)


def contiguous_min_per_domain(first: int, last: int, domain_size: int) -> int:
    """Members of the sparsest domain that GPUs ``first``..``last - 1`` touch (the partial first or last)."""
    if (last - 1) // domain_size == first // domain_size:
        return last - first
    head = domain_size - first % domain_size
    tail = (last - 1) % domain_size + 1
    return min(head, tail)


def make_layout(
    size: int, domains: int, tier_blocks: tuple[int, ...], min_per_domain: int | None = None
) -> GroupLayout:
    """Layout from counts: members, scale-up domains spanned, and blocks spanned at each fabric tier.

    ``min_per_domain``: members of the sparsest spanned domain, when known (else an even spread)."""
    top = TIER_SCALE_UP
    below = domains
    for t, blocks in enumerate(tier_blocks):
        if below > 1:
            top = t
        below = blocks
    if below > 1 and tier_blocks:
        top = len(tier_blocks) - 1  # spans several top-tier blocks: still crosses the top tier
    per = math.ceil(size / domains)
    return GroupLayout(
        size=size,
        ranks_per_domain=per,
        domains=domains,
        tier_blocks=tier_blocks,
        top_tier=top,
        min_ranks_per_domain=per if min_per_domain is None else max(1, min(per, int(min_per_domain))),
    )
