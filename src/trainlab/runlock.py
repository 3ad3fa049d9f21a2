"""`<run dir>/run.lock`: which process trains a run, so that no second one trains it too.

Global rank 0 writes the lock when its run starts (fresh, resumed or requeued) and removes it
when the run ends, however it ends short of SIGKILL. It is JSON: pid, host, SLURM_JOB_ID (if
any), when, and the process's start time (so that a recycled pid does not look alive).

A lock that is already there is judged:

- this host, a live process: the run is being trained; refused (`RunDirHeld`);
- this host, the process is gone (killed with -9, a crash, a reboot): stale, taken over;
- another host, the same SLURM job (requeued onto another node): taken over;
- another host otherwise: this host cannot tell whether that process lives, so it is refused,
  with the command that removes the lock once the user knows the process is gone.

Nothing here imports torch or Lightning (train.py checks a resume before those load).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainlab.checks import ConfigError

LOCK_FILE = "run.lock"
log = logging.getLogger(__name__)


class RunDirHeld(ConfigError):
    """Another live process trains this run (or may: it is on another host)."""


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """The boot and the clock tick at which process `pid` started (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (command name)"
    return f"{_boot_id()}/{fields[19]}"  # field 22 of proc(5): starttime


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "process_start": process_start(pid),
        "token": uuid.uuid4().hex,
    }


def is_alive(pid: int, started: str | None) -> bool:
    """Process `pid` of this host runs, and is the same process that wrote `started`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    now = process_start(pid)
    return started is None or now is None or now == started


def stale_reason(holder: dict[str, Any], me: dict[str, Any]) -> str | None:
    """Why `holder`'s lock may be taken over by `me`, or None when it must be respected."""
    if holder.get("host") == me["host"]:
        if holder.get("pid") == me["pid"]:
            return "left by this very process (an earlier job of it)"
        if not is_alive(holder["pid"], holder.get("process_start")):
            return f"process {holder.get('pid')} on this host is gone"
        return None
    if holder.get("slurm_job_id") and holder["slurm_job_id"] == me["slurm_job_id"]:
        return f"SLURM job {me['slurm_job_id']} was requeued (it ran on {holder.get('host')})"
    return None


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's content; None when there is no lock; {} when it cannot be read."""
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return {}
    return holder


def refusal(run_dir: Path, path: Path, holder: dict[str, Any]) -> RunDirHeld:
    if not holder:
        return RunDirHeld(
            f"{run_dir} is locked by {path}, which cannot be read (written this instant, or "
            f"damaged). If no process trains this run, remove it (rm {path}) and start again."
        )
    who = f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('started')})"
    if holder.get("host") == socket.gethostname():
        return RunDirHeld(
            f"{run_dir} is being trained right now by {who}; a second process would write "
            "over its checkpoints and record. Wait for it to end, or stop it (kill "
            f"{holder.get('pid')}: it saves a checkpoint) and then resume."
        )
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return RunDirHeld(
        f"{run_dir} is locked by {who}{job}: another host, so this one cannot tell whether "
        "that process still trains it. If it does, wait for it to end. If it is gone (its "
        f"machine died, its job was cancelled), remove the lock (rm {path}) and start again."
    )


def check_not_held(run_dir: Path) -> None:
    """Refuse a run dir that a live process holds; a stale lock is left for `RunLock`."""
    path = run_dir / LOCK_FILE
    holder = read_lock(path)
    if holder is not None and (not holder or stale_reason(holder, this_process()) is None):
        raise refusal(run_dir, path, holder)


def _create(path: Path, me: dict[str, Any]) -> bool:
    """Create the lock with our content; False when one exists. Mode 0666 minus the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    try:
        os.write(fd, (json.dumps(me, indent=1) + "\n").encode())
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def _remove_stale(path: Path, judged: dict[str, Any]) -> None:
    """Move the stale lock aside and delete it, unless it changed since it was judged (another
    process took it over first: then it is put back, and the next round respects it)."""
    aside = path.with_name(f".{path.name}.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # someone else removed it
    if read_lock(aside) == judged:
        aside.unlink(missing_ok=True)
        return
    with contextlib.suppress(FileExistsError):
        os.link(aside, path)  # put the live one back where it was
    aside.unlink(missing_ok=True)


class RunLock:
    """Hold `<run dir>/run.lock` while a run trains: `with RunLock(run_dir): ...`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.me = this_process()

    def acquire(self) -> None:
        for _ in range(5):
            if _create(self.path, self.me):
                return
            holder = read_lock(self.path)
            if holder is None:
                continue  # removed in the meantime: try again
            reason = stale_reason(holder, self.me) if holder else None
            if reason is None:
                raise refusal(self.run_dir, self.path, holder)
            log.warning(
                "taking over the run's lock %s from pid %s on %s: %s",
                self.path,
                holder.get("pid"),
                holder.get("host"),
                reason,
            )
            _remove_stale(self.path, holder)
        raise RunDirHeld(f"{self.run_dir}: other processes keep taking {self.path}; try again.")

    def release(self) -> None:
        """Remove the lock if it is still ours (not taken over meanwhile)."""
        if (read_lock(self.path) or {}).get("token") == self.me["token"]:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def holding(run_dir: Path, is_rank_zero: bool) -> Iterator[None]:
    """The lock for the duration of the block, on global rank 0 (other ranks train the same
    run: they take nothing)."""
    if not is_rank_zero:
        yield
        return
    with RunLock(run_dir):
        yield
