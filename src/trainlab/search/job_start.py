"""How a job of a parallel sweep gets its process (trainlab.search.processes): on Linux a fork
of the sweep, which imported torch and Lightning once, elsewhere (or once the sweep has
touched CUDA) a fresh Python running trainlab.search.worker; either way in a session of its
own, with its share of the cores as torch threads."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from trainlab.search.stopping import SIGNALS

if TYPE_CHECKING:
    from trainlab.search.processes import Job


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def job_environment(n_jobs: int) -> dict[str, str]:
    """The environment of a job's process: this one's, plus the job's share of the cores as
    its torch threads (OMP_NUM_THREADS = cores // jobs at once, at least 1), unless the user
    set OMP_NUM_THREADS. torch's default is one thread per core in every process: n jobs at
    once would run n x cores threads on the cores, and small models slow down 3-4x when
    oversubscribed. The `threads` knob, when given, still decides inside the job."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        share = str(max(1, (os.cpu_count() or 1) // max(1, n_jobs)))
        env.update({name: share for name in THREAD_VARIABLES if name not in env})
    return env


def write_payload(job: Job) -> None:
    """The job's args pickled in a file, for a fresh Python (before any job starts, so that a
    job whose args cannot be pickled fails the sweep before the others run)."""
    import cloudpickle  # joblib's own dependency

    job.payload.write_bytes(pickle.dumps((list(sys.path), cloudpickle.dumps(job.args))))


def start(job: Job, env: dict[str, str] | None = None) -> None:
    """A fresh interpreter for the job (`python -m trainlab.search.worker`), reading its
    args from its payload (write_payload)."""
    job.process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainlab.search.worker",
            str(job.payload),
            str(job.result),
            str(os.getpid()),
        ],
        start_new_session=True,  # signals reach the job only through the sweep (Forwarder)
        env=env,
    )


class Forked:
    """A job's process forked from the sweep, seen as a Popen: pid, poll(), returncode
    (negative: killed by that signal)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def can_fork() -> bool:
    """Forking the sweep for each job is safe on Linux while the sweep has not touched CUDA
    (a forked child cannot use a CUDA context made by its parent). TRAINLAB_FORK_JOBS=0 asks
    for a fresh Python per job all the same."""
    if os.environ.get("TRAINLAB_FORK_JOBS", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    import torch

    return not torch.cuda.is_initialized()


def start_forked(job: Job, env: dict[str, str]) -> None:
    """The job in a fork of the sweep, which has imported torch and Lightning once for all
    its jobs: no interpreter start-up per job, and a job that dies still takes only itself.
    The child gets a session of its own (signals come only through the Forwarder), the
    default signal handlers, the job's thread share, and leaves with os._exit."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        job.process = Forked(pid)
        return
    code = 1
    try:
        os.setsid()
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        os.environ.update(env)
        if "OMP_NUM_THREADS" in env:  # torch read the variable when it loaded: tell it now
            import torch

            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        from trainlab.search.worker import run, stop_when_orphaned

        stop_when_orphaned(parent)
        code = run(job.args, job.result)
    except BaseException:  # nothing may return into the sweep's own loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
