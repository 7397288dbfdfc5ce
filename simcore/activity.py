"""Activity recorder: every op the engine runs becomes one row of a structured numpy array.

Rows live in fixed-size blocks (so a 10-million-event run never holds one giant Python list) and
are handed to sinks (the HDF5 trace writer, the power controller) as blocks fill. Columns carry the
per-channel utilisation levels the power model needs, so power never has to re-derive them.
"""

from __future__ import annotations

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


class ActivityRecorder:
    """Append-only event table in blocks, with a name table and block sinks."""

    def __init__(self, block_rows: int = BLOCK_ROWS, keep: bool = True) -> None:
        self.block_rows = block_rows
        self.keep = keep
        self._block = np.zeros(block_rows, dtype=EVENT_DTYPE)
        self._fill = 0
        self._blocks: list[np.ndarray] = []
        self._sinks: list[Callable[[np.ndarray], None]] = []
        self.names: list[str] = []
        self._name_ids: dict[str, int] = {}
        self.rows = 0

    def add_sink(self, sink: Callable[[np.ndarray], None]) -> None:
        """Call ``sink(block)`` with every full block (and the last partial one at ``flush``)."""
        self._sinks.append(sink)

    def name_id(self, name: str) -> int:
        nid = self._name_ids.get(name)
        if nid is None:
            nid = self._name_ids[name] = len(self.names)
            self.names.append(name)
        return nid

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
        self._block[self._fill] = (
            rank_class,
            stream,
            kind,
            group,
            op,
            name_id,
            step,
            micro,
            t_start,
            t_end,
            flops,
            nbytes,
            u_tensor,
            u_hbm,
            u_scale_up,
            u_scale_out,
        )
        self._fill += 1
        self.rows += 1
        if self._fill == self.block_rows:
            self._emit()

    def _emit(self) -> None:
        block = self._block[: self._fill].copy()
        for sink in self._sinks:
            sink(block)
        if self.keep:
            self._blocks.append(block)
        self._fill = 0

    def open_rows(self) -> np.ndarray:
        """View of the rows recorded since the last emitted block (for consumers that poll)."""
        return self._block[: self._fill]

    def flush(self) -> None:
        if self._fill:
            self._emit()

    def table(self) -> np.ndarray:
        """All kept rows as one array (flushes the open block first)."""
        self.flush()
        if not self._blocks:
            return np.zeros(0, dtype=EVENT_DTYPE)
        if len(self._blocks) > 1:
            self._blocks = [np.concatenate(self._blocks)]
        return self._blocks[0]
