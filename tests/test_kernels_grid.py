"""Tests for simcore.kernels.grid: power-swing metrics, GPU power smoothing, energy-storage buffer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simcore.kernels import grid as gr
from simcore.kernels.power import per_class

SETTINGS = settings(max_examples=40, deadline=None)

DT = 2.0**-10  # ~1 ms, exactly representable so closed forms below are exact in binary


def _square(high: float, low: float, period_bins: int, periods: int) -> np.ndarray:
    one = np.concatenate([np.full(period_bins // 2, high), np.full(period_bins - period_bins // 2, low)])
    return np.tile(one, periods)


# ---------------------------------------------------------------------------------------------- swing


def test_power_swing_square_wave_1hz():
    # 1 Hz square wave between 900 and 300 W sampled at 1 ms for 10 s. Swing = 600 W; ramp = 600 W in one
    # sample = 600/dt W/s. Spectrum: only odd harmonics j Hz with energy ~ 1/j^2 (exactly, for the sampled
    # wave, ~ 1/sin^2(pi j / M), M = 1000 samples per period); 0.1-20 Hz keeps j = 1, 3, ..., 19, i.e.
    # ~98 % (continuous limit: sum_{odd j<=19} 1/j^2 / (pi^2/8) = 0.9797). Compared at 1e-9.
    m, dt = 1000, 1e-3
    p = _square(900.0, 300.0, m, 10)
    ptt, ramp, frac = gr.power_swing(p, dt)
    assert ptt == 600.0
    assert ramp == pytest.approx(600.0 / dt, rel=1e-12)
    j = np.arange(1, m, 2)
    energy = 1.0 / np.sin(np.pi * j / m) ** 2
    band = (np.minimum(j, m - j) <= 20) & (np.minimum(j, m - j) >= 0.1)
    expected = energy[band].sum() / energy.sum()
    assert frac == pytest.approx(expected, rel=1e-9)
    assert frac == pytest.approx(0.9797, abs=1e-3)


def test_power_swing_constant_is_zero():
    assert gr.power_swing(np.full(1000, 1.2e6), 0.01) == (0.0, 0.0, 0.0)


def test_power_swing_out_of_band_and_batched():
    # A 50 Hz sine is entirely above the band; a 0.05 Hz sine entirely below (whole periods, no leakage).
    t = np.arange(4000) * 5e-3  # 20 s
    fast = 1e3 + 100 * np.sin(2 * np.pi * 50.0 * t)
    slow = 1e3 + 100 * np.sin(2 * np.pi * 0.05 * t)
    mid = 1e3 + 100 * np.sin(2 * np.pi * 2.0 * t)
    ptt, ramp, frac = gr.power_swing(np.stack([fast, slow, mid]), 5e-3)
    assert ptt.shape == ramp.shape == frac.shape == (3,)
    np.testing.assert_allclose(frac, [0.0, 0.0, 1.0], atol=1e-12)  # 1e-12: FFT rounding only


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 300), dt=st.sampled_from([1e-3, 0.01, 0.05]))
@example(seed=0, n=195, dt=0.01)  # bin 39 sits exactly on 20 Hz: rfftfreq and k/(n dt) round it apart
def test_power_swing_matches_reference(seed, n, dt):
    # FFT vs explicit two-sided DFT: identical maths, different summation: 1e-9.
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 1e5, n)
    got = gr.power_swing(p, dt)
    ref = gr.power_swing_ref(p, dt)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [65_537, 131_071, 1_000_003])  # 1,000,003 is prime
def test_fft_length_is_the_next_7_smooth_length_above_the_exact_limit(n):
    m = gr.fft_length(n)
    rest = m
    for p in (2, 3, 5, 7):
        while rest % p == 0:
            rest //= p
    assert rest == 1 and n <= m < 1.02 * n
    assert gr.fft_length(gr.EXACT_FFT_MAX) == gr.EXACT_FFT_MAX  # short series keep their exact spectrum


def test_padding_a_long_series_keeps_its_band_energy_fraction():
    # A square-wave training step (2.5 Hz, in band) over slow drift (out of band) and noise, 65,537 x 5 ms:
    # the padded spectrum's in-band share equals the exact one to 1e-4 of the energy.
    rng = np.random.default_rng(7)
    n, dt = gr.EXACT_FFT_MAX + 1, 5e-3
    t = np.arange(n) * dt
    p = _square(1e6, 4e5, 80, n // 80 + 1)[:n] + 2e5 * np.sin(2 * np.pi * 0.01 * t) + rng.normal(0, 2e4, n)
    _, _, padded = gr.power_swing(p, dt)
    x = p - p.mean()
    spec = np.abs(np.fft.rfft(x)) ** 2
    weight, band = gr._band_weights(n, dt, gr.BAND_LO_HZ, gr.BAND_HI_HZ)
    exact = (spec[band] @ weight[band]) / (spec @ weight)
    assert gr.fft_length(n) > n and 0.3 < exact < 0.95
    assert padded == pytest.approx(exact, abs=1e-4)  # December 2026: 0.776225 vs 0.776226


# ---------------------------------------------------------------------------------------------- smoothing


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_classes=st.integers(1, 4), n_bins=st.integers(1, 200))
def test_gpu_smoothing_matches_reference(seed, n_classes, n_bins):
    # Same arithmetic in the same order -> bit-identical expected; 1e-12 tolerance for the summed energy.
    rng = np.random.default_rng(seed)
    req = rng.uniform(50.0, 1200.0, (n_classes, n_bins))
    floor = rng.uniform(0.0, 800.0, n_classes)
    ramp = rng.uniform(1e3, 1e6, n_classes)
    ramp[0] = np.inf
    got = gr.gpu_smoothing(req, floor, ramp, 1e-3)
    ref = gr.gpu_smoothing_ref(req, floor, ramp, 1e-3)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-12, atol=1e-12)
    # Invariants: never below the floor; never moves faster than the ramp.
    assert np.all(got[0] >= floor[:, None])
    assert np.all(np.abs(np.diff(got[0], axis=1)) <= ramp[:, None] * 1e-3 * (1 + 1e-12) + 1e-9)


def test_gpu_smoothing_drop_closed_form():
    # 1000 W -> 200 W drop, ramp 16 W per bin: P_s = 1000 - 16 k for k = 1..50, so the wasted energy is
    # sum_{k=1}^{49} (800 - 16 k) dt = 16 * 1225 * dt. Everything is a binary fraction: exact.
    req = np.concatenate([np.full(20, 1000.0), np.full(100, 200.0)])[None, :]
    ps, wasted = gr.gpu_smoothing(req, np.array([0.0]), np.array([16.0 / DT]), DT)
    np.testing.assert_array_equal(ps[0, 20:70], 1000.0 - 16.0 * np.arange(1, 51))
    np.testing.assert_array_equal(ps[0, 70:], 200.0)
    assert wasted[0] == 16.0 * 1225 * DT
    # Floor above the request: the GPU burns floor - request the whole time.
    ps, wasted = gr.gpu_smoothing(np.full((1, 64), 100.0), np.array([300.0]), np.array([np.inf]), DT)
    np.testing.assert_array_equal(ps, 300.0)
    assert wasted[0] == 200.0 * 64 * DT


def test_gpu_smoothing_energy_balance():
    # Request that rises slower than the ramp limit but drops arbitrarily and dips below the floor: the
    # smoothed power is then never below the request, so integral(P_s) - integral(P_req) must equal the
    # reported wasted energy. Integrals computed here independently; 1e-9 relative (summation order).
    rng = np.random.default_rng(8)
    n_classes, n_bins = 4, 20_000
    ramp = np.array([2e5, 5e5, 1e6, 3e6])
    floor = np.array([150.0, 250.0, 0.0, 400.0])
    req = np.empty((n_classes, n_bins))
    for k in range(n_classes):
        p = 100.0
        for b in range(n_bins):
            if rng.random() < 0.01:
                p = rng.uniform(50.0, 300.0)  # sudden drop (possibly below the floor)
            else:
                p = min(p + rng.uniform(0.0, ramp[k] * DT), 1200.0)  # slow rise, within the ramp limit
            req[k, b] = p
    ps, wasted = gr.gpu_smoothing(req, floor, ramp, DT)
    assert np.all(ps >= req - 1e-9)  # P_s = prev + (req - prev) can round one ulp below req
    extra = ps.sum(axis=1) * DT - req.sum(axis=1) * DT
    np.testing.assert_allclose(wasted, extra, rtol=1e-9)
    assert np.all(wasted > 0.0)


# ---------------------------------------------------------------------------------------------- storage


def _storage_args(load, capacity, p_max, eff, ramp, tau, soc0_frac=0.5, recovery=30.0):
    n = load.shape[0]
    cap = per_class(capacity, n)
    return (
        load,
        cap,
        per_class(p_max, n),
        per_class(eff, n),
        per_class(ramp, n),
        per_class(tau, n),
        cap * soc0_frac,
        cap * 0.5,
        per_class(recovery, n),
        DT,
        load[:, 0].astype(np.float64),
    )


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_units=st.integers(1, 3),
    n_bins=st.integers(1, 300),
    capacity=st.floats(0.0, 2000.0),
    p_max=st.floats(0.0, 1500.0),
    eff=st.floats(0.5, 1.0),
    ramp=st.sampled_from([np.inf, 1e3, 1e5]),
    tau=st.sampled_from([0.0, 0.05, 2.0]),
    recovery=st.sampled_from([0.0, 1.0, 30.0]),
)
def test_storage_buffer_matches_reference(seed, n_units, n_bins, capacity, p_max, eff, ramp, tau, recovery):
    # Same arithmetic in the same order -> bit-identical expected; 1e-12 for safety.
    rng = np.random.default_rng(seed)
    load = rng.uniform(100.0, 1200.0, (n_units, n_bins))
    args = _storage_args(load, capacity, p_max, eff, ramp, tau, rng.uniform(0.0, 1.0), recovery)
    for a, b in zip(gr.storage_buffer(*args), gr.storage_buffer_ref(*args), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)


def test_storage_buffer_energy_balance():
    # Grid energy + energy the battery delivered (decrease in charge times eff, or increase divided by eff,
    # recomputed here from the state of charge) = load energy. 1e-9 relative: rounding only.
    rng = np.random.default_rng(9)
    load = np.vstack([_square(1000.0, 200.0, 1024, 8), rng.uniform(100.0, 1200.0, 8192)])
    for eff in (1.0, 0.95, 0.8):
        for cap in (50.0, 300.0, 5e4):
            args = _storage_args(load, cap, 600.0, eff, 2e3, 0.5)
            grid, soc = gr.storage_buffer(*args)
            prev = np.concatenate([args[6][:, None], soc[:, :-1]], axis=1)
            drop = prev - soc
            delivered_j = np.where(drop > 0.0, drop * eff, drop / eff)
            lhs = grid.sum(axis=1) * DT + delivered_j.sum(axis=1)
            np.testing.assert_allclose(lhs, load.sum(axis=1) * DT, rtol=1e-9)
            assert np.all(soc >= 0.0) and np.all(soc <= cap)
            assert np.all(grid >= 0.0)


def test_storage_buffer_smooths_a_square_wave():
    # 800 W peak-to-trough at 1 Hz. Sizing rule (modeling-notes §2.2): E ~ dP*T/4 = 200 J per cycle, so a
    # 5 kJ store with a 500 W converter keeps the grid ramp-limited (50 W/s) and cuts the swing by > 10x.
    load = _square(1000.0, 200.0, 1024, 30)[None, :]
    grid, soc = gr.storage_buffer(*_storage_args(load, 5000.0, 500.0, 0.97, 50.0, 2.0))
    tail = grid[0, 10 * 1024 :]
    ptt, ramp, _ = gr.power_swing(tail, DT)
    assert ptt < 80.0
    assert ramp <= 50.0 * (1 + 1e-9)
    assert soc.min() > 0.0 and soc.max() < 5000.0
    # No storage: the grid sees the load unchanged.
    grid0, soc0 = gr.storage_buffer(*_storage_args(load, 0.0, 0.0, 0.97, 50.0, 2.0))
    np.testing.assert_array_equal(grid0, load)
    np.testing.assert_array_equal(soc0, 0.0)


def test_storage_settled_at_the_mean_rides_through_a_run_that_starts_in_a_dip():
    """A run whose first sample is an idle dip: a grid settled there (the old start) sees the first ramp
    to full load empty the store, after which the grid takes every step; settled at the run's mean (a job
    that has been running) the store covers the swing from the first cycle on."""
    load = _square(200.0, 1000.0, 1024, 30)[None, :]  # starts low
    args = list(_storage_args(load, 5000.0, 500.0, 0.97, 50.0, 2.0))
    args[-1] = np.array([load.mean()])
    grid, soc = gr.storage_buffer(*args)
    assert soc.min() > 0.3 * 5000.0 and soc.max() < 0.7 * 5000.0
    assert gr.power_swing(grid[0], DT)[0] < 0.2 * gr.power_swing(load[0], DT)[0]
    np.testing.assert_allclose(grid, gr.storage_buffer_ref(*args)[0], rtol=1e-12)
