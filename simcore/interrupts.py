"""Ctrl-C that cannot be lost.

Python delivers SIGINT as a KeyboardInterrupt wherever the main thread happens to be; raised inside a
finalizer or a weakref callback (h5py, numpy and simpy objects die all the time during a run) it is printed
as "Exception ignored" and dropped, and the run would go on to write complete outputs as if nobody had
asked it to stop. Raised inside a callback from compiled code (numba's dispatcher unpickling a cached
kernel) it comes out as a SystemError whose cause is the KeyboardInterrupt. The handler installed here raises
as usual and also counts the request, so a run checks, before it writes anything, whether one arrived since
it started, and the CLI reads any exception that follows a counted request as the interrupt it is.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

_requests = 0


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _requests
    _requests += 1
    raise KeyboardInterrupt


def install() -> Callable[..., Any] | int | None:
    """Route SIGINT through the counting handler and return the handler it replaces. Only Python's default
    one is replaced (an ignored SIGINT or a caller's own handler is left alone), only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    return previous


def restore(previous: Callable[..., Any] | int | None) -> None:
    """Put back what ``install`` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous)


def mark() -> int:
    """The request count now: take it when a run starts."""
    return _requests


def requested_since(since: int) -> bool:
    """Whether Ctrl-C was pressed after ``mark()`` returned ``since``."""
    return _requests != since


def raise_if_requested(since: int) -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed after ``mark()`` returned ``since``, even if the
    KeyboardInterrupt it raised was swallowed."""
    if requested_since(since):
        raise KeyboardInterrupt


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold Ctrl-C while the block runs and deliver it to the usual handler afterwards: for a few renames that
    publish outputs belonging together, where an interrupt between two would keep some and not the others.
    Outside the main thread, or under a handler not set from Python, the block runs as it is."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)  # now: counted and raised (or ignored) as it would have been
