"""HDF5 trace, format v1 (documented in docs/trace-format.md).

The writer streams the activity table in blocks into a chunked, compressed, resizable dataset of a
temporary file and renames it to ``trace.h5`` only when ``close()`` finishes, so an interrupted run
leaves no partial trace. Blocks are re-cut into whole chunks before they reach HDF5, so every chunk is
compressed exactly once whatever block sizes the caller hands in (a partial chunk written twice would
be decompressed and recompressed). A small per-chunk index (time, class and step ranges) lets readers
skip most of a large trace when they only need a few steps or ranks.

The reader (:func:`open_trace`, :class:`Trace`) checks ``format_version`` and turns truncated, foreign
or unreadable files into one-line :class:`~simcore.errors.TraceError` messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simcore.activity import EVENT_DTYPE, GROUPS, KIND_NAMES, OPS
from simcore.atomic import make_temp_beside
from simcore.errors import TraceError

FORMAT = "racksim-trace"
FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1
EVENT_UNITS = {
    "rank_class": "1",
    "stream": "1",
    "kind": "1",
    "group": "1",
    "op": "1",
    "name": "1",
    "step": "1",
    "micro": "1",
    "t_start": "s",
    "t_end": "s",
    "flops": "FLOP",
    "nbytes": "B",
    "u_tensor": "1",
    "u_hbm": "1",
    "u_scale_up": "1",
    "u_scale_out": "1",
}
EVENT_LONG_NAMES = {
    "rank_class": "rank class index (row of /classes)",
    "stream": "stream index within the class (row of /streams)",
    "kind": "activity kind (index into attribute kind_names)",
    "group": "parallel group of a communication (index into attribute group_names)",
    "op": "operation (index into attribute op_names)",
    "name": "op name (row of /names)",
    "step": "training step",
    "micro": "micro-batch index, -1 when not applicable",
    "t_start": "start time",
    "t_end": "end time",
    "flops": "FLOP executed by one GPU of the class",
    "nbytes": "bytes moved: HBM traffic for compute, payload for communication",
    "u_tensor": "tensor-core utilisation during the interval",
    "u_hbm": "HBM bandwidth utilisation during the interval",
    "u_scale_up": "scale-up link utilisation during the interval",
    "u_scale_out": "scale-out NIC utilisation during the interval",
}
TABLE_UNITS = {
    "classes": {"index": "1", "multiplicity": "GPUs", "first_gpu": "1", "stage": "1"},
    "steps": {"step": "1", "t_end": "s"},
}
TABLE_LONG_NAMES = {
    "classes": {
        "index": "rank class index",
        "multiplicity": "GPUs this simulated class stands for",
        "first_gpu": "global index of the first GPU of the class",
        "stage": "pipeline stage of the class",
    },
    "steps": {"step": "training step", "t_end": "simulated time at which the step ended"},
}
STRING_LONG_NAMES = {
    "names": "op names; events.name indexes this list",
    "class_names": "rank class names; events.rank_class indexes this list",
    "class_places": "physical place of the first GPU of each class (pod/rack/tray/gpu)",
    "streams": "stream names; events.stream indexes this list",
}
# Second axis of 2-D series written by the runner (labels the HDF5 dimension; readers do not need it).
SERIES_AXIS_LABELS = {
    "gpu_w": "class",
    "t_junction_c": "class",
    "clock_factor": "class",
    "clock_cause": "class",
    "throttled_share": "class",
    "rack_w": "rack_type",
    "rack_it_w": "rack_type",
    "coolant_out_c": "rack_type",
}
CHUNK_INDEX_DTYPE = np.dtype(
    [
        ("row_start", np.int64),
        ("rows", np.int64),
        ("t_start_min", np.float64),
        ("t_start_max", np.float64),
        ("t_end_max", np.float64),
        ("class_min", np.int32),
        ("class_max", np.int32),
        ("step_min", np.int32),
        ("step_max", np.int32),
    ]
)
CHUNK_INDEX_UNITS = {
    "row_start": "1",
    "rows": "1",
    "t_start_min": "s",
    "t_start_max": "s",
    "t_end_max": "s",
    "class_min": "1",
    "class_max": "1",
    "step_min": "1",
    "step_max": "1",
}
CHUNK_INDEX_LONG_NAMES = {
    "row_start": "first /events row of the chunk",
    "rows": "rows in the chunk",
    "t_start_min": "earliest event start in the chunk",
    "t_start_max": "latest event start in the chunk",
    "t_end_max": "latest event end in the chunk",
    "class_min": "lowest rank class in the chunk",
    "class_max": "highest rank class in the chunk",
    "step_min": "lowest step in the chunk",
    "step_max": "highest step in the chunk",
}
CHUNK_INDEX_LONG_NAME = "per-chunk ranges of /events, so readers can skip chunks"
_STR = h5py.string_dtype()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("racksim")
    except Exception:  # pragma: no cover - running from a source tree without install
        return "0+unknown"


def _chunk_stats(block: np.ndarray, row_start: int, chunk_rows: int) -> np.ndarray:
    """Index rows for consecutive chunks of ``block`` (which starts on a chunk boundary)."""
    n = len(block)
    starts = np.arange(0, n, chunk_rows)
    out = np.zeros(len(starts), dtype=CHUNK_INDEX_DTYPE)
    out["row_start"] = row_start + starts
    out["rows"] = np.minimum(chunk_rows, n - starts)
    for column, func, col in (
        ("t_start_min", np.minimum, "t_start"),
        ("t_start_max", np.maximum, "t_start"),
        ("t_end_max", np.maximum, "t_end"),
        ("class_min", np.minimum, "rank_class"),
        ("class_max", np.maximum, "rank_class"),
        ("step_min", np.minimum, "step"),
        ("step_max", np.maximum, "step"),
    ):
        out[column] = func.reduceat(block[col], starts)
    return out


class TraceWriter:
    """Streams events into ``<dir>/trace.h5`` via a temporary file; ``close()`` publishes it atomically.

    With gzip (the default) whole chunks are shuffled and deflated on worker threads (zlib releases the
    GIL, so compression overlaps the simulation instead of adding to it) and stored by the calling thread
    with ``write_direct_chunk`` strictly in row order; the other writers store every queued chunk first.
    So the sequence of HDF5 calls never depends on thread timing, and identical runs give byte-identical
    files. Memory is bounded by ``max_pending`` chunks in flight.
    """

    def __init__(
        self,
        target: str | Path,
        *,
        chunk_rows: int = 16384,
        compression: str | None = "gzip",
        level: int = 1,
        background: bool = True,
        max_pending: int = 8,
    ) -> None:
        self.target = Path(target)
        self.tmp = make_temp_beside(self.target)
        self.closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[int, Future[bytes]]] = deque()
        try:
            self.file = h5py.File(self.tmp, "w")
            self._setup(chunk_rows, compression, level, background, max_pending)
        except BaseException:
            self.abort()
            raise

    def _setup(
        self, chunk_rows: int, compression: str | None, level: int, background: bool, max_pending: int
    ) -> None:
        self.file.attrs["format"] = FORMAT
        self.file.attrs["format_version"] = FORMAT_VERSION
        self.file.attrs["racksim_version"] = _version()
        self.file.attrs["complete"] = False
        opts: dict[str, Any] = {}
        if compression is not None:
            opts = {"compression": compression, "shuffle": True}
            if compression == "gzip":
                opts["compression_opts"] = level
        self._opts = opts
        self._level = level
        self.chunk_rows = chunk_rows
        self.events = self.file.create_dataset(
            "events", shape=(0,), maxshape=(None,), dtype=EVENT_DTYPE, chunks=(chunk_rows,), **opts
        )
        self.events.attrs["units"] = json.dumps(EVENT_UNITS)
        self.events.attrs["long_names"] = json.dumps(EVENT_LONG_NAMES)
        self.events.attrs["kind_names"] = json.dumps(KIND_NAMES)
        self.events.attrs["group_names"] = json.dumps(GROUPS)
        self.events.attrs["op_names"] = json.dumps(OPS)
        self.rows = 0  # rows accepted (written + buffered)
        self._written = 0  # rows handed to storage
        self._capacity = 0  # allocated dataset length (grown in large steps, trimmed at close)
        self._buf = np.empty(chunk_rows, dtype=EVENT_DTYPE)
        self._fill = 0
        self._index: list[np.ndarray] = []
        self._direct = compression == "gzip"
        workers = max(1, min(2, os.cpu_count() or 1))
        if background and self._direct:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="racksim-trace")
        self._max_pending = max(1, max_pending)

    # ------------------------------------------------------------------ events
    def append_events(self, block: np.ndarray) -> None:
        """Sink for ActivityRecorder: append one block of rows (any length; the block may be reused)."""
        n = len(block)
        if n == 0:
            return
        if block.dtype != EVENT_DTYPE:
            block = block.astype(EVENT_DTYPE)
        self.rows += n
        pos = 0
        if self._fill:  # top up the open chunk first
            take = min(n, self.chunk_rows - self._fill)
            self._buf[self._fill : self._fill + take] = block[:take]
            self._fill += take
            pos = take
            if self._fill < self.chunk_rows:
                return
            self._write(self._buf)
            self._fill = 0
        while n - pos >= self.chunk_rows:
            self._write(block[pos : pos + self.chunk_rows])
            pos += self.chunk_rows
        rest = n - pos
        if rest:
            self._buf[:rest] = block[pos:]
            self._fill = rest

    def _write(self, rows: np.ndarray) -> None:
        """Queue one chunk (or the final partial chunk) for storage at the end of the dataset."""
        offset = self._written
        self._index.append(_chunk_stats(rows, offset, self.chunk_rows))
        self._written += len(rows)
        if not self._direct:
            self._grow(offset + len(rows))
            self.events[offset : offset + len(rows)] = rows
            return
        if self._pool is None:
            self._put(offset, self._compress(rows))
            return
        self._pending.append((offset, self._pool.submit(self._compress, rows.copy())))
        # store what is ready (always the oldest first); wait only when too much is in flight
        while self._pending and (self._pending[0][1].done() or len(self._pending) > self._max_pending):
            done_offset, fut = self._pending.popleft()
            self._put(done_offset, fut.result())  # re-raises a worker error here

    def _compress(self, rows: np.ndarray) -> bytes:
        """Shuffle + deflate one chunk exactly as HDF5's filters would (pure function, runs on a worker)."""
        if len(rows) < self.chunk_rows:  # the last chunk is stored whole; the extent hides the padding
            full = np.zeros(self.chunk_rows, dtype=EVENT_DTYPE)
            full[: len(rows)] = rows
            rows = full
        raw = rows.view(np.uint8).reshape(len(rows), EVENT_DTYPE.itemsize)
        # HDF5 shuffle filter: byte k of every row together. One numpy copy (it releases the GIL), not a
        # Python loop over the 70 byte columns, so the worker barely competes with the simulating thread.
        shuffled = np.ascontiguousarray(raw.T)
        return zlib.compress(shuffled, self._level)

    def _grow(self, end: int) -> None:
        if end > self._capacity:
            # Grow by at least 1/4 of the current size so resizes stay rare on long runs.
            grow = max(end - self._capacity, self._capacity // 4, 16 * self.chunk_rows)
            self._capacity += -(-grow // self.chunk_rows) * self.chunk_rows
            self.events.resize((self._capacity,))

    def _put(self, offset: int, data: bytes) -> None:
        self._grow(offset + 1)
        self.events.id.write_direct_chunk((offset,), data)

    def _drain(self) -> None:
        """Store every queued chunk (before any other HDF5 call, for a fixed call order)."""
        while self._pending:
            offset, fut = self._pending.popleft()
            self._put(offset, fut.result())

    def _finish_events(self) -> None:
        if self._fill:
            self._write(self._buf[: self._fill])
            self._fill = 0
        self._drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.events.resize((self._written,))
        self._capacity = self._written
        index = np.concatenate(self._index) if self._index else np.zeros(0, dtype=CHUNK_INDEX_DTYPE)
        ds = self.file.create_dataset("event_chunks", data=index)
        ds.attrs["units"] = json.dumps(CHUNK_INDEX_UNITS)
        # `long_names` (JSON, every column) as on every other table; `long_name` kept for existing readers
        ds.attrs["long_names"] = json.dumps(CHUNK_INDEX_LONG_NAMES)
        ds.attrs["long_name"] = CHUNK_INDEX_LONG_NAME

    # ------------------------------------------------------------------ tables
    def write_meta(self, attrs: dict[str, Any], texts: dict[str, str]) -> None:
        """Root attributes (seed, names) and text blobs under /meta (profile YAML, workload YAML...)."""
        self._drain()
        for k, v in attrs.items():
            self.file.attrs[k] = v
        meta = self.file.require_group("meta")
        for k, v in texts.items():
            if k in meta:
                del meta[k]
            meta.create_dataset(k, data=v, dtype=_STR)

    def write_table(self, path: str, table: np.ndarray, units: dict[str, str] | None = None) -> None:
        """A small compound table (class list, topology, steps); every column gets a unit ("1" if none)."""
        self._drain()
        ds = self.file.create_dataset(path, data=table)
        known = TABLE_UNITS.get(path.strip("/"), {})
        names = table.dtype.names or ()
        merged = {n: (units or {}).get(n, known.get(n, "1")) for n in names}
        ds.attrs["units"] = json.dumps(merged)
        long_names = TABLE_LONG_NAMES.get(path.strip("/"))
        if long_names:
            ds.attrs["long_names"] = json.dumps({n: long_names[n] for n in names if n in long_names})

    def write_strings(self, path: str, values: list[str]) -> None:
        """A list of names that an integer column indexes."""
        self._drain()
        ds = self.file.create_dataset(path, data=np.array(values, dtype=object), dtype=_STR)
        long_name = STRING_LONG_NAMES.get(path.strip("/"))
        if long_name:
            ds.attrs["long_name"] = long_name

    def write_series(
        self, group: str, time_s: np.ndarray, series: dict[str, tuple[np.ndarray, str, str]]
    ) -> None:
        """Time series sharing one time axis (a dimension scale): name -> (data [T, ...], units, long_name)."""
        self._drain()
        g = self.file.require_group(group)
        time_s = np.asarray(time_s, dtype=np.float64)
        t = g.create_dataset("time", data=time_s, **self._chunk_opts(len(time_s)))
        t.attrs["units"] = "s"
        t.attrs["long_name"] = "sample time since the start of the run"
        if len(time_s) > 1:
            dt = np.diff(time_s)
            if np.allclose(dt, dt[0], rtol=1e-9, atol=0.0):
                g.attrs["sampling_interval_s"] = float(dt[0])
        t.make_scale("time")
        for name, (data, units, long_name) in series.items():
            data = np.asarray(data)
            if data.shape[:1] != time_s.shape:
                raise ValueError(f"series {group}/{name}: {data.shape[0]} samples but {len(time_s)} times")
            ds = g.create_dataset(name, data=data, **self._chunk_opts(len(data), data.shape[1:]))
            ds.attrs["units"] = units
            ds.attrs["long_name"] = long_name
            ds.dims[0].attach_scale(t)
            ds.dims[0].label = "time"
            if data.ndim == 2 and name in SERIES_AXIS_LABELS:
                ds.dims[1].label = SERIES_AXIS_LABELS[name]

    def _chunk_opts(self, n: int, tail: tuple[int, ...] = ()) -> dict[str, Any]:
        if n == 0:
            return {}
        rows = max(1, min(n, 65536 // max(1, int(np.prod(tail)) if tail else 1)))
        return {"chunks": (rows, *tail), **self._opts}

    # ------------------------------------------------------------------ finish
    def close(self) -> Path:
        """Flush and publish: rename the temporary file to the target."""
        if self.closed:
            return self.target
        try:
            self._finish_events()
            self.file.attrs["event_rows"] = self.rows
            self.file.attrs["complete"] = True
            self.file.close()
            umask = os.umask(0o022)  # mkstemp made the file 0600; give it the mode a plain open() would
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.target)
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return self.target

    def abort(self) -> None:
        """Drop the partial trace (interrupted run)."""
        if self.closed:
            return
        for _offset, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # a chunk being compressed finishes first; nothing more is stored
            self._pool = None
        if hasattr(self, "file"):
            with contextlib.suppress(Exception):
                self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        self.closed = True

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: Any, *_exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------- reading


def open_trace(path: str | Path) -> h5py.File:
    """Open a racksim trace for reading, with clear errors for missing, foreign or newer files."""
    path = Path(path)
    if path.is_dir():
        raise TraceError(f"{path}: a directory, not a trace file (expected a trace.h5)")
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise TraceError(
            f"{path}: not a readable HDF5 file (truncated, still being written, or not HDF5): {reason}"
        ) from None
    try:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT:
            raise TraceError(
                f"{path}: an HDF5 file, but not a racksim trace (no format='{FORMAT}' attribute)"
            )
        version = f.attrs.get("format_version", "0")
        version = version.decode() if isinstance(version, bytes) else str(version)
        head = version.split(".")[0]
        major = int(head) if head.isdigit() else -1
        if major != SUPPORTED_MAJOR:
            raise TraceError(
                f"{path}: trace format version {version} is not supported by this racksim "
                f"(reads {SUPPORTED_MAJOR}.x); upgrade racksim or re-run the simulation"
            )
        if "complete" in f.attrs and not bool(f.attrs["complete"]):
            raise TraceError(f"{path}: the trace was never finished (its run was interrupted); re-run it")
        if "events" not in f:
            raise TraceError(f"{path}: racksim trace without an /events dataset (damaged file)")
    except BaseException:
        f.close()
        raise
    return f


def _strings(f: h5py.File, path: str) -> list[str]:
    if path not in f:
        return []
    return [s.decode() if isinstance(s, bytes) else str(s) for s in f[path][()]]


@dataclass(frozen=True)
class Series:
    """One group of time series (e.g. /timeseries/power): shared time axis and named arrays."""

    time_s: np.ndarray
    data: dict[str, np.ndarray]
    units: dict[str, str]
    long_names: dict[str, str]
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray | None:
        return self.data.get(name)

    def weights_s(self) -> np.ndarray:
        """Duration each sample stands for, for time-weighted means and integrals.

        The group's own ``sample_s`` widths when it has them (the runner writes them: the last control tick
        is split into samples a little shorter or longer than the rest, and the run's energies are
        ``sum(power * sample_s)``). Otherwise each sample owns the span halfway to its neighbours (the outer
        ones as much again outwards), which is exact for evenly spaced samples whether their times are
        interval starts or midpoints.
        """
        t = self.time_s
        width = self.data.get("sample_s")
        if width is not None and width.shape == t.shape and np.all(np.isfinite(width)) and np.all(width >= 0):
            return width
        if len(t) == 0:
            return t
        if len(t) == 1:
            return np.ones(1)
        mid = 0.5 * (t[1:] + t[:-1])
        edges = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
        return np.diff(edges)


def reader_select(block: np.ndarray, fields: Sequence[str]) -> np.ndarray:
    """A packed copy of ``block`` with only ``fields``."""
    out = np.empty(len(block), dtype=_sub_dtype(block.dtype, fields))
    for name in fields:
        out[name] = block[name]
    return out


def _sub_dtype(dtype: np.dtype, fields: Sequence[str] | None) -> np.dtype:
    """Packed dtype holding only ``fields`` (all of ``dtype`` when None)."""
    if fields is None:
        return dtype
    missing = [f for f in fields if f not in (dtype.names or ())]
    if missing:
        raise ValueError(f"events have no column(s) {', '.join(missing)}")
    return np.dtype([(f, dtype.fields[f][0]) for f in fields])


class _EventReader:
    """Reads /events in row ranges; gzip+shuffle chunks are fetched raw and inflated on worker threads.

    h5py holds the GIL while HDF5 inflates a chunk, so plain ``ds[a:b]`` uses one core; ``zlib`` releases
    it, so inflating raw chunks here uses every core and overlaps the caller's work. The shuffle filter
    stores byte k of every row together, so a column is a few contiguous byte rows: reading only the
    columns asked for skips most of the un-shuffling. Any other filter pipeline, an odd chunk layout or a
    first chunk that does not decode to what HDF5 returns falls back to ``ds[a:b]``.
    """

    def __init__(self, path: Path, ds: h5py.Dataset, fields: Sequence[str] | None = None) -> None:
        self.path = path
        self.ds = ds
        self.dtype = ds.dtype
        self.out_dtype = _sub_dtype(self.dtype, fields)
        self.fields = None if fields is None else list(fields)
        # (source byte offset, destination byte offset, size) of every column to copy
        self.copies = [
            (
                self.dtype.fields[name][1],
                self.out_dtype.fields[name][1],
                self.out_dtype.fields[name][0].itemsize,
            )
            for name in (self.out_dtype.names or ())
        ]
        self.chunk = ds.chunks[0] if ds.chunks and len(ds.chunks) == 1 else 0
        self.fast = (
            self.chunk > 0
            and ds.compression == "gzip"
            and bool(ds.shuffle)
            and not ds.fletcher32
            and ds.scaleoffset is None
            and ds.id.get_type().get_size() == self.dtype.itemsize
            and ds.id.get_create_plist().get_nfilters() == 2
        )
        self.pool: ThreadPoolExecutor | None = None
        if self.fast and ds.shape[0] > 0:
            n = min(self.chunk, ds.shape[0])
            try:
                self.fast = np.array_equal(self._chunk(0)[:n], self._select(ds[:n]))
            except Exception:
                self.fast = False
        if self.fast:
            self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))

    def _select(self, block: np.ndarray) -> np.ndarray:
        if self.fields is None:
            return block
        out = np.empty(len(block), dtype=self.out_dtype)
        for name in self.fields:
            out[name] = block[name]
        return out

    def _chunk(
        self, offset: int, out: np.ndarray | None = None, lo: int = 0, hi: int | None = None
    ) -> np.ndarray:
        """Decode one stored chunk; rows ``lo:hi`` of it go to ``out`` (a new array when None)."""
        mask, raw = self.ds.id.read_direct_chunk((offset,))
        if mask != 0:  # a filter was skipped when this chunk was written: let HDF5 decode it
            block = self._select(self.ds[offset : offset + self.chunk])[lo:hi]
            if out is None:
                return block
            out[:] = block
            return out
        size = self.dtype.itemsize
        data = np.frombuffer(zlib.decompress(raw), dtype=np.uint8).reshape(size, -1)[:, lo:hi]
        n = data.shape[1]
        if out is None:
            out = np.empty(n, dtype=self.out_dtype)
        dst = out.view(np.uint8).reshape(n, self.out_dtype.itemsize)
        for src_off, dst_off, width in self.copies:
            for k in range(width):
                dst[:, dst_off + k] = data[src_off + k]
        return out

    def _fill(self, offset: int, a: int, b: int, out: np.ndarray) -> None:
        """Decode the part of the chunk at ``offset`` that lies in rows [a, b) into ``out`` (rows a..b)."""
        lo, hi = max(a - offset, 0), min(b - offset, self.chunk)
        dst = out[offset + lo - a : offset + hi - a]
        try:
            self._chunk(offset, dst, lo, hi)
        except Exception:
            dst[:] = self._select(self.ds[offset + lo : offset + hi])

    def _submit(self, a: int, b: int) -> tuple[np.ndarray, list[Future[None]]]:
        assert self.pool is not None
        out = np.empty(b - a, dtype=self.out_dtype)
        first = a // self.chunk * self.chunk
        return out, [self.pool.submit(self._fill, off, a, b, out) for off in range(first, b, self.chunk)]

    def blocks(self, ranges: list[tuple[int, int]]) -> Iterator[np.ndarray]:
        try:
            if not self.fast:
                for a, b in ranges:
                    yield self._select(self.ds[a:b])
                return
            pending = self._submit(*ranges[0]) if ranges else None
            for i in range(len(ranges)):
                assert pending is not None
                out, futures = pending
                pending = self._submit(*ranges[i + 1]) if i + 1 < len(ranges) else None
                for f in futures:
                    f.result()
                yield out
        except (OSError, ValueError, zlib.error) as exc:
            raise TraceError(f"{self.path}: cannot read events (damaged file?): {exc}") from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class Trace:
    """A trace opened for analysis: small tables loaded eagerly, events read lazily in chunks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file = open_trace(self.path)
        try:
            self._load_tables()
        except TraceError:
            self.file.close()
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self.file.close()
            raise TraceError(f"{self.path}: damaged racksim trace: {exc}") from None

    def _load_tables(self) -> None:
        f = self.file
        self.attrs: dict[str, Any] = {
            k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
            for k, v in f.attrs.items()
        }
        ev = f["events"]
        if ev.dtype.names is None or not {"rank_class", "stream", "kind", "t_start", "t_end"} <= set(
            ev.dtype.names
        ):
            raise TraceError(f"{self.path}: /events does not have the racksim event columns")
        self.n_events = int(ev.shape[0])
        self.kind_names: list[str] = json.loads(ev.attrs.get("kind_names", json.dumps(KIND_NAMES)))
        self.group_names: list[str] = json.loads(ev.attrs.get("group_names", json.dumps(GROUPS)))
        self.op_names: list[str] = json.loads(ev.attrs.get("op_names", json.dumps(OPS)))
        self.names = _strings(f, "names")
        self.streams = _strings(f, "streams")
        self.class_names = _strings(f, "class_names")
        self.class_places = _strings(f, "class_places")
        if "classes" in f:
            classes = f["classes"][()]
            self.multiplicity = np.asarray(classes["multiplicity"], dtype=np.int64)
            self.stage = (
                np.asarray(classes["stage"], dtype=np.int64)
                if "stage" in (classes.dtype.names or ())
                else np.arange(len(classes))
            )
        else:
            n = len(self.class_names)
            self.multiplicity = np.ones(n, dtype=np.int64)
            self.stage = np.arange(n)
        self.n_classes = 0
        self.ensure_classes(max(len(self.multiplicity), len(self.class_names)))
        self.step_ends = (
            np.asarray(f["steps"]["t_end"], dtype=np.float64) if "steps" in f else np.zeros(0, np.float64)
        )
        self.chunk_index = f["event_chunks"][()] if "event_chunks" in f else None

    def ensure_classes(self, n: int) -> None:
        """Make the class tables cover ``n`` classes (a trace without tables gets placeholder names)."""
        if n <= self.n_classes and len(self.multiplicity) >= n:
            return
        self.n_classes = max(self.n_classes, n)
        if len(self.class_names) < self.n_classes:
            self.class_names += [f"class{i}" for i in range(len(self.class_names), self.n_classes)]
        if len(self.class_places) < self.n_classes:
            self.class_places += [""] * (self.n_classes - len(self.class_places))
        if len(self.multiplicity) < self.n_classes:
            pad = self.n_classes - len(self.multiplicity)
            self.multiplicity = np.append(self.multiplicity, np.ones(pad, dtype=np.int64))
            self.stage = np.append(self.stage, np.arange(len(self.stage), self.n_classes))

    # ------------------------------------------------------------------ small helpers
    @property
    def step_bounds(self) -> list[tuple[float, float]]:
        """(start, end) of every step window, the same windows the run's summary used."""
        ends = [float(x) for x in self.step_ends]
        if not ends:
            raise TraceError(f"{self.path}: no /steps table, so no step windows (damaged file); re-run it")
        return list(zip([0.0, *ends[:-1]], ends, strict=True))

    def summary(self) -> dict[str, Any] | None:
        """The run's summary.json as stored in the trace (None for traces without one)."""
        if "meta/summary_json" not in self.file:
            return None
        raw = self.file["meta/summary_json"][()]
        try:
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        except ValueError:
            return None

    def text(self, name: str) -> str | None:
        key = f"meta/{name}"
        if key not in self.file:
            return None
        raw = self.file[key][()]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def name_of(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"op{index}"

    def stream_name(self, index: int) -> str:
        return self.streams[index] if 0 <= index < len(self.streams) else f"stream{index}"

    def series(self, group: str) -> Series | None:
        """Time series under ``/timeseries/<group>`` (e.g. "power", "thermal"); None when absent."""
        key = f"timeseries/{group}"
        if key not in self.file or "time" not in self.file[key]:
            return None
        g = self.file[key]
        try:
            time_s = np.asarray(g["time"][()], dtype=np.float64)
            data: dict[str, np.ndarray] = {}
            units: dict[str, str] = {}
            long_names: dict[str, str] = {}
            attrs: dict[str, dict[str, Any]] = {}
            for name, ds in g.items():
                if name == "time" or not isinstance(ds, h5py.Dataset):
                    continue
                arr = np.asarray(ds[()], dtype=np.float64)
                if arr.shape[:1] != time_s.shape:
                    raise TraceError(
                        f"{self.path}: /{key}/{name} has {arr.shape[0] if arr.ndim else 0} samples "
                        f"but its time axis has {len(time_s)}"
                    )
                data[name] = arr
                u = ds.attrs.get("units", "")
                units[name] = u.decode() if isinstance(u, bytes) else str(u)
                ln = ds.attrs.get("long_name", "")
                long_names[name] = ln.decode() if isinstance(ln, bytes) else str(ln)
                attrs[name] = {
                    k: v
                    for k, v in ds.attrs.items()
                    if k not in ("units", "long_name", "DIMENSION_LIST", "DIMENSION_LABELS", "REFERENCE_LIST")
                }
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot read /{key}: {exc}") from None
        return Series(time_s, data, units, long_names, attrs)

    # ------------------------------------------------------------------ events
    def _row_ranges(
        self, t_lo: float | None, t_hi: float | None, classes: Sequence[int] | None, chunk_rows: int
    ) -> list[tuple[int, int]]:
        """Row ranges that may hold matching events (whole trace when the file has no chunk index)."""
        idx = self.chunk_index
        if idx is None or len(idx) == 0 or int(idx["row_start"][-1] + idx["rows"][-1]) != self.n_events:
            return [(a, min(a + chunk_rows, self.n_events)) for a in range(0, self.n_events, chunk_rows)]
        keep = np.ones(len(idx), dtype=bool)
        if t_hi is not None:
            keep &= idx["t_start_min"] < t_hi
        if t_lo is not None:
            keep &= idx["t_end_max"] > t_lo
        if classes is not None:
            cls = np.asarray(sorted(set(classes)), dtype=np.int64)
            if len(cls) == 0:
                return []
            # a chunk may hold a wanted class if some wanted class lies in [class_min, class_max]
            first = np.searchsorted(cls, idx["class_min"], side="left")
            keep &= (first < len(cls)) & (cls[np.minimum(first, len(cls) - 1)] <= idx["class_max"])
        ranges: list[tuple[int, int]] = []
        for row_start, rows in zip(idx["row_start"][keep], idx["rows"][keep], strict=True):
            a, b = int(row_start), int(row_start + rows)
            if ranges and ranges[-1][1] == a and b - ranges[-1][0] <= chunk_rows:
                ranges[-1] = (ranges[-1][0], b)
            else:
                ranges.append((a, b))
        return ranges

    def iter_events(
        self,
        *,
        t_lo: float | None = None,
        t_hi: float | None = None,
        classes: Sequence[int] | None = None,
        fields: Sequence[str] | None = None,
        chunk_rows: int = 1 << 20,
    ) -> Iterator[np.ndarray]:
        """Event rows in file order, in blocks of about ``chunk_rows``, optionally filtered.

        A row matches the time filter when it overlaps ``[t_lo, t_hi)``; memory stays bounded by the
        block size, so this works on traces far larger than RAM. ``fields`` limits the columns returned
        (much cheaper to decode); the filters need t_start/t_end/rank_class, which are added as needed.
        The next block is read and inflated on worker threads while the caller works on the current one.
        """
        cls = None if classes is None else np.asarray(sorted(set(classes)), dtype=np.int64)
        ranges = self._row_ranges(t_lo, t_hi, classes, chunk_rows)
        read_fields = None
        if fields is not None:
            need = [*fields]
            for name, used in (
                ("t_start", t_hi is not None),
                ("t_end", t_lo is not None),
                ("rank_class", cls is not None),
            ):
                if used and name not in need:
                    need.append(name)
            read_fields = need
        reader = _EventReader(self.path, self.file["events"], read_fields)
        try:
            for block in reader.blocks(ranges):
                mask = None
                if t_hi is not None:
                    mask = block["t_start"] < t_hi
                if t_lo is not None:
                    m = block["t_end"] > t_lo
                    mask = m if mask is None else mask & m
                if cls is not None:
                    m = np.isin(block["rank_class"], cls)
                    mask = m if mask is None else mask & m
                if mask is not None:
                    block = block[mask]
                if fields is not None and len(fields) != len(block.dtype.names or ()):
                    block = reader_select(block, fields)
                if len(block):
                    yield block
        finally:
            reader.close()

    def read_events(self, **filters: Any) -> np.ndarray:
        """All matching events as one array (use :meth:`iter_events` for large traces)."""
        blocks = list(self.iter_events(**filters))
        if blocks:
            return np.concatenate(blocks)
        return np.zeros(0, dtype=_sub_dtype(self.file["events"].dtype, filters.get("fields")))

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- synthetic traces

SYNTH_STREAMS = ("compute", "tp", "pp_send", "pp_recv", "dp")


def synthetic_events(
    n_events: int, n_classes: int = 8, n_steps: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A pipeline-shaped event table of about ``n_events`` rows, built with numpy only.

    For tests and benchmarks of the trace tools (and for trying them without running a simulation).
    Each class (pipeline stage) alternates compute ops with tensor-parallel collectives on the ``tp``
    stream that partly hide under the next compute op, sends activations to the next stage (a send row on
    ``pp_send`` followed by the matching recv row of the next class on ``pp_recv``), and ends each step
    with a data-parallel all-reduce on ``dp``; every stream is sorted and non-overlapping. Returns
    ``(events sorted by start, step end times, names)``.
    """
    from simcore.activity import GROUP_IDS, KIND_COLLECTIVE, KIND_COMPUTE, KIND_RECV, KIND_SEND, OP_IDS

    rng = np.random.default_rng(seed)
    names = ["fwd:layer", "bwd:layer", "tp_allreduce", "dp_allreduce", "pp_send_act"]
    # rows per (class, step): k compute + k tp + p sends + p recvs (counted on the receiver) + 1 dp
    per_cs = max(8, n_events // max(1, n_classes * n_steps))
    p = max(1, per_cs // 16) if n_classes > 1 else 0
    k = max(2, (per_cs - 1 - 2 * p) // 2)
    blocks: list[np.ndarray] = []
    step_ends: list[float] = []
    t0 = 0.0
    for step in range(n_steps):
        dur = rng.uniform(50e-6, 400e-6, size=(n_classes, k))
        gap = np.where(rng.random((n_classes, k)) < 0.1, rng.uniform(0, 200e-6, (n_classes, k)), 0.0)
        lead = np.arange(n_classes)[:, None] * 1e-3  # later stages start later: a pipeline bubble
        ends = t0 + lead + np.cumsum(dur + gap, axis=1)
        starts = ends - dur
        comp = np.zeros((n_classes, k), dtype=EVENT_DTYPE)
        comp["rank_class"] = np.arange(n_classes)[:, None]
        comp["kind"] = KIND_COMPUTE
        comp["op"] = OP_IDS["compute"]
        comp["name"] = np.where(np.arange(k) < k // 2, 0, 1)[None, :]
        comp["t_start"], comp["t_end"] = starts, ends
        comp["flops"] = dur * 8e14
        comp["nbytes"] = dur * 2e12
        comp["u_tensor"], comp["u_hbm"] = 0.8, 0.4
        # tp collective after every compute op, shorter than the next op plus its gap
        nxt = np.concatenate([dur[:, 1:] + gap[:, 1:], np.full((n_classes, 1), 1e-4)], axis=1)
        tp_dur = nxt * rng.uniform(0.3, 0.999, size=(n_classes, k))
        tp = np.zeros((n_classes, k), dtype=EVENT_DTYPE)
        tp["rank_class"] = comp["rank_class"]
        tp["stream"] = 1
        tp["kind"] = KIND_COLLECTIVE
        tp["group"] = GROUP_IDS["tp"]
        tp["op"] = OP_IDS["allreduce"]
        tp["name"] = 2
        tp["t_start"], tp["t_end"] = ends, ends + tp_dur
        tp["nbytes"] = tp_dur * 4e11
        tp["u_hbm"], tp["u_scale_up"] = 0.1, 1.0
        parts = [comp.ravel(), tp.ravel()]
        last_end = np.max(tp["t_end"], axis=1)
        if p and n_classes > 1:
            pick = np.linspace(0, k - 1, p).astype(int)
            s_start = ends[:-1, pick]
            s_dur = np.minimum(30e-6, 0.5 * dur[:-1, np.minimum(pick + 1, k - 1)])
            send = np.zeros((n_classes - 1, p), dtype=EVENT_DTYPE)
            send["rank_class"] = np.arange(n_classes - 1)[:, None]
            send["stream"] = 2
            send["kind"] = KIND_SEND
            send["group"] = GROUP_IDS["pp"]
            send["op"] = OP_IDS["sendrecv"]
            send["name"] = 4
            send["micro"] = np.arange(p)[None, :]
            send["t_start"], send["t_end"] = s_start, s_start + s_dur
            send["nbytes"] = 32 * 2**20
            send["u_scale_out"] = 1.0
            recv = send.copy()
            recv["rank_class"] += 1
            recv["stream"] = 3
            recv["kind"] = KIND_RECV
            pair = np.empty((n_classes - 1, p, 2), dtype=EVENT_DTYPE)
            pair[:, :, 0], pair[:, :, 1] = send, recv
            parts.append(pair.ravel())
            last_end = np.maximum(last_end, np.append(np.max(send["t_end"], axis=1), 0.0))
        dp = np.zeros(n_classes, dtype=EVENT_DTYPE)
        dp_start = float(np.max(last_end))
        dp_dur = rng.uniform(2e-3, 5e-3)
        dp["rank_class"] = np.arange(n_classes)
        dp["stream"] = 4
        dp["kind"] = KIND_COLLECTIVE
        dp["group"] = GROUP_IDS["dp"]
        dp["op"] = OP_IDS["allreduce"]
        dp["name"] = 3
        dp["t_start"], dp["t_end"] = dp_start, dp_start + dp_dur
        dp["nbytes"] = 2e9
        dp["u_scale_out"] = 1.0
        parts.append(dp)
        block = np.concatenate(parts)
        block["step"] = step
        block["micro"] = np.where(block["kind"] >= KIND_SEND, block["micro"], -1)
        blocks.append(block[np.argsort(block["t_start"], kind="stable")])
        t0 = dp_start + dp_dur
        step_ends.append(t0)
    events = np.concatenate(blocks)
    return events, np.asarray(step_ends), names


def write_synthetic_trace(
    path: str | Path,
    n_events: int,
    *,
    n_classes: int = 8,
    n_steps: int = 4,
    racks: int = 2,
    series: bool = True,
    dt_s: float = 1e-3,
    seed: int = 0,
    block_rows: int = 65536,
) -> Path:
    """Write a complete synthetic trace (events, tables and, if asked, power/thermal series)."""
    events, step_ends, names = synthetic_events(n_events, n_classes, n_steps, seed)
    mult = np.full(n_classes, max(1, 72 * racks // max(1, n_classes)), dtype=np.int64)
    with TraceWriter(path) as w:
        for a in range(0, len(events), block_rows):
            w.append_events(events[a : a + block_rows])
        classes = np.zeros(
            n_classes,
            dtype=[
                ("index", np.int32),
                ("multiplicity", np.int64),
                ("first_gpu", np.int64),
                ("stage", np.int32),
            ],
        )
        classes["index"] = np.arange(n_classes)
        classes["multiplicity"] = mult
        classes["first_gpu"] = np.concatenate([[0], np.cumsum(mult)[:-1]])
        classes["stage"] = np.arange(n_classes)
        w.write_table("classes", classes, {"multiplicity": "GPUs"})
        w.write_strings("class_names", [f"stage{i}" for i in range(n_classes)])
        w.write_strings(
            "class_places",
            [f"pod0/rack{(i * racks) // n_classes:02d}/tray{i % 18:02d}/gpu0" for i in range(n_classes)],
        )
        w.write_strings("names", names)
        w.write_strings("streams", list(SYNTH_STREAMS))
        w.write_table(
            "steps",
            np.rec.fromarrays([np.arange(len(step_ends)), step_ends], names="step,t_end"),
            {"t_end": "s"},
        )
        if series:
            _write_synthetic_series(w, events, float(step_ends[-1]), n_classes, racks, mult, dt_s)
        w.write_meta(
            {
                "seed": seed,
                "profile_name": "synthetic",
                "workload_name": "synthetic",
                "fidelity": "representative",
                "gpus": int(mult.sum()),
            },
            {
                "profile_yaml": "",
                "workload_yaml": "",
                "summary_json": json.dumps(
                    {"tokens_per_s": 1e6, "step_time_s": float(step_ends[-1]) / len(step_ends)}
                ),
            },
        )
    return Path(path)


def _write_synthetic_series(
    w: TraceWriter,
    events: np.ndarray,
    horizon: float,
    n_classes: int,
    racks: int,
    mult: np.ndarray,
    dt_s: float,
) -> None:
    """Series in the runner's layout: GPU power follows compute activity; racks of one type; clocks throttle."""
    n = max(2, int(np.ceil(horizon / dt_s)))
    time_s = (np.arange(n) + 0.5) * dt_s  # sample midpoints, as the runner writes them
    comp = events[events["kind"] == 0]
    busy = np.zeros((n_classes, n + 1))
    b0 = np.clip((comp["t_start"] / dt_s).astype(np.int64), 0, n)
    b1 = np.clip((comp["t_end"] / dt_s).astype(np.int64), 0, n)
    np.add.at(busy, (comp["rank_class"], b0), 1.0)
    np.add.at(busy, (comp["rank_class"], b1), -1.0)
    util = np.clip(np.cumsum(busy, axis=1)[:, :n], 0.0, 1.0)
    gpu_w = (150.0 + 850.0 * util).T  # [T, classes], W per GPU
    # one rack type: every rack holds the same mix of classes
    gpus_per_rack = float(mult.sum()) / racks
    rack_it_w = (gpu_w @ mult / racks * 1.25 + 2.0e3)[:, None]  # GPUs + CPUs, NICs, switches, fans
    rack_w = rack_it_w / 0.95  # PSU + distribution losses
    it_w = rack_w[:, 0] * racks
    cooling_w = 0.08 * it_w + 1.0e3
    facility_w = it_w + cooling_w + 0.02 * it_w
    grid_w = facility_w * 0.98 + 0.02 * np.mean(facility_w)  # a little smoothing
    tj = 35.0 + 0.045 * gpu_w
    clock = np.where(tj > 73.0, 0.9, 1.0)
    w.write_series(
        "timeseries/power",
        time_s,
        {
            "gpu_w": (gpu_w, "W", "power of one GPU of each rank class"),
            "rack_w": (rack_w, "W", "input power of one rack of each rack type"),
            "rack_it_w": (rack_it_w, "W", "IT load of one rack of each rack type (before PSUs)"),
            "it_w": (it_w, "W", "IT power of all racks of the job"),
            "cooling_w": (cooling_w, "W", "facility cooling power"),
            "facility_w": (facility_w, "W", "facility power (IT + cooling + other overhead)"),
            "grid_w": (grid_w, "W", "facility draw after smoothing and storage"),
        },
    )
    w.file["timeseries/power/rack_w"].attrs["racks_per_type"] = np.array([racks], dtype=np.int64)
    w.write_series(
        "timeseries/thermal",
        time_s,
        {
            "t_junction_c": (tj, "degC", "GPU junction temperature of each rank class"),
            "clock_factor": (clock, "1", "GPU clock as a fraction of max clock"),
            "coolant_out_c": (
                25.0 + 7.0 * rack_it_w / (gpus_per_rack * 1.3e3),
                "degC",
                "coolant outlet of each rack type",
            ),
        },
    )
