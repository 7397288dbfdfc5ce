"""The activity recorder stores rows as (varying part, template) and converts a block at a time: the
table it hands out must be exactly the rows it was given, whichever path recorded them."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.activity import EVENT_DTYPE, OPEN_ROW_BYTES, ActivityRecorder, pack_open_row

_row = st.tuples(
    st.integers(0, 1000),  # rank_class
    st.integers(0, 20),  # stream
    st.integers(0, 4),  # kind
    st.integers(0, 6),  # group
    st.integers(0, 11),  # op
    st.integers(0, 50),  # name
    st.integers(0, 100),  # step
    st.integers(-1, 64),  # micro
    st.floats(0, 1e6),  # t_start
    st.floats(0, 1e6),  # t_end
    st.floats(0, 1e18),  # flops
    st.floats(0, 1e12),  # nbytes
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 1),
)


def _expected(rows: list[tuple]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=EVENT_DTYPE)
    for i, r in enumerate(rows):
        out[i] = r
    return out


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_row, max_size=60), block=st.integers(1, 17), kept_every=st.integers(1, 4))
def test_every_recording_path_gives_back_the_same_rows(
    rows: list[tuple], block: int, kept_every: int
) -> None:
    rec = ActivityRecorder(block_rows=block, keep=True)
    sunk: list[np.ndarray] = []
    rec.add_sink(sunk.append)
    for i, r in enumerate(rows):
        varying = (r[0], r[1], r[6], r[7], r[8], r[9])
        template = (r[2], r[3], r[4], r[5], *r[10:])
        if i % kept_every == 0:  # the engine's memoised path: a kept template referred to by id
            rec.open_buf += pack_open_row(*varying, rec.keep_template(template))
            if len(rec.open_buf) >= rec.block_bytes:
                rec.emit()
        elif i % 2:
            rec.record_op(*varying, template)
        else:
            rec.record(*r)
    assert rec.rows == len(rows)
    table = rec.table()
    assert table.tobytes() == _expected(rows).tobytes()
    assert b"".join(b.tobytes() for b in sunk) == table.tobytes()
    assert all(len(b) <= block for b in sunk)


def test_a_reused_template_is_stored_once_per_block() -> None:
    rec = ActivityRecorder(block_rows=1000, keep=False)
    template = (0, 0, 0, 0, 1.0, 2.0, 0.5, 0.5, 0.0, 0.0)
    for i in range(500):
        rec.record_op(0, 0, 0, -1, float(i), float(i + 1), template)
    assert len(rec._templates) == 1
    rows = rec.open_rows()
    assert len(rows) == 500 and np.all(rows["flops"] == 1.0) and rows["t_end"][-1] == 500.0


def test_polling_sees_each_open_row_once_and_the_block_is_unchanged() -> None:
    rec = ActivityRecorder(block_rows=50, keep=True)
    blocks: list[np.ndarray] = []
    rec.add_sink(blocks.append)
    taken = emitted = 0
    for i in range(120):
        template = (1, 2, 3, i % 7, float(i), 2.0 * i, 0.25, 0.5, 0.0, 1.0)  # a fresh template every op
        rec.record_op(i % 3, 0, i // 10, -1, float(i), i + 0.5, template)
        if i % 7 == 3:  # a poller (the power controller) between block emissions
            open_rows = len(rec.open_buf) // OPEN_ROW_BYTES
            if rec.rows - open_rows != emitted:  # a block was emitted: its rows went to the sinks
                emitted, taken = rec.rows - open_rows, 0
            rows = rec.open_rows(taken)
            taken += len(rows)
            assert np.array_equal(rows["t_start"], np.arange(i + 1 - len(rows), i + 1.0))
            assert len(rec.open_rows(taken)) == 0
    table = rec.table()
    assert np.array_equal(table["flops"], np.arange(120.0))
    assert np.array_equal(table["name"], np.arange(120) % 7)
    assert b"".join(b.tobytes() for b in blocks) == table.tobytes()


def test_polling_from_any_position_of_a_long_open_block() -> None:
    """Many polls between emissions leave the open block in many converted parts; a poll from any row
    (not only the last one taken) returns exactly the rows from there on."""
    rec = ActivityRecorder(block_rows=10_000, keep=False)
    for i in range(300):
        rec.record_op(0, 0, 0, -1, float(i), i + 0.5, (0, 0, 0, 0, float(i), 0.0, 0.0, 0.0, 0.0, 0.0))
        if i % 3 == 0:
            rec.open_rows(i)  # converts what is new: one part per poll
    assert len(rec._converted) > 90
    for first in (0, 1, 2, 3, 150, 151, 298, 299, 300, 400):
        rows = rec.open_rows(first)
        assert np.array_equal(rows["flops"], np.arange(float(min(first, 300)), 300.0)), first
