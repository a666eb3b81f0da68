"""Time limits: the one place that arms and disarms them.

The rule (docs/DEVELOPING.md, "Loads, time and hints"): a limit counts the CPU seconds of this
process, so that a busy machine cannot turn a slow but correct computation into a timeout;
wall-clock time is only a backstop, :data:`WALL_CLOCK_FACTOR` times longer, for code that
sleeps or waits instead of computing. A property run in process (``core.run_property``) is
limited this way.

The CI grader's worker is the exception, by design: its judge waits for each cell and each
probe call on a wall-clock deadline (``autograder.grader.remote``; it must, since a stopped
or blocked worker spends no CPU), so the worker's own soft limit is wall-clock too
(``cpu=False``) and fires just before the judge's. The per-submission and per-cell budgets
themselves are :class:`autograder.grader.sandbox.Limits`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["WALL_CLOCK_FACTOR", "time_limit"]

#: How much longer than the CPU limit the wall-clock backstop waits.
WALL_CLOCK_FACTOR = 6.0


@contextlib.contextmanager
def time_limit(
    seconds: float, error: Callable[[], BaseException], *, cpu: bool = True
) -> Iterator[None]:
    """Raise ``error()`` inside the block once its time is up.

    Only where signals work (the main thread on POSIX); elsewhere, or for ``seconds <= 0``
    with ``cpu``, the block runs unlimited. Handlers and timers are restored on exit.

    Args:
        seconds: The limit: CPU seconds of this process (``cpu``), else wall-clock seconds.
        error: Builds the exception to raise; make it a ``BaseException`` that is not an
            ``Exception``, so that student code's ``except Exception`` cannot swallow it.
        cpu: Count CPU seconds (SIGPROF) with a wall-clock backstop :data:`WALL_CLOCK_FACTOR`
            times longer (SIGALRM); False: wall-clock only (at least a millisecond).
    """
    usable = (
        hasattr(signal, "SIGALRM")
        and hasattr(signal, "SIGPROF")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable or (cpu and seconds <= 0):
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise error()

    signals = (signal.SIGALRM, signal.SIGPROF) if cpu else (signal.SIGALRM,)
    previous = {sig: signal.signal(sig, _raise) for sig in signals}
    if cpu:
        signal.setitimer(signal.ITIMER_PROF, seconds)
        signal.setitimer(signal.ITIMER_REAL, seconds * WALL_CLOCK_FACTOR)
    else:
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if cpu:
            signal.setitimer(signal.ITIMER_PROF, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
