"""Grid-facing kernels: power-swing metrics, GPU-level power smoothing, energy-storage buffering.

Modeling-notes §2.2. Pure functions over numpy arrays, ``@njit(cache=True)``, each with a plain-numpy
``*_ref``; the one exception is the spectral part of :func:`power_swing`, which uses ``numpy.fft`` (numba
has no FFT, and numpy's is compiled code already). Conventions as in :mod:`simcore.kernels.power`: SI units,
series float64 ``[n_series, n_bins]`` sampled every ``dt_s``, per-series parameters float64 ``[n_series]``.
"""

from __future__ import annotations

import numba
import numpy as np

# Critical band for grid stability, e.g. 0.1-20 Hz with its spectral energy capped (modeling-notes §2.2).
BAND_LO_HZ = 0.1
BAND_HI_HZ = 20.0


# --------------------------------------------------------------------------------------------------------
# Power-swing metrics
# --------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _swing_stats(power_w: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    n_series, n = power_w.shape
    ptt = np.zeros(n_series)
    ramp = np.zeros(n_series)
    for k in range(n_series):
        if n == 0:
            continue
        row = power_w[k]
        lo = row[0]
        hi = row[0]
        step = 0.0
        for i in range(1, n):
            v = row[i]
            lo = min(lo, v)
            hi = max(hi, v)
            step = max(step, abs(v - row[i - 1]))
        ptt[k] = hi - lo
        ramp[k] = step / dt_s
    return ptt, ramp


def _in_band(k: np.ndarray, n: int, dt_s: float, band_lo_hz: float, band_hi_hz: float) -> np.ndarray:
    """Bins ``k`` (frequency k / (n dt)) inside the closed band, decided in bin units with a 1e-9 relative
    margin: a bin exactly on an edge (20 Hz = bin 39 of 195 samples at 10 ms) is in, however k / (n dt)
    happens to round."""
    span = n * dt_s
    return (k >= band_lo_hz * span * (1 - 1e-9)) & (k <= band_hi_hz * span * (1 + 1e-9))


def _band_weights(n: int, dt_s: float, band_lo_hz: float, band_hi_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided rfft weights (2 except DC and Nyquist, so Parseval holds) and the in-band mask."""
    k = np.arange(n // 2 + 1)
    weight = np.full(k.shape, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    return weight, _in_band(k, n, dt_s, band_lo_hz, band_hi_hz)


EXACT_FFT_MAX = 1 << 16  # longer series are zero-padded to a length with small prime factors


def fft_length(n: int) -> int:
    """``n`` up to EXACT_FFT_MAX; above it the smallest 7-smooth length >= n (at most ~2 % longer).

    A long series whose length has large prime factors takes seconds in pocketfft (4,517,116 =
    4 x 601 x 1,879: 1-2.6 s against 0.1-0.15 s at 4,500,000). Zero padding the de-meaned series keeps
    its energy and samples the same spectrum on a finer grid; the band edges move by under a bin.
    """
    if n <= EXACT_FFT_MAX:
        return n
    best = 1 << (n - 1).bit_length()
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                p2 = p3
                while p2 < n:
                    p2 <<= 1
                best = min(best, p2)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def power_swing(
    power_w: np.ndarray, dt_s: float, band_lo_hz: float = BAND_LO_HZ, band_hi_hz: float = BAND_HI_HZ
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Swing metrics of power series ``power_w[..., n_bins]`` (W, sampled every ``dt_s``).

    Returns ``(peak_to_trough_w, max_ramp_w_per_s, band_energy_fraction)``, each of the leading shape
    (floats for a 1-D series): max - min; largest |P[i] - P[i-1]| / dt_s; and the share of the spectral
    energy of the de-meaned series that lies in ``[band_lo_hz, band_hi_hz]`` (0 for a constant series).
    The utility constraint in modeling-notes §2.2 caps that share (e.g. at 20 %) for 0.1-20 Hz.
    """
    p = np.asarray(power_w, dtype=np.float64)
    lead = p.shape[:-1]
    n = p.shape[-1]
    p2 = np.ascontiguousarray(p.reshape(-1, n))
    ptt, ramp = _swing_stats(p2, float(dt_s))
    m = fft_length(n)
    spec = np.abs(np.fft.rfft(p2 - p2.mean(axis=1, keepdims=True), n=m, axis=1)) ** 2
    weight, band = _band_weights(m, dt_s, band_lo_hz, band_hi_hz)
    total = spec @ weight
    in_band = spec[:, band] @ weight[band]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(total > 0.0, in_band / total, 0.0)
    # A constant series leaves only rounding noise after de-meaning; call that 0 too.
    frac = np.where(ptt > 0.0, frac, 0.0)
    if not lead:
        return float(ptt[0]), float(ramp[0]), float(frac[0])
    return ptt.reshape(lead), ramp.reshape(lead), frac.reshape(lead)


def power_swing_ref(
    power_w: np.ndarray, dt_s: float, band_lo_hz: float = BAND_LO_HZ, band_hi_hz: float = BAND_HI_HZ
) -> tuple[float, float, float]:
    """Reference for one 1-D series: ptp, max |diff|/dt and an explicit O(n^2) DFT over all n frequencies."""
    p = np.asarray(power_w, dtype=np.float64)
    n = p.shape[0]
    x = p - p.mean()
    k = np.arange(n)
    spec = np.abs(np.exp(-2j * np.pi * np.outer(k, k) / n) @ x) ** 2
    band = _in_band(np.minimum(k, n - k), n, dt_s, band_lo_hz, band_hi_hz)  # bins k and n - k: same |f|
    total = spec.sum()
    frac = spec[band].sum() / total if np.ptp(p) > 0.0 and total > 0.0 else 0.0
    return float(np.ptp(p)), float(np.max(np.abs(np.diff(p)), initial=0.0) / dt_s), float(frac)


# --------------------------------------------------------------------------------------------------------
# GPU power smoothing (floor + ramp limits, as on GB200; modeling-notes §2.2)
#   P_s(t) = max(F, P_s(t - dt) + clamp(P_req(t) - P_s(t - dt), -r dt, +r dt))
#   wasted = sum (P_s - P_req)+ dt
# --------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def gpu_smoothing(
    power_req_w: np.ndarray, floor_w: np.ndarray, ramp_w_per_s: np.ndarray, dt_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed power ``[n_classes, n_bins]`` (W) and wasted energy ``[n_classes]`` (J).

    Formula in the section comment; the series starts settled, ``P_s(-dt) = P_req(0)``. ``floor_w`` and
    ``ramp_w_per_s`` are ``[n_classes]`` (ramp ``inf`` = no ramp limit). Wasted energy is what the GPU
    burns above its request (``sum (P_s - P_req)+ * dt_s``). When the up-ramp limit binds, P_s < P_req:
    the GPU gets less than it asked for, which the caller must turn into a slowdown.
    """
    n_classes, n_bins = power_req_w.shape
    out = np.empty((n_classes, n_bins))
    wasted = np.zeros(n_classes)
    for k in range(n_classes):
        if n_bins == 0:
            continue
        floor = floor_w[k]
        step = ramp_w_per_s[k] * dt_s
        req = power_req_w[k]
        prev = req[0]
        acc = 0.0
        for b in range(n_bins):
            delta = min(max(req[b] - prev, -step), step)
            cur = max(floor, prev + delta)
            out[k, b] = cur
            if cur > req[b]:
                acc += cur - req[b]
            prev = cur
        wasted[k] = acc * dt_s
    return out, wasted


def gpu_smoothing_ref(
    power_req_w: np.ndarray, floor_w: np.ndarray, ramp_w_per_s: np.ndarray, dt_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reference for :func:`gpu_smoothing` (loop over bins, vectorised over classes)."""
    out = np.empty_like(power_req_w, dtype=np.float64)
    prev = power_req_w[:, 0].astype(np.float64)
    for b in range(power_req_w.shape[1]):
        step = ramp_w_per_s * dt_s
        prev = np.maximum(floor_w, prev + np.clip(power_req_w[:, b] - prev, -step, step))
        out[:, b] = prev
    return out, np.sum(np.maximum(out - power_req_w, 0.0), axis=1) * dt_s


# --------------------------------------------------------------------------------------------------------
# Energy-storage buffer (rack/facility batteries or supercaps; modeling-notes §2.2)
# --------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def storage_buffer(
    load_w: np.ndarray,
    capacity_j: np.ndarray,
    max_power_w: np.ndarray,
    efficiency: np.ndarray,
    ramp_w_per_s: np.ndarray,
    tau_s: np.ndarray,
    soc0_j: np.ndarray,
    soc_target_j: np.ndarray,
    soc_recovery_s: np.ndarray,
    dt_s: float,
    grid0_w: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Grid draw and state of charge, both ``[n_units, n_bins]`` (W, J at the end of each bin).

    Per step, the grid aims at a low-pass of the load (first order, time constant ``tau_s``, exact for a
    load constant over the step; ``tau_s <= 0``: no filter) plus a state-of-charge restoring term
    ``(soc_target_j - soc) / soc_recovery_s`` (``soc_recovery_s <= 0``: off; without it losses slowly
    drain the store), moves from its previous value towards that target by at most
    ``ramp_w_per_s * dt_s`` (``inf``: no ramp limit) and never exports (grid >= 0). The battery covers
    ``load - grid`` within ``max_power_w`` and its energy: delivering P for dt takes ``P dt / efficiency``
    out of storage, absorbing P stores ``P dt * efficiency`` (``efficiency`` is one-way; round trip is
    its square), ``0 <= soc <= capacity_j``. Whatever the battery cannot cover, the grid takes, so the grid
    ramp limit holds only while the battery has headroom. The grid and its low-pass start settled at
    ``grid0_w`` (a job that has been running: its mean load; not the first sample, which may be a dip).
    All parameters are ``[n_units]``.
    """
    n_units, n_bins = load_w.shape
    grid = np.empty((n_units, n_bins))
    soc = np.empty((n_units, n_bins))
    for u in range(n_units):
        if n_bins == 0:
            continue
        eta = efficiency[u]
        e_max = capacity_j[u]
        p_max = max_power_w[u]
        step = ramp_w_per_s[u] * dt_s
        alpha = -np.expm1(-dt_s / tau_s[u]) if tau_s[u] > 0.0 else 1.0
        restore = 1.0 / soc_recovery_s[u] if soc_recovery_s[u] > 0.0 else 0.0
        e = soc0_j[u]
        g_prev = grid0_w[u]
        lp = grid0_w[u]
        for b in range(n_bins):
            load = load_w[u, b]
            lp += alpha * (load - lp)
            target = lp + (soc_target_j[u] - e) * restore
            g = max(g_prev + min(max(target - g_prev, -step), step), 0.0)
            p_batt = load - g  # > 0: discharge into the load; < 0: charge from the grid
            if p_batt > 0.0:
                p_batt = min(p_batt, p_max, e * eta / dt_s)
                e -= p_batt * dt_s / eta
            else:
                p_batt = max(p_batt, -p_max, -(e_max - e) / (eta * dt_s))
                e -= p_batt * dt_s * eta
            e = min(max(e, 0.0), e_max)
            g = load - p_batt
            grid[u, b] = g
            soc[u, b] = e
            g_prev = g
    return grid, soc


def storage_buffer_ref(
    load_w: np.ndarray,
    capacity_j: np.ndarray,
    max_power_w: np.ndarray,
    efficiency: np.ndarray,
    ramp_w_per_s: np.ndarray,
    tau_s: np.ndarray,
    soc0_j: np.ndarray,
    soc_target_j: np.ndarray,
    soc_recovery_s: np.ndarray,
    dt_s: float,
    grid0_w: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference for :func:`storage_buffer` (loop over bins, vectorised over units)."""
    n_units, n_bins = load_w.shape
    grid = np.empty((n_units, n_bins))
    soc = np.empty((n_units, n_bins))
    with np.errstate(divide="ignore"):
        alpha = np.where(tau_s > 0.0, -np.expm1(-dt_s / tau_s), 1.0)
        restore = np.where(soc_recovery_s > 0.0, 1.0 / soc_recovery_s, 0.0)
    step = ramp_w_per_s * dt_s
    e = soc0_j.astype(np.float64)
    g_prev = grid0_w.astype(np.float64)
    lp = g_prev.copy()
    for b in range(n_bins):
        load = load_w[:, b]
        lp = lp + alpha * (load - lp)
        target = lp + (soc_target_j - e) * restore
        g = np.maximum(g_prev + np.clip(target - g_prev, -step, step), 0.0)
        want = load - g
        dis = np.minimum(np.minimum(want, max_power_w), e * efficiency / dt_s)
        chg = np.maximum(np.maximum(want, -max_power_w), -(capacity_j - e) / (efficiency * dt_s))
        p_batt = np.where(want > 0.0, dis, chg)
        e = e - np.where(p_batt > 0.0, p_batt * dt_s / efficiency, p_batt * dt_s * efficiency)
        e = np.clip(e, 0.0, capacity_j)
        g_prev = load - p_batt
        grid[:, b] = g_prev
        soc[:, b] = e
    return grid, soc
