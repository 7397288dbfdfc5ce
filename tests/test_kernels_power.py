"""Tests for simcore.kernels.power: activity binning, GPU power model, power caps, PSU and distribution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.kernels import power as pw

SETTINGS = settings(max_examples=40, deadline=None)


def _random_intervals(rng: np.random.Generator, n: int, n_classes: int, t_max: float, dt: float):
    # Half the end points sit exactly on (floating-point computed) bin edges, the rest anywhere.
    start = rng.uniform(-0.1 * t_max, t_max, n)
    on_edge = rng.random(n) < 0.5
    start[on_edge] = np.floor(start[on_edge] / dt) * dt
    end = start + rng.exponential(0.1 * t_max, n)
    on_edge = rng.random(n) < 0.5
    end[on_edge] = np.ceil(end[on_edge] / dt) * dt
    cls = rng.integers(0, n_classes, n)
    ch = rng.integers(0, pw.N_CHANNELS, n)
    level = rng.uniform(0.0, 1.0, n)
    return start, end, cls, ch, level


# ------------------------------------------------------------------------------------- event rows


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(0, 30), n_carry=st.integers(0, 5))
def test_activity_intervals_matches_reference(seed, n_rows, n_carry):
    # Strided float32 columns of a structured array, as the recorder hands them over; about half the
    # levels are exactly zero (no interval for that channel). Pure copies: bit-identical.
    from simcore.activity import EVENT_DTYPE

    rng = np.random.default_rng(seed)
    rows = np.zeros(n_rows, dtype=EVENT_DTYPE)
    rows["t_start"] = rng.uniform(0.0, 1.0, n_rows)
    rows["t_end"] = rows["t_start"] + rng.uniform(0.0, 0.2, n_rows)
    rows["rank_class"] = rng.integers(0, 5, n_rows)
    cols = ("u_tensor", "u_hbm", "u_scale_up", "u_scale_out")
    for c in cols:
        rows[c] = np.where(rng.random(n_rows) < 0.5, 0.0, rng.uniform(0.0, 1.0, n_rows))
    carry = _random_intervals(rng, n_carry, 5, 1.0, 0.05)
    args = (*carry, rows["t_start"], rows["t_end"], rows["rank_class"], *(rows[c] for c in cols))
    got, want = pw.activity_intervals(*args), pw.activity_intervals_ref(*args)
    assert len(got[0]) == n_carry + sum(int((rows[c] > 0).sum()) for c in cols)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------------------------------------- binning


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 40),
    n_classes=st.integers(1, 4),
    n_bins=st.integers(1, 60),
    dt=st.sampled_from([1e-3, 0.1, 0.25, 1.0 / 3.0]),
    t0=st.sampled_from([0.0, -0.5, 12.3]),
)
def test_bin_activity_matches_reference(seed, n, n_classes, n_bins, dt, t0):
    # Same arithmetic in the same order (per bin, intervals in input order) -> expect bit-identical; the
    # 1e-12 slack only guards against a compiler contracting a*b+c into an FMA.
    rng = np.random.default_rng(seed)
    s, e, cls, ch, lv = _random_intervals(rng, n, n_classes, n_bins * dt, dt)
    s, e = s + t0, e + t0
    args = (s, e, cls, ch, lv, n_classes, pw.N_CHANNELS, t0, dt, n_bins)
    np.testing.assert_allclose(pw.bin_activity(*args), pw.bin_activity_ref(*args), rtol=1e-12, atol=1e-15)


def test_bin_activity_matches_reference_large():
    # Fixed larger case (many overlaps, so clipping at 1 is exercised); same tolerance and reason as above.
    rng = np.random.default_rng(7)
    n_classes, n_bins, dt = 8, 500, 0.01
    s, e, cls, ch, lv = _random_intervals(rng, 3000, n_classes, n_bins * dt, dt)
    args = (s, e, cls, ch, lv, n_classes, pw.N_CHANNELS, 0.0, dt, n_bins)
    got = pw.bin_activity(*args)
    assert got.max() == 1.0  # overlaps saturated somewhere
    np.testing.assert_allclose(got, pw.bin_activity_ref(*args), rtol=1e-12, atol=1e-15)


def test_bin_activity_conserves_busy_time():
    # Non-overlapping intervals (a random partition of each channel's timeline, inside the window):
    # sum(util) * dt must equal sum(level * duration). Float-eps level: only rounding of the sums.
    rng = np.random.default_rng(3)
    n_classes, n_bins, dt = 5, 997, 0.013
    window = n_bins * dt
    starts, ends, cls, chs, lvs = [], [], [], [], []
    for k in range(n_classes):
        for c in range(pw.N_CHANNELS):
            cuts = np.sort(rng.uniform(0.0, window, 81))
            starts.append(cuts[:-1:2])
            ends.append(cuts[1::2])
            cls.append(np.full(40, k))
            chs.append(np.full(40, c))
            lvs.append(rng.uniform(0.0, 1.0, 40))
    s, e, k_, c_, lv = (np.concatenate(x) for x in (starts, ends, cls, chs, lvs))
    util = pw.bin_activity(s, e, k_, c_, lv, n_classes, pw.N_CHANNELS, 0.0, dt, n_bins)
    for k in range(n_classes):
        for c in range(pw.N_CHANNELS):
            m = (k_ == k) & (c_ == c)
            expected = np.sum(lv[m] * (e[m] - s[m]))
            assert util[k, c].sum() * dt == pytest.approx(expected, rel=1e-12)


def test_bin_activity_exact_on_bin_edges():
    # dt = 0.1 is not representable, so k*dt lands a few ulp off edge k; snapping must make the busy
    # bins exactly 1 and the neighbours exactly 0 (no 1e-16 leaks into idle bins).
    dt, n_bins = 0.1, 50
    s = np.array([3 * dt, 17 * dt, 0.0])
    e = np.array([11 * dt, 40 * dt, 1 * dt])
    util = pw.bin_activity(
        s, e, np.zeros(3, np.int64), np.array([0, 1, 2]), np.ones(3), 1, 4, 0.0, dt, n_bins
    )
    expected = np.zeros((1, 4, n_bins))
    expected[0, 0, 3:11] = 1.0
    expected[0, 1, 17:40] = 1.0
    expected[0, 2, 0:1] = 1.0
    np.testing.assert_array_equal(util, expected)


def test_bin_activity_long_interval_partial_ends_and_window_clip():
    # One interval over 100k bins with partial first/last bins, plus intervals outside the window.
    n_bins, dt = 100_000, 1e-3
    s = np.array([0.25e-3, -5.0, 200.0, 1.0])
    e = np.array([99_999.5e-3, -1.0, 300.0, 1.0])  # the last is empty (start == end)
    util = pw.bin_activity(
        s, e, np.zeros(4, np.int64), np.zeros(4, np.int64), np.full(4, 0.5), 1, 1, 0.0, dt, n_bins
    )
    row = util[0, 0]
    assert row[0] == pytest.approx(0.375, abs=1e-12)  # 0.75 of the bin at level 0.5
    assert row[-1] == pytest.approx(0.25, abs=1e-12)
    assert np.all(row[1:-1] == 0.5)
    # Interval partly before the window: clipped at t0.
    util = pw.bin_activity(
        np.array([-1.0]),
        np.array([2.5]),
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.ones(1),
        1,
        1,
        0.0,
        1.0,
        4,
    )
    np.testing.assert_array_equal(util[0, 0], [1.0, 1.0, 0.5, 0.0])


def test_bin_activity_overlap_clipped_at_one():
    util = pw.bin_activity(
        np.array([0.0, 0.5]),
        np.array([2.0, 2.0]),
        np.zeros(2, np.int64),
        np.zeros(2, np.int64),
        np.array([0.8, 0.8]),
        1,
        1,
        0.0,
        1.0,
        2,
    )
    np.testing.assert_allclose(util[0, 0], [1.0, 1.0])


def test_bin_activity_rejects_bad_index():
    with pytest.raises(ValueError):
        pw.bin_activity(
            np.array([0.0]), np.array([1.0]), np.array([2]), np.array([0]), np.ones(1), 2, 4, 0.0, 1.0, 2
        )


# ---------------------------------------------------------------------------------------------- GPU power


def _gpu_params(n_classes: int, rng: np.random.Generator):
    idle = rng.uniform(50.0, 150.0, n_classes)
    peak = idle + rng.uniform(300.0, 1300.0, n_classes)
    kappa = rng.uniform(1.0, 3.0, n_classes)
    weights = rng.uniform(0.0, 0.7, (n_classes, pw.N_CHANNELS))
    return weights, idle, peak, kappa


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_classes=st.integers(1, 5), n_bins=st.integers(1, 50))
def test_gpu_power_and_cap_match_reference(seed, n_classes, n_bins):
    # Same formula, but einsum may sum channels in another order and numpy's pow differs from LLVM's by
    # an ulp: 1e-12 relative.
    rng = np.random.default_rng(seed)
    util = rng.uniform(0.0, 1.0, (n_classes, pw.N_CHANNELS, n_bins))
    weights, idle, peak, kappa = _gpu_params(n_classes, rng)
    clock = rng.uniform(0.3, 1.0, (n_classes, n_bins))
    clock[:, ::3] = 1.0
    np.testing.assert_allclose(
        pw.activity(util, weights), pw.activity_ref(util, weights), rtol=1e-12, atol=1e-15
    )
    got = pw.gpu_power(util, weights, idle, peak, clock, kappa)
    np.testing.assert_allclose(got, pw.gpu_power_ref(util, weights, idle, peak, clock, kappa), rtol=1e-12)
    cap = rng.uniform(0.0, 1.2, n_classes) * peak
    f_min = rng.uniform(0.1, 0.6, n_classes)
    a = pw.activity(util, weights)
    np.testing.assert_allclose(
        pw.clock_for_power_cap(cap, idle, peak, a, kappa, f_min),
        pw.clock_for_power_cap_ref(cap, idle, peak, a, kappa, f_min),
        rtol=1e-12,
    )


def test_gpu_power_idle_and_peak():
    rng = np.random.default_rng(1)
    weights, idle, peak, kappa = _gpu_params(3, rng)
    ones = np.ones((3, 10))
    p_idle = pw.gpu_power(np.zeros((3, 4, 10)), weights, idle, peak, ones, kappa)
    np.testing.assert_array_equal(p_idle, np.repeat(idle[:, None], 10, axis=1))  # exact: idle + 0
    full = np.ones((3, 4, 10))
    p_full = pw.gpu_power(full, np.ones((3, 4)), idle, peak, ones, kappa)  # A clamps to 1
    # idle + (peak - idle) can differ from peak by one rounding.
    np.testing.assert_allclose(p_full, np.repeat(peak[:, None], 10, axis=1), rtol=1e-15)


def test_gpu_power_monotonic_in_activity():
    rng = np.random.default_rng(2)
    weights, idle, peak, kappa = _gpu_params(4, rng)
    base = rng.uniform(0.0, 0.5, (4, 4, 200))
    more = np.minimum(base + rng.uniform(0.0, 0.5, base.shape), 1.0)
    clock = rng.uniform(0.5, 1.0, (4, 200))
    assert np.all(
        pw.gpu_power(more, weights, idle, peak, clock, kappa)
        >= pw.gpu_power(base, weights, idle, peak, clock, kappa)
    )
    # Lower clock never raises power either.
    assert np.all(
        pw.gpu_power(base, weights, idle, peak, clock * 0.9, kappa)
        <= pw.gpu_power(base, weights, idle, peak, clock, kappa)
    )


def test_power_never_exceeds_cap_after_clock_for_power_cap():
    rng = np.random.default_rng(4)
    n_classes, n_bins = 6, 500
    weights, idle, peak, kappa = _gpu_params(n_classes, rng)
    util = rng.uniform(0.0, 1.0, (n_classes, 4, n_bins))
    cap = idle + rng.uniform(0.2, 1.0, n_classes) * (peak - idle)
    f_min = np.full(n_classes, 1e-3)  # low enough that it never binds here
    a = pw.activity(util, weights)
    f = pw.clock_for_power_cap(cap, idle, peak, a, kappa, f_min)
    p = pw.gpu_power(util, weights, idle, peak, f, kappa)
    # Round trip x -> x**(1/k) -> **k is good to a few ulp: allow 1e-12 relative above the cap.
    assert np.all(p <= cap[:, None] * (1 + 1e-12))
    binding = f < 1.0
    assert binding.any()
    np.testing.assert_allclose(p[binding], np.broadcast_to(cap[:, None], p.shape)[binding], rtol=1e-12)
    assert np.all(f[a == 0.0] == 1.0)
    # Cap at or below idle: nothing but f_min is possible.
    f = pw.clock_for_power_cap(idle * 0.9, idle, peak, a, kappa, np.full(n_classes, 0.3))
    assert np.all((f == 0.3) | (a == 0.0))


def test_compute_slowdown():
    f = np.array([1.0, 0.5, 0.8])
    np.testing.assert_allclose(pw.compute_slowdown(f, np.ones(3)), 1.0 / f, rtol=1e-15)  # fully compute-bound
    np.testing.assert_array_equal(pw.compute_slowdown(f, np.zeros(3)), np.ones(3))  # memory-bound
    np.testing.assert_allclose(pw.compute_slowdown(f, np.full(3, 0.6)), 0.6 / f + 0.4, rtol=1e-15)
    np.testing.assert_allclose(
        pw.compute_slowdown(f, np.full(3, 0.6)), pw.compute_slowdown_ref(f, 0.6), rtol=1e-15
    )


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 60),
    n_classes=st.integers(1, 5),
    n_bins=st.integers(1, 80),
    grouped=st.booleans(),
)
def test_activity_power_fused_equals_pipeline(seed, n, n_classes, n_bins, grouped):
    # The fused kernel promises bit-identical output to bin_activity -> activity -> gpu_power (same sums in
    # the same order), for input grouped by class or not, with some zero-weight channels skipped.
    rng = np.random.default_rng(seed)
    dt = 0.01
    s, e, cls, ch, lv = _random_intervals(rng, n, n_classes, n_bins * dt, dt)
    if grouped:
        order = np.argsort(cls, kind="stable")
        s, e, cls, ch, lv = s[order], e[order], cls[order], ch[order], lv[order]
    weights, idle, peak, kappa = _gpu_params(n_classes, rng)
    weights[rng.random(weights.shape) < 0.3] = 0.0
    clock = np.where(rng.random((n_classes, n_bins)) < 0.5, 1.0, rng.uniform(0.4, 1.0, (n_classes, n_bins)))
    util = pw.bin_activity(s, e, cls, ch, lv, n_classes, pw.N_CHANNELS, 0.0, dt, n_bins)
    power, act = pw.activity_power(s, e, cls, ch, lv, weights, idle, peak, clock, kappa, 0.0, dt)
    np.testing.assert_array_equal(act, pw.activity(util, weights))
    np.testing.assert_array_equal(power, pw.gpu_power(util, weights, idle, peak, clock, kappa))


def test_activity_power_rejects_bad_index():
    w = np.ones((2, 4))
    with pytest.raises(ValueError):
        pw.activity_power(
            np.array([0.0]),
            np.array([1.0]),
            np.array([0]),
            np.array([4]),
            np.ones(1),
            w,
            np.ones(2),
            np.ones(2),
            np.ones((2, 3)),
            np.ones(2),
            0.0,
            1.0,
        )


# ---------------------------------------------------------------------------------------------- PSU / rack


def test_psu_curve_hits_titanium_points_exactly():
    eff = pw.psu_efficiency(pw.TITANIUM_CURVE_LOAD, pw.TITANIUM_CURVE_LOAD, pw.TITANIUM_CURVE_EFF)
    np.testing.assert_array_equal(eff, [0.90, 0.94, 0.96, 0.91])
    # Clamped beyond the ends, linear in between.
    ends = pw.psu_efficiency(np.array([0.0, 0.05, 1.5]), pw.TITANIUM_CURVE_LOAD, pw.TITANIUM_CURVE_EFF)
    np.testing.assert_array_equal(ends, [0.90, 0.90, 0.91])
    mid = pw.psu_efficiency(np.array([0.35, 0.75]), pw.TITANIUM_CURVE_LOAD, pw.TITANIUM_CURVE_EFF)
    np.testing.assert_allclose(mid, [0.95, 0.935], rtol=1e-14)
    grid2d = np.linspace(0, 1.2, 12).reshape(3, 4)
    np.testing.assert_allclose(
        pw.psu_efficiency(grid2d, pw.TITANIUM_CURVE_LOAD, pw.TITANIUM_CURVE_EFF),
        pw.psu_efficiency_ref(grid2d, pw.TITANIUM_CURVE_LOAD, pw.TITANIUM_CURVE_EFF),
        rtol=1e-15,
    )


def test_rack_input_power():
    # Hand value: 66 kW IT behind a 99 % busbar, 4 x 33 kW shelves -> PSU out 66.667 kW at 50.5 % load.
    it = np.array([[66_000.0, 0.0]])
    rated = np.array([132_000.0])
    inp, loss = pw.rack_input_power(
        it, rated, pw.TITANIUM_CURVE_LOAD, pw.TITANIUM_CURVE_EFF, np.array([0.99])
    )
    out = 66_000.0 / 0.99
    eta = 0.96 + (out / 132_000.0 - 0.5) / 0.5 * (0.91 - 0.96)
    assert inp[0, 0] == pytest.approx(out / eta, rel=1e-14)
    assert loss[0, 0] == pytest.approx(out / eta - 66_000.0, rel=1e-12)
    assert inp[0, 1] == 0.0 and loss[0, 1] == 0.0
    rng = np.random.default_rng(5)
    it = rng.uniform(0.0, 150e3, (7, 300))
    args = (
        it,
        rng.uniform(100e3, 200e3, 7),
        pw.TITANIUM_CURVE_LOAD,
        pw.TITANIUM_CURVE_EFF,
        rng.uniform(0.95, 1.0, 7),
    )
    for a, b in zip(pw.rack_input_power(*args), pw.rack_input_power_ref(*args), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)


def test_distribution_800v_beats_54v():
    p = np.array([132e3, 0.0])
    r = 1e-4  # same conductor resistance for both
    loss_54 = pw.distribution_loss_w(p, 54.0, r)
    loss_800 = pw.distribution_loss_w(p, 800.0, r)
    assert loss_54[0] == pytest.approx((132e3 / 54.0) ** 2 * r, rel=1e-14)  # ~2.44 kA -> ~598 W
    assert loss_54[0] / loss_800[0] == pytest.approx((800.0 / 54.0) ** 2, rel=1e-12)
    eff = pw.distribution_efficiency(p, 54.0, r)
    np.testing.assert_allclose(eff, pw.distribution_efficiency_ref(p, 54.0, r), rtol=1e-14)
    assert eff[1] == 1.0
    assert pw.distribution_efficiency(p, 800.0, r)[0] > eff[0]


def test_per_class_broadcast():
    np.testing.assert_array_equal(pw.per_class(2.0, 3), [2.0, 2.0, 2.0])
    out = pw.per_class([1, 2, 3], 3)
    assert out.dtype == np.float64 and out.flags.c_contiguous
    with pytest.raises(ValueError):
        pw.per_class([1.0, 2.0], 3)


def test_gpu_power_rejects_mismatched_shapes():
    # numba does not bounds-check, so the kernels check shapes themselves rather than read past an array.
    util = np.zeros((2, 4, 5))
    one = np.ones(2)
    with pytest.raises(ValueError):
        pw.gpu_power(util, np.ones((2, 4)), one, one, np.ones((2, 4)), one)
    with pytest.raises(ValueError):
        pw.gpu_power(util, np.ones((2, 4)), np.ones(1), one, np.ones((2, 5)), one)
    with pytest.raises(ValueError):
        pw.activity_power(
            np.zeros(1),
            np.ones(1),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.ones(1),
            np.ones((2, 4)),
            one,
            one,
            np.ones((3, 5)),
            one,
            0.0,
            1.0,
        )
