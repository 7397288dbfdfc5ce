"""Interval arithmetic behind the exposed-communication and bubble fractions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.analysis import intersection_length, merge_intervals


def _brute(a, b, grid=4000):
    """Measure of the intersection on a fine grid (intervals use multiples of 1/grid endpoints)."""
    x = (np.arange(grid) + 0.5) / grid
    ina = np.zeros(grid, bool)
    inb = np.zeros(grid, bool)
    for s, e in zip(*a, strict=True):
        ina |= (x >= s) & (x < e)
    for s, e in zip(*b, strict=True):
        inb |= (x >= s) & (x < e)
    return np.sum(ina & inb) / grid


intervals = st.lists(st.tuples(st.integers(0, 399), st.integers(1, 100)), max_size=12).map(
    lambda xs: (np.array([s / 400 for s, _ in xs]), np.array([min(1.0, (s + d) / 400) for s, d in xs]))
)


@settings(max_examples=60, deadline=None)
@given(intervals, intervals)
def test_intersection_matches_brute_force(a, b):
    ma, mb = merge_intervals(*a), merge_intervals(*b)
    # Endpoints are multiples of 1/400 and each such cell holds exactly 10 grid midpoints: exact.
    assert abs(intersection_length(ma, mb) - _brute(ma, mb)) < 1e-9


def test_merge_union_length():
    s, e = merge_intervals(np.array([0.0, 0.5, 2.0]), np.array([1.0, 1.5, 3.0]))
    assert list(s) == [0.0, 2.0] and list(e) == [1.5, 3.0]
