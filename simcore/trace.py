"""HDF5 trace, format v1 (documented in docs/trace-format.md).

The writer streams the activity table in blocks into a chunked, compressed, resizable dataset of a
temporary file and renames it to ``trace.h5`` only when ``close()`` finishes, so an interrupted run
leaves no partial trace. The reader checks ``format_version`` and gives a clear error for truncated or
foreign files.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simcore.activity import EVENT_DTYPE, GROUPS, KIND_NAMES, OPS
from simcore.errors import TraceError

FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1
EVENT_UNITS = {
    "t_start": "s",
    "t_end": "s",
    "flops": "FLOP",
    "nbytes": "B",
    "u_tensor": "1",
    "u_hbm": "1",
    "u_scale_up": "1",
    "u_scale_out": "1",
}
_STR = h5py.string_dtype()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("racksim")
    except Exception:  # pragma: no cover - running from a source tree without install
        return "0+unknown"


class TraceWriter:
    """Streams events into ``<dir>/trace.h5`` via a temporary file; ``close()`` publishes it atomically."""

    def __init__(self, target: str | Path, *, chunk_rows: int = 65536, compression: str = "gzip") -> None:
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.file = h5py.File(self.tmp, "w")
        self.file.attrs["format"] = "racksim-trace"
        self.file.attrs["format_version"] = FORMAT_VERSION
        self.file.attrs["racksim_version"] = _version()
        opts: dict[str, Any] = {"compression": compression, "shuffle": True}
        if compression == "gzip":
            opts["compression_opts"] = 4
        self._opts = opts
        self.events = self.file.create_dataset(
            "events", shape=(0,), maxshape=(None,), dtype=EVENT_DTYPE, chunks=(chunk_rows,), **opts
        )
        self.events.attrs["units"] = json.dumps(EVENT_UNITS)
        self.events.attrs["kind_names"] = json.dumps(KIND_NAMES)
        self.events.attrs["group_names"] = json.dumps(GROUPS)
        self.events.attrs["op_names"] = json.dumps(OPS)
        self.rows = 0
        self.closed = False

    def append_events(self, block: np.ndarray) -> None:
        """Sink for ActivityRecorder: append one block of rows."""
        n = len(block)
        if n == 0:
            return
        self.events.resize((self.rows + n,))
        self.events[self.rows : self.rows + n] = block
        self.rows += n

    def write_meta(self, attrs: dict[str, Any], texts: dict[str, str]) -> None:
        """Root attributes (seed, names) and text blobs under /meta (profile YAML, workload YAML...)."""
        for k, v in attrs.items():
            self.file.attrs[k] = v
        meta = self.file.require_group("meta")
        for k, v in texts.items():
            if k in meta:
                del meta[k]
            meta.create_dataset(k, data=v, dtype=_STR)

    def write_table(self, path: str, table: np.ndarray, units: dict[str, str] | None = None) -> None:
        """A small compound table (class list, topology, steps)."""
        ds = self.file.create_dataset(path, data=table)
        ds.attrs["units"] = json.dumps(units or {})

    def write_strings(self, path: str, values: list[str]) -> None:
        self.file.create_dataset(path, data=np.array(values, dtype=object), dtype=_STR)

    def write_series(
        self, group: str, time_s: np.ndarray, series: dict[str, tuple[np.ndarray, str, str]]
    ) -> None:
        """Time series sharing one time axis (a dimension scale): name -> (data [T, ...], units, long_name)."""
        g = self.file.require_group(group)
        t = g.create_dataset(
            "time", data=np.asarray(time_s, dtype=np.float64), **self._chunk_opts(len(time_s))
        )
        t.attrs["units"] = "s"
        t.make_scale("time")
        for name, (data, units, long_name) in series.items():
            data = np.asarray(data)
            ds = g.create_dataset(name, data=data, **self._chunk_opts(len(data), data.shape[1:]))
            ds.attrs["units"] = units
            ds.attrs["long_name"] = long_name
            ds.dims[0].attach_scale(t)

    def _chunk_opts(self, n: int, tail: tuple[int, ...] = ()) -> dict[str, Any]:
        if n == 0:
            return {}
        rows = max(1, min(n, 65536 // max(1, int(np.prod(tail)) if tail else 1)))
        return {"chunks": (rows, *tail), **self._opts}

    def close(self) -> Path:
        """Flush and publish: rename the temporary file to the target."""
        if self.closed:
            return self.target
        self.file.attrs["event_rows"] = self.rows
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.tmp, self.target)
        self.closed = True
        return self.target

    def abort(self) -> None:
        """Drop the partial trace (interrupted run)."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        self.closed = True


def open_trace(path: str | Path) -> h5py.File:
    """Open a racksim trace for reading, with clear errors for missing, foreign or newer files."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise TraceError(f"{path}: not a readable HDF5 file (truncated or not HDF5): {exc}") from None
    if f.attrs.get("format") != "racksim-trace":
        f.close()
        raise TraceError(
            f"{path}: an HDF5 file, but not a racksim trace (no format='racksim-trace' attribute)"
        )
    version = str(f.attrs.get("format_version", "0"))
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else -1
    if major != SUPPORTED_MAJOR:
        f.close()
        raise TraceError(
            f"{path}: trace format version {version} is not supported by this racksim "
            f"(reads {SUPPORTED_MAJOR}.x); upgrade racksim or re-run the simulation"
        )
    return f
