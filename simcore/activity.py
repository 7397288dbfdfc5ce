"""Activity recorder: every op the engine runs becomes one row of a structured numpy array.

Rows live in fixed-size blocks (so a 10-million-event run never holds one giant Python list) and
are handed to sinks (the HDF5 trace writer, the power controller) as blocks fill. Columns carry the
per-channel utilisation levels the power model needs, so power never has to re-derive them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

# What kind of activity a row is.
KIND_COMPUTE, KIND_COLLECTIVE, KIND_SEND, KIND_RECV, KIND_WAIT = 0, 1, 2, 3, 4
KIND_NAMES = ("compute", "collective", "send", "recv", "wait")

# Which parallel group a communication row belongs to.
GROUPS = ("none", "tp", "cp", "ep", "dp", "pp", "other")
GROUP_IDS = {g: i for i, g in enumerate(GROUPS)}

OPS = (
    "compute",
    "allreduce",
    "reducescatter",
    "allgather",
    "alltoall",
    "alltoallv",
    "broadcast",
    "reduce",
    "sendrecv",
    "barrier",
    "optimizer",
    "checkpoint",
)
OP_IDS = {o: i for i, o in enumerate(OPS)}

EVENT_DTYPE = np.dtype(
    [
        ("rank_class", np.int32),  # simulated rank class (or rank in full fidelity)
        ("stream", np.int16),  # stream index within the class
        ("kind", np.int8),  # KIND_*
        ("group", np.int8),  # GROUP_IDS
        ("op", np.int16),  # OP_IDS
        ("name", np.int32),  # index into the name table
        ("step", np.int32),
        ("micro", np.int32),  # micro-batch index (-1 when not applicable)
        ("t_start", np.float64),  # s
        ("t_end", np.float64),  # s
        ("flops", np.float64),  # FLOP executed by one GPU of the class
        ("nbytes", np.float64),  # bytes moved (HBM for compute, payload for communication)
        ("u_tensor", np.float32),  # tensor-core utilisation during the interval, 0..1
        ("u_hbm", np.float32),  # HBM bandwidth utilisation, 0..1
        ("u_scale_up", np.float32),  # scale-up link utilisation, 0..1
        ("u_scale_out", np.float32),  # NIC utilisation, 0..1
    ]
)

BLOCK_ROWS = 65536
_FEW_ROWS = 16  # open rows converted one by one below this many (ActivityRecorder._convert_few)


# A row is split into the part that changes every op (who, where, when) and a template of what the op
# is (kind, group, op, name, flops, bytes, utilisations), which repeats: the engine memoises templates, so
# recording an op packs its varying part (plus a template id) onto a byte buffer in the record layout,
# and a block becomes numpy with no per-row conversion at all.
VARYING_FIELDS = ("rank_class", "stream", "step", "micro", "t_start", "t_end")
TEMPLATE_FIELDS = (
    "kind",
    "group",
    "op",
    "name",
    "flops",
    "nbytes",
    "u_tensor",
    "u_hbm",
    "u_scale_up",
    "u_scale_out",
)
Template = tuple[int, int, int, int, float, float, float, float, float, float]
# Open rows convert straight into these record layouts (the event's own field types): one pass per part.
_VARYING_DTYPE = np.dtype([(f, EVENT_DTYPE[f]) for f in VARYING_FIELDS] + [("template", np.int64)])
_TEMPLATE_DTYPE = np.dtype([(f, EVENT_DTYPE[f]) for f in TEMPLATE_FIELDS])


def _struct_of(dtype: np.dtype) -> struct.Struct:
    """The ``struct`` layout of a packed native-order structured dtype (byte for byte the same record:
    ``=`` is native byte order with standard sizes and no padding, as numpy's packed dtypes)."""
    codes = {"i1": "b", "i2": "h", "i4": "i", "i8": "q", "f4": "f", "f8": "d"}
    fmt = "=" + "".join(codes[dtype[name].str.lstrip("<>|=")] for name in dtype.names)
    packer = struct.Struct(fmt)
    if packer.size != dtype.itemsize:  # pragma: no cover - a dtype with padding or an unmapped type
        raise TypeError(f"{dtype} has no packed struct layout ({fmt})")
    return packer


def _byte_runs(source: np.dtype, fields: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    """(source offset, event offset, width) of each run of ``fields`` that lies contiguously, in the same
    order, in both ``source`` and EVENT_DTYPE: a block is assembled by copying these byte runs, a handful
    of wide copies instead of one strided copy per field."""
    runs: list[tuple[int, int, int]] = []
    for name in EVENT_DTYPE.names:
        if name not in fields:
            continue
        src, dst, width = source.fields[name][1], EVENT_DTYPE.fields[name][1], EVENT_DTYPE[name].itemsize
        if runs and runs[-1][0] + runs[-1][2] == src and runs[-1][1] + runs[-1][2] == dst:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + width)
        else:
            runs.append((src, dst, width))
    return tuple(runs)


_VARYING_RUNS = _byte_runs(_VARYING_DTYPE, VARYING_FIELDS)
_TEMPLATE_RUNS = _byte_runs(_TEMPLATE_DTYPE, TEMPLATE_FIELDS)


def _bytes_at(records: np.ndarray, offset: int, width: int) -> np.ndarray:
    """The ``width`` bytes at ``offset`` of every record, as one opaque (void) item per record."""
    return np.ndarray(
        len(records), dtype=f"V{width}", buffer=records, offset=offset, strides=(records.dtype.itemsize,)
    )


def _copy_runs(dst: np.ndarray, src: np.ndarray, runs: tuple[tuple[int, int, int], ...]) -> None:
    for src_offset, dst_offset, width in runs:
        _bytes_at(dst, dst_offset, width)[...] = _bytes_at(src, src_offset, width)


_OPEN_ROW = _struct_of(_VARYING_DTYPE)
OPEN_ROW_BYTES = _OPEN_ROW.size
pack_open_row = _OPEN_ROW.pack  # (rank_class, stream, step, micro, t_start, t_end, template id) -> bytes


class ActivityRecorder:
    """Append-only event table in blocks, with a name table and block sinks."""

    def __init__(self, block_rows: int = BLOCK_ROWS, keep: bool = True) -> None:
        self.block_rows = block_rows
        self.keep = keep
        # Open rows: the varying part + a template id, packed by ``pack_open_row``. The bytearray object
        # never changes (the engine appends to it in place); never export a buffer of it (it must resize).
        self.open_buf = bytearray()
        self.block_bytes = block_rows * OPEN_ROW_BYTES
        self._kept: list[Template] = []  # templates for the recorder's lifetime (ids 0, 1, ...)
        self._kept_ids: dict[Template, int] = {}  # template value -> its id in _kept
        self._kept_records = _Records()  # _kept as records, converted once each
        self._local_records = _Records()  # this block's templates as records
        self._templates: list[Template] = []  # this block's other templates (ids -1, -2, ...)
        self._template_ids: dict[int, int] = {}  # id(template) -> id (templates stay alive in the list)
        self._converted: list[np.ndarray] = []  # the open rows converted so far (by pollers), in order
        self._converted_rows = 0
        self._blocks: list[np.ndarray] = []
        self._sinks: list[Callable[[np.ndarray], None]] = []
        self.names: list[str] = []
        self._name_ids: dict[str, int] = {}
        self._emitted = 0

    @property
    def rows(self) -> int:
        """Rows recorded so far (emitted and open)."""
        return self._emitted + len(self.open_buf) // OPEN_ROW_BYTES

    def add_sink(self, sink: Callable[[np.ndarray], None]) -> None:
        """Call ``sink(block)`` with every full block (and the last partial one at ``flush``)."""
        self._sinks.append(sink)

    def name_id(self, name: str) -> int:
        nid = self._name_ids.get(name)
        if nid is None:
            nid = self._name_ids[name] = len(self.names)
            self.names.append(name)
        return nid

    def keep_template(self, template: Template) -> int:
        """Register a template for the recorder's lifetime (once per distinct value); rows appended to
        ``open_buf`` refer to it by the returned id (the engine's memoised compute ops take this path)."""
        tid = self._kept_ids.get(template)
        if tid is None:
            tid = self._kept_ids[template] = len(self._kept)
            self._kept.append(template)
        return tid

    def record_op(
        self,
        rank_class: int,
        stream: int,
        step: int,
        micro: int,
        t_start: float,
        t_end: float,
        template: Template,
    ) -> None:
        """One op whose constant part is ``template`` (a tuple object reused for repeated ops is stored
        once per block)."""
        tid = self._template_ids.get(id(template))
        if tid is None:
            self._templates.append(template)
            tid = self._template_ids[id(template)] = -len(self._templates)
        # struct refuses a float where an integer goes (numpy's conversion truncated it): convert here
        self.open_buf += pack_open_row(
            int(rank_class), int(stream), int(step), int(micro), float(t_start), float(t_end), tid
        )
        if len(self.open_buf) >= self.block_bytes:
            self.emit()

    def record(
        self,
        rank_class: int,
        stream: int,
        kind: int,
        group: int,
        op: int,
        name_id: int,
        step: int,
        micro: int,
        t_start: float,
        t_end: float,
        flops: float,
        nbytes: float,
        u_tensor: float,
        u_hbm: float,
        u_scale_up: float,
        u_scale_out: float,
    ) -> None:
        """One row given field by field (convenient, slower than ``record_op``)."""
        template = (kind, group, op, name_id, flops, nbytes, u_tensor, u_hbm, u_scale_up, u_scale_out)
        self.record_op(rank_class, stream, step, micro, t_start, t_end, template)

    def _convert(self, packed: bytes | bytearray) -> np.ndarray:
        """Packed open rows (varying part + template id) as a structured array, in one vectorised pass (a
        few rows, as a poller takes each tick, row by row: the vectorised pass costs tens of numpy calls)."""
        if 0 < len(packed) <= _FEW_ROWS * OPEN_ROW_BYTES:
            return self._convert_few(packed)
        varying = np.frombuffer(packed, dtype=_VARYING_DTYPE)
        n = len(varying)
        block = np.empty(n, dtype=EVENT_DTYPE)
        if n == 0:
            return block
        _copy_runs(block, varying, _VARYING_RUNS)
        # ids >= 0 index the kept templates, ids < 0 this block's (-1 is the first); each template is
        # converted once
        kept_table = self._kept_records.extend(self._kept)
        tid = varying["template"]
        local = tid < 0
        if local.any():  # gather from both tables (never concatenate them: the kept one only grows)
            local_table = self._local_records.extend(self._templates)
            values = np.empty(n, dtype=_TEMPLATE_DTYPE)
            kept = ~local
            values[kept] = kept_table.take(tid[kept])
            values[local] = local_table.take(-1 - tid[local])
        else:
            values = kept_table.take(tid)
        _copy_runs(block, values, _TEMPLATE_RUNS)
        return block

    def _convert_few(self, packed: bytes | bytearray) -> np.ndarray:
        """``_convert`` of a few rows: each row's fields in EVENT_DTYPE order, converted by numpy as the
        vectorised pass converts them (the same values, bit for bit)."""
        kept, local = self._kept, self._templates
        rows = []
        for rank_class, stream, step, micro, t_start, t_end, tid in _OPEN_ROW.iter_unpack(packed):
            template = kept[tid] if tid >= 0 else local[-1 - tid]
            kind, group, op, name, flops, nbytes, u_t, u_m, u_up, u_out = template
            rows.append((rank_class, stream, kind, group, op, name, step, micro, t_start, t_end, flops, nbytes,
                         u_t, u_m, u_up, u_out))  # fmt: skip
        return np.array(rows, dtype=EVENT_DTYPE)

    def _convert_open(self) -> None:
        """Convert the open rows not converted yet (each row is converted exactly once)."""
        done = self._converted_rows * OPEN_ROW_BYTES
        if len(self.open_buf) > done:
            self._converted.append(self._convert(self.open_buf[done:]))  # a slice is a copy: no export
            self._converted_rows = len(self.open_buf) // OPEN_ROW_BYTES

    def emit(self) -> None:
        """Hand the open rows to the sinks as one block."""
        parts = self._converted
        if len(parts) > 1:  # many small parts (a poller took a few rows per tick): converting the block
            # again is one pass, concatenating them costs a dtype promotion per part (seconds per block)
            block = self._convert(bytes(self.open_buf))
        else:
            self._convert_open()
            block = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else self._convert(b"")
        self._emitted += len(block)
        del self.open_buf[:]
        self._converted, self._converted_rows = [], 0
        self._templates = []
        self._local_records.clear()
        self._template_ids = {}
        for sink in self._sinks:
            sink(block)
        if self.keep:
            self._blocks.append(block)

    def open_rows(self, first: int = 0) -> np.ndarray:
        """The rows recorded since the last emitted block, from the ``first``-th on (for consumers that
        poll: pass how many they already took; converted rows are kept, so polling costs no extra work)."""
        self._convert_open()
        # Walk back from the newest part: a poller asks for the last few parts, while a long open block
        # (a slow serving run emits rarely) holds thousands of them.
        out, end = [], self._converted_rows
        for part in reversed(self._converted):
            if end <= first:
                break
            start = end - len(part)
            out.append(part[max(0, first - start) :])
            end = start
        if not out:
            return np.zeros(0, dtype=EVENT_DTYPE)
        return out[0] if len(out) == 1 else np.concatenate(out[::-1])

    def flush(self) -> None:
        if self.open_buf:
            self.emit()

    def table(self) -> np.ndarray:
        """All kept rows as one array (flushes the open block first)."""
        self.flush()
        if not self._blocks:
            return np.zeros(0, dtype=EVENT_DTYPE)
        if len(self._blocks) > 1:
            self._blocks = [np.concatenate(self._blocks)]
        return self._blocks[0]


class _Records:
    """Templates converted to records, each once, in a buffer that grows by doubling (pollers convert a
    few new templates per tick; re-copying everything each time would be quadratic)."""

    def __init__(self) -> None:
        self._buf = np.zeros(256, dtype=_TEMPLATE_DTYPE)
        self._n = 0

    def extend(self, templates: list[Template]) -> np.ndarray:
        """The records of all ``templates`` (the first ones converted already)."""
        total = len(templates)
        if total > self._n:
            if total > len(self._buf):
                grown = np.zeros(max(total, 2 * len(self._buf)), dtype=_TEMPLATE_DTYPE)
                grown[: self._n] = self._buf[: self._n]
                self._buf = grown
            self._buf[self._n : total] = np.fromiter(
                templates[self._n :], dtype=_TEMPLATE_DTYPE, count=total - self._n
            )
            self._n = total
        return self._buf[: self._n]

    def clear(self) -> None:
        self._n = 0
