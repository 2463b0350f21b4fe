"""SIGINT and SIGTERM end a run as `interrupted`, at a step boundary, with a resume point when one is due.

SIGTERM is what Slurm sends at a time limit or a pre-emption, SIGINT is Ctrl-C. `handling()`
installs handlers for both around a run. A training loop that can stop cleanly wraps itself in
`deferred()`: a signal then only sets a flag, and the loop calls `stop_if_requested(at_boundary,
save)` after every step, which saves a resume point when the step is one of the loop's resume
boundaries (the RNG is reseeded there, so a resume from it is exact) and raises `Interrupted`.
Outside such a loop (loading data, a merge, writing a summary) the signal raises `Interrupted`
at once. A second signal while one is pending raises at once too.

Under submitit (Slurm), the job's pre-emption signal (USR2 unless SUBMITIT_PREEMPT_SIGNAL names
another; Slurm sends it before a time limit, or a scheduler on pre-emption) is handled the same
way, so the run stops at a step boundary with its resume point. `pass_on(signum)` then hands the
signal to the handler submitit installed before the run, which checkpoints the job (Hydra's
launcher resubmits itself with the same job directory), requeues it and exits; the requeued job
resumes the run from that point.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Callable, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was asked to stop (SIGINT or SIGTERM); `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
        return 128 + self.signum


_state = {"pending": None, "deferring": 0}

# Handlers that owned a signal before `handling()` and get it back through `pass_on` (submitit's).
_handed_over: dict[int, Callable] = {}


def preemption_signal() -> int | None:
    """The signal submitit requeues a job on, when this process is a submitit job whose handler owns it."""
    if not os.environ.get("SUBMITIT_FOLDER"):
        return None
    signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if signum is None or signum in HANDLED:
        return None
    return signum if callable(signal.getsignal(signum)) else None


def _handler(signum, _frame) -> None:
    if _state["pending"] is not None or not _state["deferring"]:
        _state["pending"] = None
        raise Interrupted(signum)
    _state["pending"] = signum


@contextmanager
def handling() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into `Interrupted` for the duration (a no-op outside the main thread)."""
    previous = {}
    preempt = preemption_signal()
    try:
        for signum in HANDLED + ((preempt,) if preempt is not None else ()):
            previous[signum] = signal.signal(signum, _handler)
    except ValueError:  # not the main thread: signals stay with whoever owns them
        pass
    _state["pending"] = None
    _handed_over.clear()
    if preempt in previous:
        _handed_over[preempt] = previous[preempt]
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state["pending"] = None


def requeues(signum: int) -> bool:
    """True when `signum` is the job's pre-emption signal and `pass_on` hands it to submitit."""
    return signum in _handed_over


def pass_on(signum: int) -> None:
    """Give `signum` to the handler that owned it before `handling()` (submitit: checkpoint, requeue, exit).

    Call it once the run is recorded as interrupted. Returns only when no such handler exists; submitit's
    raises SystemExit after requeueing, or its UncompletedJobError when it declines to requeue.
    """
    handler = _handed_over.pop(signum, None)
    if handler is not None:
        handler(signum, None)


@contextmanager
def deferred() -> Iterator[None]:
    """Inside: a signal waits for the loop's next `stop_if_requested` instead of interrupting mid-step."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1


def pending() -> int | None:
    """The signal received and not yet acted on, or None."""
    return _state["pending"]


def stop_if_requested(at_boundary: bool, save: Callable[[], None]) -> None:
    """After a step: when a signal is pending, `save()` a resume point if this step is a boundary, then raise."""
    signum = _state["pending"]
    if signum is None:
        return
    if at_boundary:
        save()
    _state["pending"] = None
    raise Interrupted(signum)
