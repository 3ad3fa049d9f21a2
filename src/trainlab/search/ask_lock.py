"""`<sweep dir>/optuna.ask.lock`: held by a worker of an Optuna sweep while it counts the
study's trials and asks new ones, so that workers sharing the sweep dir never both ask the
last trial and a batch gets consecutive trial numbers.

The lock file says who holds it (pid, host, process start, as `run.lock` does); a waiting
worker takes it over when its holder is gone (this host, a dead process) or, on another host,
when it is older than LOCK_GRACE_S (asking takes a fraction of a second). A waiter that is
interrupted leaves the holder's lock alone (Optuna's own file lock deletes it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from trainlab.runlock import _create, _remove_stale, read_lock, stale_reason, this_process

ASK_LOCK = "optuna.ask.lock"
LOCK_GRACE_S = 120
log = logging.getLogger(__name__)


def _stale(path: Path, holder: dict, me: dict) -> str | None:
    reason = stale_reason(holder, me) if holder else None
    if reason is not None:
        return reason
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    if age > LOCK_GRACE_S and (not holder or holder.get("host") != me["host"]):
        return f"held for {age:.0f} s, longer than asking ever takes"
    return None


@contextlib.contextmanager
def ask_lock(sweep_dir: Path) -> Iterator[None]:
    """Hold the sweep's ask lock for the block (see the module text)."""
    path = Path(sweep_dir) / ASK_LOCK
    me = this_process()
    wait = 0.01
    while not _create(path, me):
        holder = read_lock(path)
        if holder is None:
            continue  # released in the meantime
        reason = _stale(path, holder, me)
        if reason is not None:
            log.warning("taking over %s from %s: %s", path, holder.get("pid", "?"), reason)
            _remove_stale(path, holder)
            continue
        time.sleep(wait)
        wait = min(wait * 2, 0.5)
    try:
        yield
    finally:
        if (read_lock(path) or {}).get("token") == me["token"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
