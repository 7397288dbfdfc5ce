"""Thermal and facility kernels: GPU W -> die / cold-plate temperature -> clock; IT heat -> cooling W, PUE.

Pure functions over numpy arrays, ``@njit(cache=True)``, each with a plain-numpy ``*_ref``. Conventions
as in :mod:`simcore.kernels.power`: SI units (W, s, degC, K/W, J/K, kg/s), time series float64
``[n_classes, n_bins]``, per-class parameters float64 ``[n_classes]`` (``power.per_class`` broadcasts).
"""

from __future__ import annotations

import numba
import numpy as np

# Coolant properties. Water at ~35 degC; 25 % propylene glycol (PG25) as quoted in modeling-notes §3.2.
WATER_CP_J_PER_KG_K = 4178.0
WATER_DENSITY_KG_PER_M3 = 994.0
PG25_CP_J_PER_KG_K = 3900.0
PG25_DENSITY_KG_PER_M3 = 1020.0

# Chiller: COP = eta * T_cold[K] / lift[K]. eta = 0.5 gives COP 6.1 for 7 degC chilled water against a
# 30 degC heat-rejection temperature (lift 23 K), inside the 6-7 quoted for water-cooled centrifugal
# chillers (modeling-notes §3.3). The clip keeps tiny lifts from claiming a COP no real machine reaches
# and very large lifts from dropping below what an air-cooled chiller still manages.
CHILLER_ETA_CARNOT = 0.5
CHILLER_COP_MIN = 2.0
CHILLER_COP_MAX = 12.0

ZERO_C_IN_K = 273.15


# --------------------------------------------------------------------------------------------------------
# Two-node RC model, die/junction -> cold plate (or heatsink) -> fluid (modeling-notes §3.1)
#   C_j  dT_j/dt  = P - (T_j - T_cp)/R_jc
#   C_cp dT_cp/dt = (T_j - T_cp)/R_jc - (T_cp - T_f)/R_cf
# With P and T_f constant over a step, x = [T_j, T_cp] obeys dx/dt = M (x - x_ss), so exactly
#   x(t + dt) = x_ss + expm(M dt) (x(t) - x_ss),  x_ss = [T_f + P (R_jc + R_cf), T_f + P R_cf].
# --------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _rc_matrix(r_jc: float, r_cf: float, c_j: float, c_cp: float) -> tuple[float, float, float, float]:
    """Entries of M = [[-a, a], [c, -(c + d)]]."""
    a = 1.0 / (r_jc * c_j)
    c = 1.0 / (r_jc * c_cp)
    d = 1.0 / (r_cf * c_cp)
    return -a, a, c, -(c + d)


@numba.njit(cache=True)
def _rc_eigen(r_jc: float, r_cf: float, c_j: float, c_cp: float) -> tuple[float, float, float, float]:
    """(m, s, lam_slow, lam_fast): eigenvalues m +- s of M, both real and negative.

    s^2 = ((a - c - d)/2)^2 + a c > 0, so they are distinct. lam_slow = det/lam_fast (det = a d) avoids the
    cancellation of m + s when the two time constants are far apart.
    """
    m00, m01, m10, m11 = _rc_matrix(r_jc, r_cf, c_j, c_cp)
    m = 0.5 * (m00 + m11)
    h = 0.5 * (m00 - m11)
    s = np.sqrt(h * h + m01 * m10)
    lam_fast = m - s
    lam_slow = (m00 * m11 - m01 * m10) / lam_fast
    return m, s, lam_slow, lam_fast


@numba.njit(cache=True)
def _rc_step_matrix(
    r_jc: float, r_cf: float, c_j: float, c_cp: float, dt_s: float
) -> tuple[float, float, float, float]:
    """expm(M dt) in closed form: phi1 I + phi2 (M - m I) with phi1 = (e^{l1 t} + e^{l2 t})/2 and
    phi2 = (e^{l1 t} - e^{l2 t})/(2 s) = -e^{l1 t} expm1(-2 s t)/(2 s) (no overflow, no cancellation)."""
    m00, m01, m10, m11 = _rc_matrix(r_jc, r_cf, c_j, c_cp)
    m, s, lam_slow, lam_fast = _rc_eigen(r_jc, r_cf, c_j, c_cp)
    e1 = np.exp(lam_slow * dt_s)
    e2 = np.exp(lam_fast * dt_s)
    phi1 = 0.5 * (e1 + e2)
    phi2 = -e1 * np.expm1(-2.0 * s * dt_s) / (2.0 * s) if s > 0.0 else dt_s * np.exp(m * dt_s)
    return phi1 + phi2 * (m00 - m), phi2 * m01, phi2 * m10, phi1 + phi2 * (m11 - m)


@numba.njit(cache=True)
def _rc_update(
    p: float,
    tf: float,
    tj: float,
    tcp: float,
    e00: float,
    e01: float,
    e10: float,
    e11: float,
    rjc: float,
    rcf: float,
) -> tuple[float, float]:
    """One exact step: x <- x_ss + E (x - x_ss) with x_ss = [T_f + P (R_jc + R_cf), T_f + P R_cf]."""
    ss_cp = tf + p * rcf
    ss_j = ss_cp + p * rjc
    dj = tj - ss_j
    dc = tcp - ss_cp
    return ss_j + e00 * dj + e01 * dc, ss_cp + e10 * dj + e11 * dc


@numba.njit(cache=True)
def rc_time_constants(
    r_jc: np.ndarray, r_cf: np.ndarray, c_j: np.ndarray, c_cp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(tau_fast_s, tau_slow_s) ``[n_classes]``: -1/eigenvalue of the two-node RC system."""
    n = r_jc.shape[0]
    tau_fast = np.empty(n)
    tau_slow = np.empty(n)
    for k in range(n):
        _, _, lam_slow, lam_fast = _rc_eigen(r_jc[k], r_cf[k], c_j[k], c_cp[k])
        tau_fast[k] = -1.0 / lam_fast
        tau_slow[k] = -1.0 / lam_slow
    return tau_fast, tau_slow


@numba.njit(cache=True)
def rc_thermal_into(
    power_w: np.ndarray,
    coolant_c: np.ndarray,
    r_jc: np.ndarray,
    r_cf: np.ndarray,
    c_j: np.ndarray,
    c_cp: np.ndarray,
    tj0_c: np.ndarray,
    tcp0_c: np.ndarray,
    dt_s: float,
    tj_out: np.ndarray,
    tcp_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel of :func:`rc_thermal`, writing into caller buffers ``[n_classes, n_bins]`` (returned).

    Reuse the buffers across control ticks (they must not alias the inputs); the last column is the next
    tick's ``tj0_c, tcp0_c``.
    """
    n_classes, n_bins = power_w.shape
    if coolant_c.shape != power_w.shape or tj_out.shape != power_w.shape or tcp_out.shape != power_w.shape:
        raise ValueError("rc_thermal: coolant_c and the outputs must have the shape of power_w")
    lengths = (r_jc.shape[0], r_cf.shape[0], c_j.shape[0], c_cp.shape[0], tj0_c.shape[0], tcp0_c.shape[0])
    if min(lengths) != n_classes or max(lengths) != n_classes:
        raise ValueError("rc_thermal: per-class parameters must have length n_classes")
    # Two classes advance in lock-step: each recurrence is latency-bound, two independent ones fill the
    # pipeline (~2x). With an odd count the last class is paired with itself (same values written twice).
    for k in range(0, n_classes, 2):
        q = min(k + 1, n_classes - 1)
        a00, a01, a10, a11 = _rc_step_matrix(r_jc[k], r_cf[k], c_j[k], c_cp[k], dt_s)
        b00, b01, b10, b11 = _rc_step_matrix(r_jc[q], r_cf[q], c_j[q], c_cp[q], dt_s)
        tja, tca, tjb, tcb = tj0_c[k], tcp0_c[k], tj0_c[q], tcp0_c[q]
        for b in range(n_bins):
            tja, tca = _rc_update(
                power_w[k, b], coolant_c[k, b], tja, tca, a00, a01, a10, a11, r_jc[k], r_cf[k]
            )
            tjb, tcb = _rc_update(
                power_w[q, b], coolant_c[q, b], tjb, tcb, b00, b01, b10, b11, r_jc[q], r_cf[q]
            )
            tj_out[k, b] = tja
            tcp_out[k, b] = tca
            tj_out[q, b] = tjb
            tcp_out[q, b] = tcb
    return tj_out, tcp_out


def rc_thermal(
    power_w: np.ndarray,
    coolant_c: np.ndarray,
    r_jc: np.ndarray,
    r_cf: np.ndarray,
    c_j: np.ndarray,
    c_cp: np.ndarray,
    tj0_c: np.ndarray,
    tcp0_c: np.ndarray,
    dt_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Junction and cold-plate temperatures ``(tj_c, tcp_c)``, each ``[n_classes, n_bins]`` in degC.

    Exact for power and fluid temperature constant within each bin (matrix exponential of the 2x2 system,
    see the section comment), hence unconditionally stable at any ``dt_s``. Column b is the state at the
    *end* of bin b, starting from ``tj0_c, tcp0_c`` at the start of bin 0.
    ``power_w`` (heat into the die, W) and ``coolant_c`` (fluid or inlet-air temperature the plate/heatsink
    sees, degC) are ``[n_classes, n_bins]``; ``r_jc`` (die -> plate, K/W), ``r_cf`` (plate -> fluid, K/W),
    ``c_j``, ``c_cp`` (J/K), ``tj0_c``, ``tcp0_c`` are ``[n_classes]``. Outputs are allocated by numpy
    (faster first touch than numba for large arrays); the work is :func:`rc_thermal_into`.
    """
    shape = np.shape(power_w)
    return rc_thermal_into(
        power_w,
        coolant_c,
        r_jc,
        r_cf,
        c_j,
        c_cp,
        tj0_c,
        tcp0_c,
        float(dt_s),
        np.empty(shape),
        np.empty(shape),
    )


def rc_matrix(r_jc: np.ndarray, r_cf: np.ndarray, c_j: np.ndarray, c_cp: np.ndarray) -> np.ndarray:
    """``[n_classes, 2, 2]`` system matrix M of d/dt (T_j, T_cp) = M (T_j, T_cp) + inputs: what the exact
    update exponentiates, and the free response of a changed start (power_model.settle_thermal_start)."""
    m = np.zeros((np.shape(r_jc)[0], 2, 2))
    m[:, 0, 0] = -1.0 / (r_jc * c_j)
    m[:, 0, 1] = 1.0 / (r_jc * c_j)
    m[:, 1, 0] = 1.0 / (r_jc * c_cp)
    m[:, 1, 1] = -(1.0 / (r_jc * c_cp) + 1.0 / (r_cf * c_cp))
    return m


def rc_thermal_ref(
    power_w: np.ndarray,
    coolant_c: np.ndarray,
    r_jc: np.ndarray,
    r_cf: np.ndarray,
    c_j: np.ndarray,
    c_cp: np.ndarray,
    tj0_c: np.ndarray,
    tcp0_c: np.ndarray,
    dt_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: expm(M dt) by eigendecomposition (numpy.linalg.eig), then the same exact update."""
    n_classes, n_bins = power_w.shape
    lam, vec = np.linalg.eig(rc_matrix(r_jc, r_cf, c_j, c_cp))
    step = np.real(vec @ (np.exp(lam * dt_s)[:, :, None] * np.linalg.inv(vec)))
    x = np.stack([tj0_c, tcp0_c], axis=1).astype(np.float64)
    tj = np.empty((n_classes, n_bins))
    tcp = np.empty((n_classes, n_bins))
    for b in range(n_bins):
        p = power_w[:, b]
        ss = np.stack([coolant_c[:, b] + p * (r_jc + r_cf), coolant_c[:, b] + p * r_cf], axis=1)
        x = ss + np.einsum("kij,kj->ki", step, x - ss)
        tj[:, b] = x[:, 0]
        tcp[:, b] = x[:, 1]
    return tj, tcp


@numba.njit(cache=True)
def thermal_clock_factor(
    tj_c: np.ndarray, slowdown_c: np.ndarray, slope_per_k: np.ndarray, min_factor: np.ndarray
) -> np.ndarray:
    """Clock factor ``[n_classes, n_bins]`` from junction temperature (modeling-notes §3.2, NVML SLOWDOWN):
    1 below ``slowdown_c``, ``1 - slope_per_k * (T_j - slowdown_c)`` above, never below ``min_factor``.
    ``slowdown_c, slope_per_k, min_factor [n_classes]``."""
    n_classes, n_bins = tj_c.shape
    out = np.empty((n_classes, n_bins))
    for k in range(n_classes):
        t_s = slowdown_c[k]
        kk = slope_per_k[k]
        fmin = min_factor[k]
        for b in range(n_bins):
            over = tj_c[k, b] - t_s
            out[k, b] = 1.0 if over <= 0.0 else max(1.0 - kk * over, fmin)
    return out


def thermal_clock_factor_ref(
    tj_c: np.ndarray, slowdown_c: np.ndarray, slope_per_k: np.ndarray, min_factor: np.ndarray
) -> np.ndarray:
    """Reference for :func:`thermal_clock_factor`."""
    over = np.maximum(tj_c - slowdown_c[:, None], 0.0)
    return np.clip(1.0 - slope_per_k[:, None] * over, min_factor[:, None], 1.0)


# --------------------------------------------------------------------------------------------------------
# Coolant loop helpers (modeling-notes §3.1-3.2)
# --------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def coolant_outlet_c(
    inlet_c: np.ndarray, heat_w: np.ndarray, flow_kg_s: np.ndarray, cp_j_per_kg_k: float
) -> np.ndarray:
    """Outlet temperature ``T_out = T_in + P / (m_dot c_p)`` (energy balance). Elementwise. The mean fluid
    temperature along a cold plate, a good ``coolant_c`` for :func:`rc_thermal`, is the average of in/out."""
    return inlet_c + heat_w / (flow_kg_s * cp_j_per_kg_k)


def coolant_outlet_c_ref(
    inlet_c: np.ndarray, heat_w: np.ndarray, flow_kg_s: np.ndarray, cp_j_per_kg_k: float
) -> np.ndarray:
    """Reference for :func:`coolant_outlet_c`."""
    return inlet_c + heat_w / (flow_kg_s * cp_j_per_kg_k)


@numba.njit(cache=True)
def flow_from_lpm_per_kw(
    lpm_per_kw: np.ndarray, design_power_w: np.ndarray, density_kg_per_m3: float
) -> np.ndarray:
    """Mass flow (kg/s) from a flow-per-kW rating (OCP: 1.5 L/min/kW) at the design power.

    ``m_dot = lpm_per_kw * (P / 1000 W) * 1e-3 m^3/L / 60 s/min * rho``. Elementwise.
    """
    return lpm_per_kw * (design_power_w * 1e-3) * (1e-3 / 60.0) * density_kg_per_m3


def flow_from_lpm_per_kw_ref(
    lpm_per_kw: np.ndarray, design_power_w: np.ndarray, density_kg_per_m3: float
) -> np.ndarray:
    """Reference for :func:`flow_from_lpm_per_kw`."""
    litres_per_s = lpm_per_kw * design_power_w / 1000.0 / 60.0
    return litres_per_s / 1000.0 * density_kg_per_m3


# --------------------------------------------------------------------------------------------------------
# Facility: chiller, dry cooler / economizer, pumps and fans, PUE (modeling-notes §3.3)
# --------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def chiller_cop(
    supply_c: np.ndarray, lift_k: np.ndarray, eta_carnot: float, cop_min: float, cop_max: float
) -> np.ndarray:
    """Chiller COP = ``eta_carnot * T_supply[K] / lift`` (a fixed fraction of Carnot), clipped to
    ``[cop_min, cop_max]``; ``cop_max`` for lift <= 0. ``lift_k`` = heat-rejection temperature minus chilled
    supply temperature. Defaults: ``CHILLER_ETA_CARNOT``, ``CHILLER_COP_MIN/MAX``. 1-D arrays."""
    n = supply_c.shape[0]
    out = np.empty(n)
    for i in range(n):
        lift = lift_k[i]
        if lift <= 0.0:
            out[i] = cop_max
        else:
            out[i] = min(max(eta_carnot * (supply_c[i] + ZERO_C_IN_K) / lift, cop_min), cop_max)
    return out


def chiller_cop_ref(
    supply_c: np.ndarray, lift_k: np.ndarray, eta_carnot: float, cop_min: float, cop_max: float
) -> np.ndarray:
    """Reference for :func:`chiller_cop`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cop = eta_carnot * (supply_c + ZERO_C_IN_K) / lift_k
    return np.where(lift_k > 0.0, np.clip(cop, cop_min, cop_max), cop_max)


@numba.njit(cache=True)
def affinity_power_w(rated_power_w: float, flow_fraction: np.ndarray) -> np.ndarray:
    """Pump or fan power by the affinity laws: ``P = P_rated * (Q / Q_rated)^3`` (modeling-notes §3.3)."""
    return rated_power_w * flow_fraction * flow_fraction * flow_fraction


def affinity_power_w_ref(rated_power_w: float, flow_fraction: np.ndarray) -> np.ndarray:
    """Reference for :func:`affinity_power_w`."""
    return rated_power_w * flow_fraction**3


@numba.njit(cache=True)
def facility_power(
    it_w: np.ndarray,
    coolant_supply_c: np.ndarray,
    outside_c: np.ndarray,
    rated_heat_w: float,
    pump_rated_w: float,
    fan_rated_w: float,
    approach_k: float,
    loop_delta_t_k: float,
    eta_carnot: float,
    cop_min: float,
    cop_max: float,
    other_overhead_fraction: float,
    other_fixed_w: float,
    chiller_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Cooling power (W) and PUE over time, 1-D ``[n_bins]`` inputs; PUE is computed, not assumed.

    All IT power ``it_w`` becomes heat in a coolant loop supplied at ``coolant_supply_c`` and returning
    ``loop_delta_t_k`` warmer. Heat goes to outside air (``outside_c``: dry bulb for a dry cooler, wet bulb
    for a tower) through a heat exchanger with ``approach_k``; sink = outside + approach.
    - Economizer (integrated, waterside): the dry cooler cools the return water down to the sink; the
      chiller handles the rest, fraction ``clip((sink - supply) / loop_delta_t, 0, 1)`` of the heat. So no
      chiller at all when ``sink <= supply`` (warm-water cooling), all chiller when ``sink >= return``.
      ``chiller_only`` (no economizer): the chiller carries all the heat whatever the weather.
    - Chiller: ``P_ch = Q_ch / COP`` with ``COP = chiller_cop(supply, sink - supply)``.
    - CDU pumps: flow follows heat at constant loop dT, so ``P = pump_rated_w (Q / rated_heat_w)^3``.
    - Dry-cooler / tower fans: the air flow a coil needs grows with the heat it rejects (``Q + P_ch``) and
      falls with the temperature difference driving it, mean water minus outside air:
      ``D = max(supply - outside, approach) + loop_delta_t / 2`` while the economizer holds the supply on
      its own, ``D0 = approach + loop_delta_t / 2`` once the chiller trims (its condenser side runs at the
      design approach) or with ``chiller_only``. ``fan_rated_w`` is at rated heat and ``D0`` (the hottest
      day the dry cooler alone holds the supply), so ``P = fan_rated_w ((Q + P_ch) / rated_heat_w * D0 /
      D)^3``: on a cold day, or with warm water, the fans turn slowly.
    - Other overhead (UPS, transformers, lighting): ``other_overhead_fraction * IT + other_fixed_w``.
    ``PUE = (IT + cooling + other) / IT`` (NaN where IT <= 0). Returns ``(cooling_w, pue)``.
    """
    n = it_w.shape[0]
    cooling = np.empty(n)
    pue = np.empty(n)
    inv_rated = 1.0 / rated_heat_w
    half_loop = 0.5 * loop_delta_t_k
    design_drive = approach_k + half_loop
    for i in range(n):
        q = it_w[i]
        x = q * inv_rated
        pump = pump_rated_w * x * x * x
        lift = outside_c[i] + approach_k - coolant_supply_c[i]
        frac = 1.0 if chiller_only else min(max(lift / loop_delta_t_k, 0.0), 1.0)
        chiller = 0.0
        if frac > 0.0:
            cop = cop_max
            if lift > 0.0:
                cop = min(max(eta_carnot * (coolant_supply_c[i] + ZERO_C_IN_K) / lift, cop_min), cop_max)
            chiller = frac * q / cop
        drive = design_drive
        if frac == 0.0:
            drive = max(coolant_supply_c[i] - outside_c[i], approach_k) + half_loop
        y = (q + chiller) * inv_rated * design_drive / drive
        fan = fan_rated_w * y * y * y
        cooling[i] = pump + chiller + fan
        other = other_overhead_fraction * q + other_fixed_w
        pue[i] = (q + cooling[i] + other) / q if q > 0.0 else np.nan
    return cooling, pue


def facility_power_ref(
    it_w: np.ndarray,
    coolant_supply_c: np.ndarray,
    outside_c: np.ndarray,
    rated_heat_w: float,
    pump_rated_w: float,
    fan_rated_w: float,
    approach_k: float,
    loop_delta_t_k: float,
    eta_carnot: float,
    cop_min: float,
    cop_max: float,
    other_overhead_fraction: float,
    other_fixed_w: float,
    chiller_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference for :func:`facility_power`."""
    lift = outside_c + approach_k - coolant_supply_c
    frac = np.ones_like(lift) if chiller_only else np.clip(lift / loop_delta_t_k, 0.0, 1.0)
    cop = chiller_cop_ref(coolant_supply_c, lift, eta_carnot, cop_min, cop_max)
    chiller = frac * it_w / cop
    pump = affinity_power_w_ref(pump_rated_w, it_w / rated_heat_w)
    design_drive = approach_k + 0.5 * loop_delta_t_k
    free_drive = np.maximum(coolant_supply_c - outside_c, approach_k) + 0.5 * loop_delta_t_k
    drive = np.where(frac > 0.0, design_drive, free_drive)
    fan = affinity_power_w_ref(fan_rated_w, (it_w + chiller) / rated_heat_w * design_drive / drive)
    cooling = pump + chiller + fan
    other = other_overhead_fraction * it_w + other_fixed_w
    with np.errstate(divide="ignore", invalid="ignore"):
        pue = np.where(it_w > 0.0, (it_w + cooling + other) / it_w, np.nan)
    return cooling, pue
