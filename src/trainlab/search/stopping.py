"""A signal to the sweep process: no new job starts, the running ones stop with a checkpoint,
and the sweep ends with exit code 128 + signal after its report is written.

The sweep process catches SIGINT and SIGTERM from the start of a multirun (the report's
callback installs `catch_signals`); while a job trains in that same process (the basic
launcher), the job's own handler (trainlab.callbacks.StopOnSignal) takes over and ends the
job `interrupted` with SystemExit(128 + signal), which ends the sweep the same way.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# the signal that stopped this sweep process, once one has (for the report)
stopped_by: int | None = None


class SweepStopped(SystemExit):
    """The sweep was told to stop by `signum`. `returns` holds what the jobs of the batch in
    flight gave back (a JobReturn, or None for a job that never started), in launch order."""

    def __init__(self, signum: int, returns: list[Any] | None = None) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.returns = returns or []


def note_stop(signum: int) -> None:
    global stopped_by
    if stopped_by is None:
        stopped_by = signum


def signal_name(signum: int | None) -> str | None:
    return signal.Signals(signum).name if signum else None


def _stop_now(signum: int, frame) -> None:
    note_stop(signum)
    raise SweepStopped(signum)


def catch_signals() -> dict[int, Any]:
    """From now on SIGINT/SIGTERM end this (sweep) process with SweepStopped, so that the
    `finally` blocks and exit hooks run (SIGTERM's default would end it without them).
    Returns the handlers it replaced; main thread only (else nothing is changed)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _stop_now) for s in SIGNALS}


def restore(previous: dict[int, Any]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)
