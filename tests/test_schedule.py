"""Pipeline schedules: every micro-batch/chunk runs forward then backward exactly once."""

from __future__ import annotations

import pytest

from workloads.schedule import bubble_fraction_1f1b, interleaved, one_f_one_b


@pytest.mark.parametrize("stages,mbs", [(1, 4), (4, 8), (4, 2), (8, 8)])
def test_1f1b_runs_each_microbatch_forward_then_backward(stages, mbs):
    for s in range(stages):
        acts = one_f_one_b(s, stages, mbs)
        assert sorted(m for p, m, _ in acts if p == "F") == list(range(mbs))
        assert sorted(m for p, m, _ in acts if p == "B") == list(range(mbs))
        for m in range(mbs):
            assert acts.index(("F", m, 0)) < acts.index(("B", m, 0))
        # Warm-up: the first stage runs stages-1 forwards before its first backward.
        first_b = next(i for i, a in enumerate(acts) if a[0] == "B")
        assert first_b == min(stages - s - 1, mbs) + 1 if mbs > stages - s - 1 else True


@pytest.mark.parametrize("stages,mbs,chunks", [(2, 4, 2), (4, 8, 2), (4, 8, 3)])
def test_interleaved_covers_every_chunk(stages, mbs, chunks):
    for s in range(stages):
        acts = interleaved(s, stages, mbs, chunks)
        fwd = sorted((m, c) for p, m, c in acts if p == "F")
        bwd = sorted((m, c) for p, m, c in acts if p == "B")
        expected = sorted((m, c) for m in range(mbs) for c in range(chunks))
        assert fwd == expected and bwd == expected
        for m in range(mbs):
            for c in range(chunks):
                assert acts.index(("F", m, c)) < acts.index(("B", m, c))


def test_bubble_closed_form():
    assert bubble_fraction_1f1b(4, 12) == pytest.approx(3 / 15)
    assert bubble_fraction_1f1b(4, 12, 2) < bubble_fraction_1f1b(4, 12)
