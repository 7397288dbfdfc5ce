"""Ctrl-C (and SIGTERM) that cannot be lost.

Python delivers SIGINT as a KeyboardInterrupt wherever the main thread happens to be; raised inside a
finalizer or a weakref callback (h5py, numpy and simpy objects die all the time during a run) it is printed
as "Exception ignored" and dropped, and the run would go on to write complete outputs as if nobody had
asked it to stop. Raised inside a callback from compiled code (numba's dispatcher unpickling a cached
kernel) it comes out as a SystemError whose cause is the KeyboardInterrupt. The handler installed here raises
as usual and also counts the request, so a run checks, before it writes anything, whether one arrived since
it started, and the CLI reads any exception that follows a counted request as the interrupt it is.

SIGTERM (what ``timeout``, ``kill`` and job schedulers such as Slurm send) takes the same path: its default
action would end the process on the spot and leave the temporary files of the outputs being written. It is
counted and raised as a KeyboardInterrupt like Ctrl-C, and the CLI exits with 128 + the signal's number (130
for SIGINT, 143 for SIGTERM). Worker processes forked from the CLI (sweep, validate) inherit the handlers;
``worker_signals`` puts SIGTERM back to its default there, so a pool can end its workers with it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

_requests = 0
_last_signal = int(signal.SIGINT)  # the signal of the latest counted request
HANDLED = (signal.SIGINT, signal.SIGTERM)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _requests, _last_signal
    _requests += 1
    _last_signal = signum
    raise KeyboardInterrupt


def install() -> Callable[..., Any] | int | None:
    """Route SIGINT and SIGTERM through the counting handler and return the SIGINT handler it replaces. Only
    Python's defaults are replaced (an ignored signal or a caller's own handler is left alone), only in the
    main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_signal)
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)
    return previous


def restore(previous: Callable[..., Any] | int | None) -> None:
    """Put back what ``install`` replaced."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_signal:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def worker_signals() -> None:
    """For a pool's worker process (its initializer): ignore SIGINT (a terminal sends it to every process of
    the command; the parent stops the workers itself) and let SIGTERM end the worker at once, as the pool
    and a job scheduler expect (the handler a forked worker inherits would only end its current task)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_workers(pool: Any) -> None:
    """Cancel the tasks still queued on a ``ProcessPoolExecutor`` made with ``initializer=worker_signals`` and
    end the running ones now (Ctrl-C, SIGTERM). ``shutdown(cancel_futures=True)`` cannot cancel the few
    already handed to the workers, and waiting for them would keep the user a task's run time (a sweep's
    point would also leave outputs sweep.json does not list). Before Python 3.14 the executor has no public
    way to end its workers, hence ``_processes``."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14+
        pool.terminate_workers()
        return
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        proc.terminate()
    for proc in workers:
        proc.join(timeout=10)


def exit_code(since: int) -> int:
    """The exit code of a command stopped by an interrupt: 128 + the signal's number (130 for Ctrl-C, 143
    for SIGTERM) when a request was counted after ``mark()`` returned ``since``, else 130."""
    return 128 + _last_signal if requested_since(since) else 128 + int(signal.SIGINT)


def reason(since: int) -> str:
    """``interrupted``, or ``interrupted by SIGTERM`` when that is what stopped the command."""
    if requested_since(since) and _last_signal != signal.SIGINT:
        return f"interrupted by {signal.Signals(_last_signal).name}"
    return "interrupted"


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
    """Hold Ctrl-C (and a SIGTERM routed through the counting handler) while the block runs and deliver it to
    the usual handler afterwards: for a few renames that publish outputs belonging together, where an
    interrupt between two would keep some and not the others. Outside the main thread, or under a handler not
    set from Python, the block runs as it is."""
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    if threading.current_thread() is not threading.main_thread() or previous[signal.SIGINT] is None:
        yield
        return
    held_now = [signal.SIGINT] + ([signal.SIGTERM] if previous[signal.SIGTERM] is _on_signal else [])
    caught: list[int] = []
    for sig in held_now:
        signal.signal(sig, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for sig in held_now:
            signal.signal(sig, previous[sig])
        if caught:
            signal.raise_signal(caught[0])  # now: counted and raised (or ignored) as it would have been
