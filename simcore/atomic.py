"""Atomic output: write to a temporary file beside the target, then rename over it.

An interrupted run (Ctrl-C, crash, power loss) leaves either the old file or the new one, never a
half-written one; the temporary file is removed on any exception.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from simcore import interrupts


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it to ``target`` on success."""
    target = Path(target)
    tmp_path = _temp_beside(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_paths(targets: Sequence[str | Path], remove: Sequence[str | Path] = ()) -> Iterator[list[Path]]:
    """:func:`atomic_path` for outputs that belong together (a plot's PNGs): yield a temporary path for
    each target; when the block succeeds rename them all with Ctrl-C held, so an interrupted command leaves
    all of them or none, never the first few beside an earlier run's others. ``remove``: files of the same
    set an earlier run wrote and this one does not, deleted in the same held step."""
    targets = [Path(t) for t in targets]
    tmps: list[Path] = []
    try:
        for target in targets:
            tmps.append(_temp_beside(target))
        yield list(tmps)
        with interrupts.held():
            for tmp, target in zip(tmps, targets, strict=True):
                os.replace(tmp, target)
            for stale in remove:
                Path(stale).unlink(missing_ok=True)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def _temp_beside(target: Path) -> Path:
    """An empty temporary file in ``target``'s directory (made if missing), with the usual file mode."""
    if target.is_dir():  # say so about the path the user gave, not about the temporary file
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    tmp_path = make_temp_beside(target)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs should get the usual file mode
    except BaseException:  # an interrupt right here must not leave the file behind either
        tmp_path.unlink(missing_ok=True)
        raise
    return tmp_path


def make_temp_beside(target: Path) -> Path:
    """Create an empty ``.<name>.<random>.tmp`` in ``target``'s directory (made if missing) and return its
    path. When it cannot be made (a read-only directory, ``/proc``) the error names ``target``, the path the
    user gave, not the random name they never saw."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    os.close(fd)
    return Path(tmp)


def write_json(target: str | Path, data: Any) -> None:
    """Write JSON atomically (sorted keys, so identical runs give identical bytes)."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def new_run_dir(prefix: str = "", root: str | Path = "runs") -> Path:
    """Create and return a fresh ``root/<prefix><YYYYmmdd-HHMMSS>`` directory, suffixed ``-2``, ``-3`` ...
    when that name is taken: runs started in the same second (parallel shells, a sweep script) must not
    write into, and overwrite, each other's outputs. ``mkdir`` without ``exist_ok`` is the atomic claim."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{prefix}{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, n = root / stem, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = root / f"{stem}-{n}"


def discard_if_empty(path: str | Path) -> None:
    """Remove a claimed output directory again if nothing was written into it (``rmdir`` refuses a
    non-empty one): a run that fails before its first output leaves no empty folder behind."""
    with contextlib.suppress(OSError):
        Path(path).rmdir()


@contextlib.contextmanager
def output_dir(out: str | Path | None, prefix: str = "") -> Iterator[Path]:
    """``out`` as given, or a fresh :func:`new_run_dir` that is discarded if the block fails before
    writing anything into it."""
    if out is not None:
        yield Path(out)
        return
    path = new_run_dir(prefix)
    try:
        yield path
    except BaseException:
        discard_if_empty(path)
        raise
