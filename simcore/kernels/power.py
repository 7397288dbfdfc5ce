"""GPU and rack power kernels: activity intervals -> utilisation bins -> W per GPU -> W at the rack input.

Pure functions over numpy arrays, ``@njit(cache=True)``; each kernel ``f`` has a plain-numpy ``f_ref``
next to it that says what the kernel means and is what the tests compare against.

Conventions (all kernels in ``simcore.kernels.power/thermal/grid``):

- SI units: s, W, J, degC, K/W, J/K, kg/s. Time series are float64 ``[n_classes, n_bins]`` (C order);
  bin ``b`` covers ``[t0_s + b*dt_s, t0_s + (b+1)*dt_s)``.
- Per-class parameters are float64 arrays ``[n_classes]`` (use :func:`per_class` to broadcast a scalar).
  A "class" is a set of identical GPUs (representative ranks); all powers here are *per GPU* and the
  caller multiplies by the class multiplicity.
"""

from __future__ import annotations

import numba
import numpy as np

# Activity channels (second axis of ``util``).
CH_TENSOR = 0  # tensor cores / SMs busy with GEMM-like work
CH_HBM = 1  # HBM bandwidth utilisation
CH_SCALE_UP = 2  # scale-up link (NVLink) utilisation
CH_SCALE_OUT = 3  # scale-out NIC utilisation
N_CHANNELS = 4

# Interval end points closer than this (in bins) to a bin edge are snapped onto it, so that a time computed
# as ``t0 + k*dt`` in floating point lands exactly on edge k and leaks nothing into the neighbouring bin.
EDGE_SNAP_BINS = 1e-9

# 80 PLUS Titanium, 230 V internal-redundant data-centre PSU: efficiency at 10/20/50/100 % load
# (modeling-notes §2.3, Wikipedia / Tom's Hardware 80 PLUS table).
TITANIUM_CURVE_LOAD = np.array([0.1, 0.2, 0.5, 1.0])
TITANIUM_CURVE_EFF = np.array([0.90, 0.94, 0.96, 0.91])


def per_class(value: float | np.ndarray, n_classes: int) -> np.ndarray:
    """Broadcast a scalar or per-class value to the contiguous float64 ``[n_classes]`` the kernels take."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=np.float64), (n_classes,)))


# --------------------------------------------------------------------------------------------------------
# Activity binning
# --------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def activity_intervals(
    carry_start: np.ndarray,
    carry_end: np.ndarray,
    carry_class: np.ndarray,
    carry_channel: np.ndarray,
    carry_level: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
    rank_class: np.ndarray,
    u_tensor: np.ndarray,
    u_hbm: np.ndarray,
    u_scale_up: np.ndarray,
    u_scale_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The intervals a control tick bins: the carried ones (still open at the last tick), then one per
    non-zero activity channel of each new event row, row by row in channel order (``start, end, class,
    channel, level``). The event columns may be strided views of the recorder's rows; levels widen to
    float64 exactly."""
    n_rows = t_start.shape[0]
    n_carry = carry_start.shape[0]
    n = n_carry
    for i in range(n_rows):
        n += (u_tensor[i] > 0.0) + (u_hbm[i] > 0.0) + (u_scale_up[i] > 0.0) + (u_scale_out[i] > 0.0)
    start = np.empty(n)
    end = np.empty(n)
    cls = np.empty(n, dtype=np.int64)
    channel = np.empty(n, dtype=np.int64)
    level = np.empty(n)
    start[:n_carry] = carry_start
    end[:n_carry] = carry_end
    cls[:n_carry] = carry_class
    channel[:n_carry] = carry_channel
    level[:n_carry] = carry_level
    j = n_carry
    for i in range(n_rows):
        for c in range(N_CHANNELS):
            if c == CH_TENSOR:
                u = np.float64(u_tensor[i])
            elif c == CH_HBM:
                u = np.float64(u_hbm[i])
            elif c == CH_SCALE_UP:
                u = np.float64(u_scale_up[i])
            else:
                u = np.float64(u_scale_out[i])
            if u > 0.0:
                start[j] = t_start[i]
                end[j] = t_end[i]
                cls[j] = rank_class[i]
                channel[j] = c
                level[j] = u
                j += 1
    return start, end, cls, channel, level


def activity_intervals_ref(
    carry_start: np.ndarray,
    carry_end: np.ndarray,
    carry_class: np.ndarray,
    carry_channel: np.ndarray,
    carry_level: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
    rank_class: np.ndarray,
    u_tensor: np.ndarray,
    u_hbm: np.ndarray,
    u_scale_up: np.ndarray,
    u_scale_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference for :func:`activity_intervals`."""
    levels = np.stack([u_tensor, u_hbm, u_scale_up, u_scale_out], axis=1, dtype=np.float64)  # [n, 4]
    r, c = np.nonzero(levels > 0.0)
    new = (t_start[r], t_end[r], rank_class[r].astype(np.int64), c.astype(np.int64), levels[r, c])
    carry = (carry_start, carry_end, carry_class, carry_channel, carry_level)
    return tuple(np.concatenate([x, y]) for x, y in zip(carry, new, strict=True))  # type: ignore[return-value]


@numba.njit(cache=True)
def _snap(x: float) -> float:
    r = np.rint(x)
    return r if abs(x - r) <= EDGE_SNAP_BINS else x


@numba.njit(cache=True)
def _add_interval(
    row: np.ndarray, start_s: float, end_s: float, lv: float, t0_s: float, inv_dt: float, n_bins: int
) -> None:
    """Add one interval to a bin row: full bins get ``lv``, the partial end bins ``lv * fraction``."""
    x0 = max(_snap((start_s - t0_s) * inv_dt), 0.0)
    x1 = min(_snap((end_s - t0_s) * inv_dt), float(n_bins))
    if not x1 > x0:  # empty, reversed, outside the window or NaN
        return
    b0 = int(np.floor(x0))
    b1 = int(np.ceil(x1)) - 1
    if b0 == b1:
        row[b0] += lv * (x1 - x0)
        return
    row[b0] += lv * ((b0 + 1) - x0)
    for b in range(b0 + 1, b1):
        row[b] += lv
    row[b1] += lv * (x1 - b1)


@numba.njit(cache=True)
def bin_activity(
    start_s: np.ndarray,
    end_s: np.ndarray,
    class_idx: np.ndarray,
    channel_idx: np.ndarray,
    level: np.ndarray,
    n_classes: int,
    n_channels: int,
    t0_s: float,
    dt_s: float,
    n_bins: int,
) -> np.ndarray:
    """Bin activity intervals into utilisation ``util[n_classes, n_channels, n_bins]`` in [0, 1].

    Interval i adds ``level[i] * overlap(interval, bin) / dt_s`` to ``util[class_idx[i], channel_idx[i]]``;
    afterwards each cell is clipped at 1 (overlapping intervals on one channel saturate it). Intervals may
    come in any order and are clipped to the window ``[t0_s, t0_s + n_bins*dt_s)``. Cost is O(bins
    covered), all inside numba; bin edges are exact (see ``EDGE_SNAP_BINS``). When only power is needed,
    :func:`activity_power` does the same without materialising this (large) array.
    """
    n = start_s.shape[0]
    if end_s.shape[0] != n or class_idx.shape[0] != n or channel_idx.shape[0] != n or level.shape[0] != n:
        raise ValueError("bin_activity: interval arrays must have one length")
    util = np.zeros((n_classes, n_channels, n_bins))
    inv_dt = 1.0 / dt_s
    for i in range(n):
        k = class_idx[i]
        c = channel_idx[i]
        if k < 0 or k >= n_classes or c < 0 or c >= n_channels:
            raise ValueError("bin_activity: class_idx or channel_idx out of range")
        _add_interval(util[k, c], start_s[i], end_s[i], level[i], t0_s, inv_dt, n_bins)
    for k in range(n_classes):
        for c in range(n_channels):
            row = util[k, c]
            for b in range(n_bins):
                if row[b] > 1.0:
                    row[b] = 1.0
    return util


def bin_activity_ref(
    start_s: np.ndarray,
    end_s: np.ndarray,
    class_idx: np.ndarray,
    channel_idx: np.ndarray,
    level: np.ndarray,
    n_classes: int,
    n_channels: int,
    t0_s: float,
    dt_s: float,
    n_bins: int,
) -> np.ndarray:
    """Reference: dense overlap matrix ``[n_intervals, n_bins]`` in bin units, summed per (class, channel)."""

    def snap(x: np.ndarray) -> np.ndarray:
        r = np.rint(x)
        return np.where(np.abs(x - r) <= EDGE_SNAP_BINS, r, x)

    inv_dt = 1.0 / dt_s
    x0 = np.maximum(snap((np.asarray(start_s) - t0_s) * inv_dt), 0.0)[:, None]
    x1 = np.minimum(snap((np.asarray(end_s) - t0_s) * inv_dt), float(n_bins))[:, None]
    b = np.arange(n_bins, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(x1, b + 1.0) - np.maximum(x0, b), 0.0, None)
    util = np.zeros((n_classes, n_channels, n_bins))
    np.add.at(util, (np.asarray(class_idx), np.asarray(channel_idx)), np.asarray(level)[:, None] * overlap)
    return np.minimum(util, 1.0)


# --------------------------------------------------------------------------------------------------------
# GPU power (modeling-notes §2.1):  P = P_idle + (P_peak - P_idle) * A * (f/f_max)^kappa
# --------------------------------------------------------------------------------------------------------


_BLOCK = 256  # bins per block: the activity accumulator and power row stay in L1


@numba.njit(cache=True)
def _activity_power_row(
    util_k: np.ndarray,
    weights_k: np.ndarray,
    clock: np.ndarray,
    idle_w: float,
    peak_w: float,
    kappa: float,
    act_out: np.ndarray,
    power_out: np.ndarray,
    with_power: bool,
    clear_util: bool,
) -> None:
    """One class: ``act_out = clamp(sum_c w_c * min(u_c, 1), 0, 1)`` (from 0.0, channels in order, zero
    weights skipped: the same sum in every caller, so results agree bit for bit) and, if ``with_power``,
    ``power_out = idle + (peak - idle) * A * clock**kappa``. ``clear_util`` zeroes the consumed block.

    Speed: blocks of ``_BLOCK`` bins; full-clock blocks (the common case) take a vectorisable loop,
    elsewhere the pow is recomputed only when the clock changes (it is constant between control ticks).
    """
    n_channels, n = util_k.shape
    span = peak_w - idle_w
    f_prev = 1.0
    s_prev = 1.0
    # Loops run over 0-based indices of block slices: numba cannot prove ``lo + j`` non-negative, and the
    # negative-index wraparound check would stop LLVM from vectorising (measured 4x slower).
    for lo in range(0, n, _BLOCK):
        m = min(_BLOCK, n - lo)
        acc = act_out[lo : lo + m]
        for j in range(m):
            acc[j] = 0.0
        for c in range(n_channels):
            w = weights_k[c]
            if w == 0.0:
                continue
            u = util_k[c, lo : lo + m]
            for j in range(m):
                acc[j] += w * min(u[j], 1.0)
            if clear_util:
                for j in range(m):
                    u[j] = 0.0
        for j in range(m):
            acc[j] = min(max(acc[j], 0.0), 1.0)
        if not with_power:
            continue
        clk = clock[lo : lo + m]
        out = power_out[lo : lo + m]
        full = True
        for j in range(m):
            if clk[j] != 1.0:
                full = False
                break
        if full:
            for j in range(m):
                out[j] = idle_w + span * acc[j]
        else:
            for j in range(m):
                f = clk[j]
                if f != f_prev:
                    f_prev = f
                    s_prev = 1.0 if f == 1.0 else f**kappa
                out[j] = idle_w + span * acc[j] * s_prev


@numba.njit(cache=True)
def activity(util: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Activity ``A[n_classes, n_bins] = clamp(sum_c weights[k, c] * util[k, c, :], 0, 1)``."""
    n_classes, _, n_bins = util.shape
    a = np.empty((n_classes, n_bins))
    for k in range(n_classes):
        _activity_power_row(util[k], weights[k], a[k], 0.0, 0.0, 1.0, a[k], a[k], False, False)
    return a


def activity_ref(util: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Reference for :func:`activity`."""
    return np.clip(np.einsum("kc,kcb->kb", weights, util), 0.0, 1.0)


@numba.njit(cache=True)
def gpu_power(
    util: np.ndarray,
    weights: np.ndarray,
    idle_w: np.ndarray,
    peak_w: np.ndarray,
    clock_factor: np.ndarray,
    kappa: np.ndarray,
) -> np.ndarray:
    """Per-GPU power ``[n_classes, n_bins]`` in W (modeling-notes §2.1, "recommended GPU model").

    ``P = idle_w + (peak_w - idle_w) * A * clock_factor**kappa`` with ``A = activity(util, weights)``.
    ``util[n_classes, n_channels, n_bins]``, ``weights[n_classes, n_channels]``, ``idle_w, peak_w,
    kappa [n_classes]``, ``clock_factor[n_classes, n_bins]`` = f/f_max in (0, 1]. No cap is applied here:
    a power cap acts through the clock (:func:`clock_for_power_cap`).
    """
    n_classes, n_channels, n_bins = util.shape
    if clock_factor.shape != (n_classes, n_bins) or weights.shape != (n_classes, n_channels):
        raise ValueError(
            "gpu_power: clock_factor must be [n_classes, n_bins], weights [n_classes, n_channels]"
        )
    if idle_w.shape[0] != n_classes or peak_w.shape[0] != n_classes or kappa.shape[0] != n_classes:
        raise ValueError("gpu_power: per-class parameters must have length n_classes")
    out = np.empty((n_classes, n_bins))
    a = np.empty(n_bins)
    for k in range(n_classes):
        _activity_power_row(
            util[k], weights[k], clock_factor[k], idle_w[k], peak_w[k], kappa[k], a, out[k], True, False
        )
    return out


def gpu_power_ref(
    util: np.ndarray,
    weights: np.ndarray,
    idle_w: np.ndarray,
    peak_w: np.ndarray,
    clock_factor: np.ndarray,
    kappa: np.ndarray,
) -> np.ndarray:
    """Reference for :func:`gpu_power`."""
    a = activity_ref(util, weights)
    return idle_w[:, None] + (peak_w - idle_w)[:, None] * a * clock_factor ** kappa[:, None]


@numba.njit(cache=True)
def activity_power_into(
    start_s: np.ndarray,
    end_s: np.ndarray,
    class_idx: np.ndarray,
    channel_idx: np.ndarray,
    level: np.ndarray,
    weights: np.ndarray,
    idle_w: np.ndarray,
    peak_w: np.ndarray,
    clock_factor: np.ndarray,
    kappa: np.ndarray,
    t0_s: float,
    dt_s: float,
    power_w_out: np.ndarray,
    activity_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel of :func:`activity_power`, writing into caller buffers ``[n_classes, n_bins]`` (returned).

    Reuse the buffers across control ticks: a fresh 50 MB array costs more in page faults than the maths.
    """
    n_classes, n_channels = weights.shape
    n_bins = clock_factor.shape[1]
    n = start_s.shape[0]
    shape = (n_classes, n_bins)
    if clock_factor.shape != shape or power_w_out.shape != shape or activity_out.shape != shape:
        raise ValueError("activity_power: clock_factor and outputs must be [n_classes, n_bins]")
    if idle_w.shape[0] != n_classes or peak_w.shape[0] != n_classes or kappa.shape[0] != n_classes:
        raise ValueError("activity_power: per-class parameters must have length n_classes")
    if end_s.shape[0] != n or class_idx.shape[0] != n or channel_idx.shape[0] != n or level.shape[0] != n:
        raise ValueError("activity_power: interval arrays must have one length")
    # Group intervals by class, keeping input order (so sums match bin_activity bit for bit). Input that
    # is already grouped (the engine emits it per class) needs no permutation.
    first = np.zeros(n_classes + 1, dtype=np.int64)
    grouped = True
    for i in range(n):
        k = class_idx[i]
        c = channel_idx[i]
        if k < 0 or k >= n_classes or c < 0 or c >= n_channels:
            raise ValueError("activity_power: class_idx or channel_idx out of range")
        first[k + 1] += 1
        if i > 0 and k < class_idx[i - 1]:
            grouped = False
    for k in range(n_classes):
        first[k + 1] += first[k]
    order = np.empty(0 if grouped else n, dtype=np.int64)
    if not grouped:
        fill = first[:-1].copy()
        for i in range(n):
            k = class_idx[i]
            order[fill[k]] = i
            fill[k] += 1

    inv_dt = 1.0 / dt_s
    scratch = np.zeros((n_channels, n_bins))  # cleared block by block as it is consumed
    for k in range(n_classes):
        wk = weights[k]
        for j in range(first[k], first[k + 1]):
            i = j if grouped else order[j]
            c = channel_idx[i]
            if wk[c] != 0.0:  # a channel with no weight cannot change the activity
                _add_interval(scratch[c], start_s[i], end_s[i], level[i], t0_s, inv_dt, n_bins)
        _activity_power_row(
            scratch,
            wk,
            clock_factor[k],
            idle_w[k],
            peak_w[k],
            kappa[k],
            activity_out[k],
            power_w_out[k],
            True,
            True,
        )
    return power_w_out, activity_out


def activity_power(
    start_s: np.ndarray,
    end_s: np.ndarray,
    class_idx: np.ndarray,
    channel_idx: np.ndarray,
    level: np.ndarray,
    weights: np.ndarray,
    idle_w: np.ndarray,
    peak_w: np.ndarray,
    clock_factor: np.ndarray,
    kappa: np.ndarray,
    t0_s: float,
    dt_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused ``bin_activity`` -> ``activity`` -> ``gpu_power``: ``(power_w, activity)``, each
    ``[n_classes, n_bins]``, bit-identical to the three kernels in sequence.

    The hot path: it never builds the ``[n_classes, n_channels, n_bins]`` utilisation array (4x the size
    of the result) but bins one class at a time into a reused scratch block. ``n_classes, n_channels =
    weights.shape``; ``n_bins = clock_factor.shape[1]``; the rest as in :func:`bin_activity` and
    :func:`gpu_power`. Outputs are allocated by numpy (large numpy arrays are backed by transparent huge
    pages and fault in several times faster than numba's); the work is :func:`activity_power_into`.
    """
    shape = np.shape(clock_factor)
    return activity_power_into(
        start_s,
        end_s,
        class_idx,
        channel_idx,
        level,
        weights,
        idle_w,
        peak_w,
        clock_factor,
        kappa,
        float(t0_s),
        float(dt_s),
        np.empty(shape),
        np.empty(shape),
    )


@numba.njit(cache=True)
def clock_for_power_cap(
    cap_w: np.ndarray,
    idle_w: np.ndarray,
    peak_w: np.ndarray,
    activity: np.ndarray,
    kappa: np.ndarray,
    f_min: np.ndarray,
) -> np.ndarray:
    """Clock factor f/f_max ``[n_classes, n_bins]`` that holds a class with activity A at its power cap.

    Inverting the power model (modeling-notes §2.1, "under a power cap"):
    ``f = ((cap - idle) / ((peak - idle) * A))**(1/kappa)``, clipped to ``[f_min, 1]``; 1 where the cap does
    not bind (including A = 0). At ``f_min`` the GPU can still exceed the cap (the model has no lower lever).
    ``cap_w, idle_w, peak_w, kappa, f_min [n_classes]``, ``activity[n_classes, n_bins]`` in [0, 1].
    """
    n_classes, n_bins = activity.shape
    out = np.empty((n_classes, n_bins))
    for k in range(n_classes):
        head = cap_w[k] - idle_w[k]
        span = peak_w[k] - idle_w[k]
        inv_kap = 1.0 / kappa[k]
        for b in range(n_bins):
            dyn = span * activity[k, b]
            if dyn <= head:
                f = 1.0
            elif head <= 0.0:
                f = f_min[k]
            else:
                f = max((head / dyn) ** inv_kap, f_min[k])
            out[k, b] = f
    return out


def clock_for_power_cap_ref(
    cap_w: np.ndarray,
    idle_w: np.ndarray,
    peak_w: np.ndarray,
    activity: np.ndarray,
    kappa: np.ndarray,
    f_min: np.ndarray,
) -> np.ndarray:
    """Reference for :func:`clock_for_power_cap`."""
    head = (cap_w - idle_w)[:, None]
    dyn = (peak_w - idle_w)[:, None] * activity
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.clip(head / dyn, 0.0, None) ** (1.0 / kappa[:, None])
    f = np.where(dyn <= head, 1.0, f)
    return np.clip(f, f_min[:, None], 1.0)


@numba.njit(cache=True)
def compute_slowdown(clock_factor: np.ndarray, compute_bound_fraction: np.ndarray) -> np.ndarray:
    """Time stretch of work at clock f/f_max: ``phi/f + (1 - phi)`` (modeling-notes §2.1).

    The compute-bound share ``phi`` of the time scales as 1/f, the memory-bound rest is insensitive to the
    SM clock. Elementwise; arrays of one shape (or scalars).
    """
    return compute_bound_fraction / clock_factor + (1.0 - compute_bound_fraction)


def compute_slowdown_ref(clock_factor: np.ndarray, compute_bound_fraction: np.ndarray) -> np.ndarray:
    """Reference for :func:`compute_slowdown`."""
    return compute_bound_fraction / clock_factor + (1.0 - compute_bound_fraction)


# --------------------------------------------------------------------------------------------------------
# Rack power delivery (modeling-notes §2.3)
# --------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _interp1(x: float, xp: np.ndarray, fp: np.ndarray) -> float:
    """Piecewise-linear through (xp, fp), constant beyond the ends; exact at the points (t = 0 there).
    A hand loop rather than ``np.interp``, whose numba version takes seconds to compile."""
    if x <= xp[0]:
        return fp[0]
    last = xp.shape[0] - 1
    if x >= xp[last]:
        return fp[last]
    i = 0
    while xp[i + 1] <= x:
        i += 1
    t = (x - xp[i]) / (xp[i + 1] - xp[i])
    return fp[i] + t * (fp[i + 1] - fp[i])


@numba.njit(cache=True)
def psu_efficiency(load_fraction: np.ndarray, curve_load: np.ndarray, curve_eff: np.ndarray) -> np.ndarray:
    """PSU efficiency at ``load_fraction`` (output / rated): piecewise linear through the curve points
    (``curve_load`` increasing), held constant beyond the first and last point (e.g.
    ``TITANIUM_CURVE_LOAD/EFF``, modeling-notes §2.3). Any shape."""
    x = np.ascontiguousarray(load_fraction)
    flat = x.reshape(-1)
    out = np.empty(flat.shape[0])
    for i in range(flat.shape[0]):
        out[i] = _interp1(flat[i], curve_load, curve_eff)
    return out.reshape(x.shape)


def psu_efficiency_ref(
    load_fraction: np.ndarray, curve_load: np.ndarray, curve_eff: np.ndarray
) -> np.ndarray:
    """Reference for :func:`psu_efficiency`."""
    return np.interp(load_fraction, curve_load, curve_eff)


@numba.njit(cache=True)
def rack_input_power(
    it_power_w: np.ndarray,
    psu_rated_w: np.ndarray,
    curve_load: np.ndarray,
    curve_eff: np.ndarray,
    distribution_eff: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rack input power and conversion loss, both ``[n_racks, n_bins]`` in W.

    Chain: rack feed -> PSUs (power shelf, efficiency from the curve at their load) -> distribution
    between PSU output and the IT load (busbar, cables, DC/DC; ``distribution_eff``) -> IT load.
    ``psu_out = it / distribution_eff``; ``input = psu_out / psu_efficiency(psu_out / psu_rated_w)``;
    ``loss = input - it``. ``psu_rated_w[n_racks]`` is the summed rating of the load-sharing PSUs,
    ``distribution_eff[n_racks]``. The curve has no no-load loss: 0 W in gives 0 W out.
    """
    n_racks, n_bins = it_power_w.shape
    input_w = np.empty((n_racks, n_bins))
    loss_w = np.empty((n_racks, n_bins))
    for r in range(n_racks):
        inv_rated = 1.0 / psu_rated_w[r]
        for b in range(n_bins):
            out_w = it_power_w[r, b] / distribution_eff[r]
            p_in = out_w / _interp1(out_w * inv_rated, curve_load, curve_eff)
            input_w[r, b] = p_in
            loss_w[r, b] = p_in - it_power_w[r, b]
    return input_w, loss_w


def rack_input_power_ref(
    it_power_w: np.ndarray,
    psu_rated_w: np.ndarray,
    curve_load: np.ndarray,
    curve_eff: np.ndarray,
    distribution_eff: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference for :func:`rack_input_power`."""
    out_w = it_power_w / distribution_eff[:, None]
    input_w = out_w / np.interp(out_w * (1.0 / psu_rated_w[:, None]), curve_load, curve_eff)
    return input_w, input_w - it_power_w


@numba.njit(cache=True)
def distribution_loss_w(power_w: np.ndarray, voltage_v: float, resistance_ohm: float) -> np.ndarray:
    """Conductor loss (W) delivering ``power_w`` at ``voltage_v`` through a loop (out and back) resistance
    ``resistance_ohm``. Elementwise.

    ``I = P / V``, ``loss = I^2 * R``: at equal resistance, 800 V DC carries 800/54 = 14.8x less current
    than a 54 V busbar and loses 14.8^2 = 219x less (modeling-notes §2.3). ``V`` is the nominal voltage at
    the load (the small IR drop is neglected). In practice conductors are sized per current, so compare
    designs with their own R.
    """
    current_a = power_w / voltage_v
    return current_a * current_a * resistance_ohm


def distribution_loss_w_ref(power_w: np.ndarray, voltage_v: float, resistance_ohm: float) -> np.ndarray:
    """Reference for :func:`distribution_loss_w`."""
    return (power_w / voltage_v) ** 2 * resistance_ohm


@numba.njit(cache=True)
def distribution_efficiency(power_w: np.ndarray, voltage_v: float, resistance_ohm: float) -> np.ndarray:
    """Efficiency ``P / (P + I^2 R) = 1 / (1 + P R / V^2)`` of delivering ``power_w`` at ``voltage_v``
    (see :func:`distribution_loss_w`); 1 at zero power. Feed it to ``rack_input_power(distribution_eff=)``."""
    return 1.0 / (1.0 + power_w * (resistance_ohm / (voltage_v * voltage_v)))


def distribution_efficiency_ref(power_w: np.ndarray, voltage_v: float, resistance_ohm: float) -> np.ndarray:
    """Reference for :func:`distribution_efficiency`: delivered / (delivered + loss)."""
    p = np.asarray(power_w, dtype=np.float64)
    loss = distribution_loss_w_ref(p, voltage_v, resistance_ohm)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0.0, p / (p + loss), 1.0)
