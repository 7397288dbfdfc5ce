"""Tests for simcore.kernels.thermal: exact two-node RC update, throttling, coolant helpers, facility/PUE."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.kernels import thermal as th
from simcore.kernels.power import per_class

SETTINGS = settings(max_examples=40, deadline=None)

# A GB200-ish liquid-cooled GPU: R_j->coolant 0.035 K/W (modeling-notes §3.1 budget), die ~0.5 s, plate ~20 s.
R_JC, R_CF, C_J, C_CP = 0.02, 0.015, 30.0, 1500.0


def _params(n: int, r_jc=R_JC, r_cf=R_CF, c_j=C_J, c_cp=C_CP):
    return tuple(per_class(x, n) for x in (r_jc, r_cf, c_j, c_cp))


def _run(power, coolant, params, t0_j, t0_cp, dt):
    n = power.shape[0]
    return th.rc_thermal(power, coolant, *params, np.full(n, float(t0_j)), np.full(n, float(t0_cp)), dt)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_classes=st.integers(1, 4),
    n_bins=st.integers(1, 40),
    log_dt=st.floats(-3.0, 3.0),
)
def test_rc_thermal_matches_eig_reference(seed, n_classes, n_bins, log_dt):
    # Closed-form expm vs numpy.linalg.eig: both are accurate to ~1e-13 per step and the update is a
    # contraction, so temperatures (~30-300 degC) agree to 1e-9 K.
    rng = np.random.default_rng(seed)
    r_jc = 10 ** rng.uniform(-3, -0.5, n_classes)
    r_cf = 10 ** rng.uniform(-3, -0.5, n_classes)
    c_j = 10 ** rng.uniform(0, 2.5, n_classes)
    c_cp = 10 ** rng.uniform(1.5, 4, n_classes)
    power = rng.uniform(0.0, 1400.0, (n_classes, n_bins))
    coolant = rng.uniform(15.0, 45.0, (n_classes, n_bins))
    tj0 = rng.uniform(20.0, 90.0, n_classes)
    tcp0 = rng.uniform(20.0, 60.0, n_classes)
    args = (power, coolant, r_jc, r_cf, c_j, c_cp, tj0, tcp0, 10**log_dt)
    for a, b in zip(th.rc_thermal(*args), th.rc_thermal_ref(*args), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_rc_thermal_matches_reference_large():
    rng = np.random.default_rng(11)
    n, nb = 16, 3000
    power = rng.uniform(100.0, 1200.0, (n, nb))
    coolant = rng.uniform(25.0, 45.0, (n, nb))
    params = _params(n)
    tj0 = np.full(n, 30.0)
    args = (power, coolant, *params, tj0, tj0, 0.05)
    for a, b in zip(th.rc_thermal(*args), th.rc_thermal_ref(*args), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)  # same reason as the hypothesis test


def test_rc_thermal_ticks_chain_and_into_buffers():
    # Running two control ticks back to back (last column -> next initial state) into reused buffers must
    # give exactly the same numbers as one call over both ticks: same operations in the same order.
    rng = np.random.default_rng(12)
    n, nb = 5, 400
    power = rng.uniform(100.0, 1200.0, (n, nb))
    coolant = rng.uniform(25.0, 45.0, (n, nb))
    params = _params(n)
    t0 = np.full(n, 35.0)
    whole = th.rc_thermal(power, coolant, *params, t0, t0, 0.01)
    bj, bc = np.empty((n, nb // 2)), np.empty((n, nb // 2))
    first = th.rc_thermal_into(
        power[:, : nb // 2].copy(), coolant[:, : nb // 2].copy(), *params, t0, t0, 0.01, bj, bc
    )
    np.testing.assert_array_equal(first[0], whole[0][:, : nb // 2])
    tj_end, tcp_end = bj[:, -1].copy(), bc[:, -1].copy()
    th.rc_thermal_into(
        power[:, nb // 2 :].copy(), coolant[:, nb // 2 :].copy(), *params, tj_end, tcp_end, 0.01, bj, bc
    )
    np.testing.assert_array_equal(bj, whole[0][:, nb // 2 :])
    np.testing.assert_array_equal(bc, whole[1][:, nb // 2 :])


def test_rc_thermal_solves_the_ode():
    # Independent check of the model equations: classical RK4 at h = 1 ms (error ~h^4/tau^4 ~ 1e-12)
    # against the exact update at dt = 0.5 s with the same piecewise-constant power. 1e-8 K.
    p_steps = np.array([1000.0, 200.0, 1200.0, 0.0, 700.0])
    tf = 40.0
    dt = 0.5

    def rhs(x, p):
        tj, tcp = x
        q = (tj - tcp) / R_JC
        return np.array([(p - q) / C_J, (q - (tcp - tf) / R_CF) / C_CP])

    x = np.array([35.0, 38.0])
    expected = []
    h = 1e-3
    for p in p_steps:
        for _ in range(round(dt / h)):
            k1 = rhs(x, p)
            k2 = rhs(x + 0.5 * h * k1, p)
            k3 = rhs(x + 0.5 * h * k2, p)
            k4 = rhs(x + h * k3, p)
            x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        expected.append(x.copy())
    tj, tcp = _run(p_steps[None, :], np.full((1, 5), tf), _params(1), 35.0, 38.0, dt)
    np.testing.assert_allclose(np.stack([tj[0], tcp[0]], axis=1), np.array(expected), rtol=0, atol=1e-8)


def test_rc_thermal_steady_state_closed_form():
    # Long constant power: T_j = T_f + P (R_jc + R_cf), T_cp = T_f + P R_cf; e^{-t/tau} underflows, so
    # only rounding of the steady-state sums remains: 1e-9 relative.
    power, tf = 1100.0, 42.0
    _, tau_slow = th.rc_time_constants(*_params(1))
    for dt, nb in ((1000.0 * tau_slow[0], 1), (tau_slow[0] / 10.0, 5000)):
        tj, tcp = _run(np.full((1, nb), power), np.full((1, nb), tf), _params(1), 25.0, 25.0, dt)
        assert tj[0, -1] == pytest.approx(tf + power * (R_JC + R_CF), rel=1e-9)
        assert tcp[0, -1] == pytest.approx(tf + power * R_CF, rel=1e-9)


def test_rc_thermal_one_long_step_equals_many_small():
    # expm(M T) = expm(M T/n)^n: exact update -> same answer up to accumulated rounding (1000 steps, 1e-10).
    _, tau_slow = th.rc_time_constants(*_params(1))
    total = 10.0 * tau_slow[0]
    n = 1000
    one = _run(np.full((1, 1), 900.0), np.full((1, 1), 35.0), _params(1), 60.0, 50.0, total)
    many = _run(np.full((1, n), 900.0), np.full((1, n), 35.0), _params(1), 60.0, 50.0, total / n)
    assert one[0][0, 0] == pytest.approx(many[0][0, -1], rel=1e-10)
    assert one[1][0, 0] == pytest.approx(many[1][0, -1], rel=1e-10)


def test_rc_thermal_no_overshoot_for_huge_steps():
    # A step in power from equilibrium on a passive RC network rises monotonically to steady state
    # (expm of a Metzler matrix is non-negative). With dt >> RC the first step must land on it, finite.
    params = _params(2, c_j=np.array([30.0, 1e-3]), c_cp=np.array([1500.0, 1e-2]))
    for dt in (1e-3, 1.0, 1e3, 1e9):
        tj, tcp = _run(np.full((2, 50), 1000.0), np.full((2, 50), 30.0), params, 30.0, 30.0, dt)
        ss_j = 30.0 + 1000.0 * (R_JC + R_CF)
        assert np.all(np.isfinite(tj)) and np.all(np.isfinite(tcp))
        assert np.all(tj <= ss_j * (1 + 1e-12))
        assert np.all(np.diff(tj, axis=1) >= -1e-9)
        assert np.all(np.diff(tcp, axis=1) >= -1e-9)
        if dt >= 1e3:
            np.testing.assert_allclose(tj, ss_j, rtol=1e-12)


def test_rc_time_constants_are_eigenvalues():
    tau_fast, tau_slow = th.rc_time_constants(*_params(1))
    m = np.array([[-1 / (R_JC * C_J), 1 / (R_JC * C_J)], [1 / (R_JC * C_CP), -(1 / R_JC + 1 / R_CF) / C_CP]])
    lam = np.sort(np.linalg.eigvals(m).real)
    np.testing.assert_allclose([-1 / tau_fast[0], -1 / tau_slow[0]], lam, rtol=1e-12)


def test_thermal_clock_factor():
    tj = np.array([[80.0, 90.0, 95.0, 110.0, 200.0]])
    args = (np.array([90.0]), np.array([0.02]), np.array([0.5]))
    got = th.thermal_clock_factor(tj, *args)
    np.testing.assert_allclose(got, [[1.0, 1.0, 0.9, 0.6, 0.5]], rtol=1e-14)
    rng = np.random.default_rng(0)
    tj = rng.uniform(60.0, 130.0, (3, 100))
    args = (np.array([85.0, 90.0, 95.0]), np.array([0.01, 0.02, 0.05]), np.array([0.3, 0.5, 0.7]))
    np.testing.assert_allclose(
        th.thermal_clock_factor(tj, *args), th.thermal_clock_factor_ref(tj, *args), rtol=1e-15
    )


def test_coolant_helpers_match_flow_per_kw_numbers():
    # modeling-notes §3.2: 1.5 L/min per kW of water -> ~9.6 K rise; PG25 at 1.5 -> ~10.1 K.
    flow = th.flow_from_lpm_per_kw(np.array([1.5]), np.array([1000.0]), th.WATER_DENSITY_KG_PER_M3)
    assert flow[0] == pytest.approx(1.5 / 60.0 * th.WATER_DENSITY_KG_PER_M3 / 1000.0, rel=1e-14)
    out = th.coolant_outlet_c(np.array([45.0]), np.array([1000.0]), flow, th.WATER_CP_J_PER_KG_K)
    assert out[0] - 45.0 == pytest.approx(9.6, abs=0.05)
    flow_pg = th.flow_from_lpm_per_kw(np.array([1.5]), np.array([1000.0]), th.PG25_DENSITY_KG_PER_M3)
    out_pg = th.coolant_outlet_c(np.array([45.0]), np.array([1000.0]), flow_pg, th.PG25_CP_J_PER_KG_K)
    assert out_pg[0] - 45.0 == pytest.approx(10.1, abs=0.05)
    rng = np.random.default_rng(1)
    lpm, pw_ = rng.uniform(1.0, 2.0, 50), rng.uniform(1e3, 2e5, 50)
    np.testing.assert_allclose(
        th.flow_from_lpm_per_kw(lpm, pw_, 994.0), th.flow_from_lpm_per_kw_ref(lpm, pw_, 994.0), rtol=1e-14
    )
    inlet, heat, f = rng.uniform(20, 45, 50), rng.uniform(0, 1e5, 50), rng.uniform(0.1, 5, 50)
    np.testing.assert_allclose(
        th.coolant_outlet_c(inlet, heat, f, 4178.0),
        th.coolant_outlet_c_ref(inlet, heat, f, 4178.0),
        rtol=1e-15,
    )


def test_chiller_cop():
    # 7 degC chilled water against 30 degC heat rejection: COP in the 6-7 band for water-cooled centrifugal.
    cop = th.chiller_cop(
        np.array([7.0]), np.array([23.0]), th.CHILLER_ETA_CARNOT, th.CHILLER_COP_MIN, th.CHILLER_COP_MAX
    )
    assert 6.0 <= cop[0] <= 7.0
    assert cop[0] == pytest.approx(0.5 * 280.15 / 23.0, rel=1e-14)
    sup = np.array([18.0, 18.0, 18.0, 18.0])
    lift = np.array([-1.0, 0.0, 1.0, 200.0])
    got = th.chiller_cop(sup, lift, 0.5, 2.0, 12.0)
    np.testing.assert_array_equal(got, [12.0, 12.0, 12.0, 2.0])
    rng = np.random.default_rng(2)
    sup, lift = rng.uniform(5, 30, 100), rng.uniform(-5, 60, 100)
    np.testing.assert_allclose(
        th.chiller_cop(sup, lift, 0.5, 2.0, 12.0), th.chiller_cop_ref(sup, lift, 0.5, 2.0, 12.0), rtol=1e-14
    )


FAC = dict(
    rated_heat_w=1e6,
    pump_rated_w=15e3,
    fan_rated_w=20e3,
    approach_k=5.0,
    loop_delta_t_k=10.0,
    eta_carnot=0.5,
    cop_min=2.0,
    cop_max=12.0,
    other_overhead_fraction=0.03,
    other_fixed_w=1e4,
)


def _fac(it, sup, out):
    return th.facility_power(np.array(it), np.array(sup), np.array(out), *FAC.values())


def test_facility_power_free_cooling_and_chiller_by_hand():
    # Warm water (35 degC) on a 20 degC day: sink 25 <= supply -> pumps and fans only. The coil's mean water
    # is 35 + 5 = 40 degC, 20 K above the air where the design day leaves approach + 5 = 10 K: half the air
    # flow per watt, so at half load a quarter of the rated flow.
    cooling, pue = _fac([5e5], [35.0], [20.0])
    pump, fan = 15e3 * 0.5**3, 20e3 * (0.5 * 10.0 / 20.0) ** 3
    assert cooling[0] == pytest.approx(pump + fan, rel=1e-14)
    assert pue[0] == pytest.approx((5e5 + pump + fan + 0.03 * 5e5 + 1e4) / 5e5, rel=1e-14)
    # Chilled 18 degC on a 30 degC day: sink 35, lift 17 >= loop dT -> all heat through the chiller.
    cooling, pue = _fac([1e6], [18.0], [30.0])
    cop = 0.5 * (18.0 + 273.15) / 17.0
    chiller = 1e6 / cop
    expected = 15e3 + chiller + 20e3 * ((1e6 + chiller) / 1e6) ** 3
    assert cooling[0] == pytest.approx(expected, rel=1e-14)
    assert pue[0] == pytest.approx((1e6 + expected + 0.03e6 + 1e4) / 1e6, rel=1e-14)
    # Partial economizer: sink 3 K above supply with a 10 K loop -> chiller carries 30 % of the heat.
    cooling, _ = _fac([1e6], [22.0], [20.0])
    chiller = 0.3 * 1e6 / min(0.5 * (22.0 + 273.15) / 3.0, 12.0)
    assert cooling[0] == pytest.approx(15e3 + chiller + 20e3 * ((1e6 + chiller) / 1e6) ** 3, rel=1e-14)
    # No IT power: PUE undefined.
    assert np.isnan(_fac([0.0], [30.0], [20.0])[1][0])


def test_facility_power_matches_reference_and_warm_water_helps():
    rng = np.random.default_rng(3)
    it, sup, out = rng.uniform(1e4, 1.2e6, 500), rng.uniform(7, 45, 500), rng.uniform(-10, 40, 500)
    for chiller_only in (False, True):
        got = th.facility_power(it, sup, out, *FAC.values(), chiller_only)
        want = th.facility_power_ref(it, sup, out, *FAC.values(), chiller_only)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13)
    _, pue = _fac(it, sup, out)
    assert np.all(pue > 1.0)
    _, pue_warm = _fac(np.full(5, 8e5), np.full(5, 40.0), np.linspace(0, 35, 5))
    _, pue_cold = _fac(np.full(5, 8e5), np.full(5, 18.0), np.linspace(0, 35, 5))
    assert np.all(pue_warm <= pue_cold) and pue_warm[-1] < pue_cold[-1]


def test_dry_cooler_fans_work_harder_as_the_day_warms():
    # Fixed warm supply (30 degC), full load: fan power rises with the outside temperature up to the design
    # day (outside = supply - approach = 25 degC), with no step where the chiller starts trimming, and is
    # the rated fan power there.
    outside = np.linspace(-10.0, 35.0, 451)
    it, sup = np.full(outside.size, 1e6), np.full(outside.size, 30.0)
    fan_only = dict(FAC, pump_rated_w=0.0, other_overhead_fraction=0.0, other_fixed_w=0.0)
    cooling, _ = th.facility_power(it, sup, outside, *fan_only.values())
    assert np.all(np.diff(cooling) >= -1e-9)
    edge, _ = th.facility_power(np.full(3, 1e6), np.full(3, 30.0), 25.0 + np.array([-1e-6, 0.0, 1e-6]),
                                *fan_only.values())  # fmt: skip
    assert np.ptp(edge) < 1.0  # continuous where the chiller starts trimming (W)
    design = int(np.argmin(np.abs(outside - 25.0)))
    assert cooling[design] == pytest.approx(20e3, rel=1e-12)
    # 0 degC: 30 + 5 - 0 = 35 K drive vs 10 K on the design day.
    assert cooling[int(np.argmin(np.abs(outside)))] == pytest.approx(20e3 * (10.0 / 35.0) ** 3, rel=1e-12)


def test_chiller_only_runs_the_chiller_whatever_the_weather():
    # A 35 degC supply on a 0 degC day: an economizer would take it all; a chiller-only plant still runs its
    # compressor (at the best COP, lift <= 0) and its condenser fans at the design ratio.
    econ, _ = _fac([1e6], [35.0], [0.0])
    only, _ = th.facility_power(np.array([1e6]), np.array([35.0]), np.array([0.0]), *FAC.values(), True)
    chiller = 1e6 / 12.0
    assert only[0] == pytest.approx(15e3 + chiller + 20e3 * ((1e6 + chiller) / 1e6) ** 3, rel=1e-12)
    assert only[0] > econ[0]


def test_affinity_power():
    x = np.array([0.0, 0.5, 1.0, 1.2])
    np.testing.assert_allclose(th.affinity_power_w(1000.0, x), [0.0, 125.0, 1000.0, 1728.0], rtol=1e-14)
    np.testing.assert_allclose(th.affinity_power_w(1000.0, x), th.affinity_power_w_ref(1000.0, x), rtol=1e-14)


def test_rc_thermal_rejects_mismatched_shapes():
    # numba does not bounds-check, so the kernel checks shapes itself rather than read past an array.
    with pytest.raises(ValueError):
        _run(np.ones((2, 5)), np.ones((2, 4)), _params(2), 30.0, 30.0, 0.1)
    with pytest.raises(ValueError):
        _run(np.ones((2, 5)), np.ones((2, 5)), _params(1), 30.0, 30.0, 0.1)
