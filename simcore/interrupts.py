"""Ctrl-C that cannot be lost.

Python delivers SIGINT as a KeyboardInterrupt wherever the main thread happens to be; raised inside a
finalizer or a weakref callback (h5py, numpy and simpy objects die all the time during a run) it is printed
as "Exception ignored" and dropped, and the run would go on to write complete outputs as if nobody had
asked it to stop. The handler installed here raises as usual and also remembers the request, so the run
checks once more before it writes anything.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_requested = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through the remembering handler (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even if the first one was swallowed."""
    if _requested:
        raise KeyboardInterrupt


def reset() -> None:
    """Forget a past request (tests; a long-lived process that handled it)."""
    global _requested
    _requested = False
