"""Roofline compute time with shape-dependent achievable efficiency.

time = max(flops / (peak * eff(d) * f), nbytes / (hbm_bw * hbm_eff)) + overhead, where
eff(d) = max_eff * d / (d + half_dim) for a GEMM whose smallest dimension is d (small GEMMs cannot
fill the tensor cores), attention runs at a fraction of the GEMM efficiency that grows with the head
dimension d (its inner GEMM dimension): attn_eff * [d / (d + attn_half)] / [128 / (128 + attn_half)],
equal to attn_eff at d = 128 and never above max_eff; element-wise work is memory-bound by construction. f is the clock factor set by power caps and throttling: it
stretches only the compute-bound part (ASTRA-sim's roofline, modeling-notes 1.6 and 2.1).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numba
import numpy as np

from simcore.profile import GemmCalibration, Profile

KIND_GEMM, KIND_ATTENTION, KIND_ELEMENTWISE = 0, 1, 2
MEMO_MAX = 50_000  # distinct compute queries a ComputeModel keeps before its memo starts over
# attention_efficiency is stated at this head dimension (the common one: Llama, GPT-3, Qwen3, Mixtral)
ATTENTION_REFERENCE_HEAD_DIM = 128.0
KIND_IDS = {
    "gemm": KIND_GEMM,
    "attention": KIND_ATTENTION,
    "elementwise": KIND_ELEMENTWISE,
    "norm": KIND_ELEMENTWISE,
    "optimizer": KIND_ELEMENTWISE,
}


@numba.njit(cache=True)
def roofline_times(
    flops: np.ndarray,
    nbytes: np.ndarray,
    min_dim: np.ndarray,
    kind: np.ndarray,
    clock: np.ndarray,
    peak_flops: float,
    max_eff: float,
    half_dim: float,
    attn_eff: float,
    attn_half: float,
    hbm_bw: float,
    overhead_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised roofline: (time_s, tensor busy fraction, HBM busy fraction) per op (``min_dim`` of an
    attention op is its head dimension; 0 = the reference head dimension)."""
    n = flops.shape[0]
    t = np.empty(n)
    u_t = np.empty(n)
    u_m = np.empty(n)
    ref = ATTENTION_REFERENCE_HEAD_DIM
    for i in range(n):
        eff = max_eff
        if kind[i] == 0 and min_dim[i] > 0.0:
            eff = max_eff * min_dim[i] / (min_dim[i] + half_dim)
        elif kind[i] == 1:
            eff = max_eff * attn_eff
            if min_dim[i] > 0.0:
                eff = min(max_eff, eff * min_dim[i] / (min_dim[i] + attn_half) * (ref + attn_half) / ref)
        t_c = 0.0
        if kind[i] != 2 and flops[i] > 0.0:
            t_c = flops[i] / (peak_flops * eff * clock[i])
        t_m = nbytes[i] / hbm_bw
        busy = max(t_c, t_m)
        total = busy + overhead_s if (flops[i] > 0.0 or nbytes[i] > 0.0) else 0.0
        t[i] = total
        u_t[i] = t_c / total if total > 0.0 else 0.0
        u_m[i] = t_m / total if total > 0.0 else 0.0
    return t, u_t, u_m


def roofline_times_ref(
    flops: np.ndarray,
    nbytes: np.ndarray,
    min_dim: np.ndarray,
    kind: np.ndarray,
    clock: np.ndarray,
    peak_flops: float,
    max_eff: float,
    half_dim: float,
    attn_eff: float,
    attn_half: float,
    hbm_bw: float,
    overhead_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain-numpy statement of ``roofline_times`` (used by tests)."""
    gemm_eff = np.where(min_dim > 0, max_eff * min_dim / (min_dim + half_dim), max_eff)
    ref = ATTENTION_REFERENCE_HEAD_DIM
    with np.errstate(divide="ignore", invalid="ignore"):
        head_factor = np.where(min_dim > 0, min_dim / (min_dim + attn_half) * (ref + attn_half) / ref, 1.0)
    attn = np.minimum(max_eff * attn_eff * head_factor, np.where(min_dim > 0, max_eff, np.inf))
    eff = np.where(kind == 0, gemm_eff, attn)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_c = np.where((kind != 2) & (flops > 0), flops / (peak_flops * eff * clock), 0.0)
    t_m = nbytes / hbm_bw
    total = np.where((flops > 0) | (nbytes > 0), np.maximum(t_c, t_m) + overhead_s, 0.0)
    safe = np.where(total > 0, total, 1.0)
    return total, np.where(total > 0, t_c / safe, 0.0), np.where(total > 0, t_m / safe, 0.0)


Op = tuple[float, float, float, int]  # (flops, nbytes, min_dim, kind) of one op of a fused event


class FusedWork(tuple):
    """A fused op list ((flops, nbytes, min_dim, kind), ...) that is hashed once and knows how it repeats. A
    serving iteration's work is new every iteration and hundreds of ops long (each layer's few ops, layer
    after layer): each memo it passes (the engine's, ``time_fused``'s) would hash it again, and converting
    it op by op to an array is most of its cost. Equal to, and hashing as, the plain tuple of its ops."""

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = self.__dict__["_hash"] = tuple.__hash__(self)
        return h

    @classmethod
    def repeated(cls, parts: Iterable[tuple[tuple[Op, ...], int]]) -> FusedWork:
        """The ops of each ``(ops, count)`` part, ``count`` times over, part after part."""
        parts = tuple((tuple(ops), count) for ops, count in parts if ops and count > 0)
        flat: tuple[Op, ...] = ()
        for ops, count in parts:  # a few parts: tuple repeats and joins, faster than a chained iterator
            flat += ops * count
        work = cls(flat)
        work.__dict__["_parts"] = parts
        return work

    @classmethod
    def join(cls, *works: tuple[Op, ...]) -> FusedWork:
        """The ops of ``works`` one after the other (their repeats kept)."""
        return cls.repeated(part for work in works for part in _parts_of(work))

    def parts(self) -> tuple[tuple[tuple[Op, ...], int], ...]:
        """``(ops, count)`` parts whose repeats, in order, are this work."""
        return self.__dict__.get("_parts") or ((tuple(self), 1),)

    def where(self, keep: Callable[[Op], bool]) -> FusedWork:
        """The ops ``keep`` is true of, in order."""
        return FusedWork.repeated((tuple(op for op in ops if keep(op)), count) for ops, count in self.parts())

    def array(self) -> np.ndarray:
        """The ops as an (n, 4) float64 array: each part's few ops converted once, then repeated."""
        out = np.empty((len(self), 4))
        row = 0
        for ops, count in self.parts():
            n = len(ops) * count
            out[row : row + n].reshape(count, len(ops), 4)[...] = _as_array(ops)
            row += n
        return out


def _parts_of(work: tuple[Op, ...]) -> tuple[tuple[tuple[Op, ...], int], ...]:
    return work.parts() if isinstance(work, FusedWork) else ((tuple(work), 1),)


def _as_array(work: tuple[Op, ...]) -> np.ndarray:
    """Ops as an (n, 4) float64 array in one flat pass (np.array of a tuple of tuples inspects every inner
    tuple for its shape: twice as slow)."""
    flat = itertools.chain.from_iterable(work)
    return np.fromiter(flat, dtype=np.float64, count=4 * len(work)).reshape(-1, 4)


@dataclass(frozen=True)
class ComputeTiming:
    time_s: float
    u_tensor: float
    u_hbm: float


class ComputeModel:
    """Per-run compute cost model; memoises scalar queries (workloads repeat the same ops)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.hbm_bw = profile.accelerator.hbm_bandwidth * profile.calibration.hbm_efficiency
        self.overhead_s = profile.accelerator.kernel_overhead
        self.attn_eff = profile.calibration.attention_efficiency
        self.attn_half = profile.calibration.attention_half_head_dim
        self._memo: dict[tuple, ComputeTiming] = {}

    def _gemm_calibration(self, dtype: str) -> GemmCalibration:
        """The dtype's GEMM calibration; a dtype the profile does not calibrate falls back to bf16's."""
        gemm = self.profile.calibration.gemm
        return gemm.get(dtype) or gemm.get("bf16") or next(iter(gemm.values()))

    def params(self, dtype: str) -> tuple[float, float, float]:
        """(peak FLOP/s, max efficiency, half_dim) for a dtype."""
        cal = self._gemm_calibration(dtype)
        return self.profile.peak_flops(dtype), cal.max_efficiency, cal.half_dim

    def row_tile(self, dtype: str) -> int:
        """Rows one GEMM tile of this dtype covers (a GEMM's token rows are padded to whole tiles)."""
        return self._gemm_calibration(dtype).row_tile

    def times(
        self,
        flops: np.ndarray,
        nbytes: np.ndarray,
        min_dim: np.ndarray,
        kinds: np.ndarray,
        dtype: str,
        clock: np.ndarray | float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised times for many ops of one dtype."""
        peak, max_eff, half_dim = self.params(dtype)
        n = len(flops)
        if isinstance(clock, float):  # the common case, without broadcast_to's Python layers
            clock_arr = np.full(n, clock)
        else:
            clock_arr = np.broadcast_to(np.asarray(clock, dtype=np.float64), (n,)).copy()
        return roofline_times(
            np.asarray(flops, np.float64),
            np.asarray(nbytes, np.float64),
            np.asarray(min_dim, np.float64),
            np.asarray(kinds, np.int64),
            clock_arr,
            peak,
            max_eff,
            half_dim,
            self.attn_eff,
            self.attn_half,
            self.hbm_bw,
            self.overhead_s,
        )

    def time_fused(
        self, work: tuple[tuple[float, float, float, int], ...], dtype: str, clock: float
    ) -> ComputeTiming:
        """Time of several ops run back to back as one event: ``work`` is ((flops, nbytes, min_dim, kind), ...).

        Each op keeps its own roofline (a fused event is not one big GEMM); utilisations are time-weighted.
        """
        key = (work, dtype, clock)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        arr = work.array() if isinstance(work, FusedWork) else _as_array(work)
        t, ut, um = self.times(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3].astype(np.int64), dtype, clock)
        total = float(t.sum())
        timing = ComputeTiming(
            total,
            float((ut * t).sum() / total) if total > 0 else 0.0,
            float((um * t).sum() / total) if total > 0 else 0.0,
        )
        self._remember(key, timing)
        return timing

    def _remember(self, key: tuple, timing: ComputeTiming) -> None:
        """Memoise, starting over past MEMO_MAX entries: a serving run's every iteration is a new fused
        work (its batch), ~56k of ~380 ops each on a long run, which the memo would otherwise keep."""
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[key] = timing

    def time(
        self, flops: float, nbytes: float, dtype: str, min_dim: float, kind: str, clock: float
    ) -> ComputeTiming:
        key = (flops, nbytes, dtype, min_dim, kind, clock)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        t, ut, um = self.times(
            np.array([flops]),
            np.array([nbytes]),
            np.array([min_dim]),
            np.array([KIND_IDS.get(kind, KIND_GEMM)]),
            dtype,
            clock,
        )
        timing = ComputeTiming(float(t[0]), float(ut[0]), float(um[0]))
        self._remember(key, timing)
        return timing
