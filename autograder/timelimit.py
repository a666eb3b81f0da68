"""Time limits: the one place that arms and disarms them.

The rule (docs/DEVELOPING.md, "Loads, time and hints"): a limit counts the CPU seconds of this
process, so that a busy machine cannot turn a slow but correct computation into a timeout;
wall-clock time is only a backstop, :data:`WALL_CLOCK_FACTOR` times longer, for code that
sleeps or waits instead of computing. A property run in process (``core.run_property``) is
limited this way.

The CI grader's worker counts both: its judge waits for each cell and each probe call on a
wall-clock deadline (``autograder.grader.remote``; it must, since a stopped or blocked worker
spends no CPU), so the worker's soft limit is the same number of CPU seconds *and* of wall
seconds (``wall=seconds``), whichever comes first, just before the judge's. Its CPU share is
what keeps a busy machine from eating an honest submission's wall clock: every worker and
every process it starts share one control group with a CPU quota
(:func:`autograder.grader.sandbox.join_group`). The per-submission and per-cell budgets
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
    seconds: float,
    error: Callable[[], BaseException],
    *,
    cpu: bool = True,
    wall: float | None = None,
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
        wall: With ``cpu``, the wall-clock backstop in seconds instead (the worker's: the
            same as ``seconds``).
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
        backstop = seconds * WALL_CLOCK_FACTOR if wall is None else wall
        signal.setitimer(signal.ITIMER_REAL, max(backstop, 0.001))
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
