"""Parallel jobs on this machine, each in a process of its own, where a dying job costs only
itself (`hydra/launcher=joblib`, conf/hydra/launcher/joblib.yaml).

joblib's Parallel (the launcher this replaces) shares a pool of worker processes between the
jobs: when one worker dies (kill -9, the out-of-memory killer, a segfault) loky kills every
other worker too and the sweep ends with TerminatedWorkerError, without a report and without
the results of the jobs that were running beside it. Here every job gets a process of its
own: on Linux a fork of the sweep, which imported torch and Lightning once (no interpreter
start-up per job), elsewhere (or once the sweep has touched CUDA) a fresh Python (a few
seconds of start-up each). Nothing of one job's memory leaks into the next, and each job gets
its share of the cores as torch threads (`job_environment`):

- a process that dies takes only its own job, which is recorded `failed` in its metrics.json
  with the cause; the other jobs go on, and the jobs not yet started still start;
- a dead job is not run again: what killed it (memory, mostly) would kill it again. It can be
  continued by hand from its last checkpoint: python train.py resume=<job dir>;
- SIGINT or SIGTERM to the sweep process is passed on to each running job (jobs run in
  sessions of their own, so a Ctrl-C reaches them only this way, once): each saves a
  checkpoint and records itself `interrupted`; no new job starts, and the sweep ends with
  `SweepStopped` (exit code 128 + signal) once they have. A second signal is passed on too
  (the jobs then stop at once).

Of joblib's settings only `n_jobs` applies (-1: one job per CPU, -2: all but one, ...); the
others describe joblib's pool and are refused unless left at their defaults
(trainlab.search.joblib_settings, which RunDirGuard also asks before the sweep writes anything).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from omegaconf import OmegaConf, open_dict

from trainlab.heap import freeze_imports
from trainlab.record import worst_objective
from trainlab.search.config_cache import job_context
from trainlab.search.job_start import (
    can_fork,
    job_environment,
    start,
    start_forked,
    write_payload,
)
from trainlab.search.joblib_settings import parallel_jobs
from trainlab.search.records import death_cause, mark_dead, read_record
from trainlab.search.stopping import SIGNALS, SweepStopped, note_stop

log = logging.getLogger(__name__)

POLL_S = 0.01  # how often the sweep looks for finished jobs (a waitpid each)


@dataclass
class Job:
    """One job of the batch: its number, overrides, and once started its process."""

    idx: int
    overrides: Sequence[str]
    args: tuple  # what Hydra's execute_job takes (trainlab.search.worker)
    payload: Path  # the args pickled, for a job in a fresh Python
    result: Path
    process: subprocess.Popen | None = None
    signals_sent: list[int] = field(default_factory=list)


class Forwarder:
    """While the batch runs: SIGINT/SIGTERM to the sweep stop it (see the module's text)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Forwarder:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _on_signal(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            note_stop(signum)
            log.warning(
                "%s received: passing it on to the running jobs, which save a checkpoint and "
                "stop; no new job starts (send it again to stop the jobs at once)",
                signal.Signals(signum).name,
            )
        self.pending.append(signum)


def job_return_for(launcher, job: Job, record: dict[str, Any] | None) -> JobReturn:
    """A JobReturn for a job that gave none back (it died, or was stopped): COMPLETED with the
    worst objective, which sweepers accept as they accept a failed job's (trainlab.run.main);
    trainlab's Optuna sweeper reads the job's record and tells the study the trial failed."""
    config = job_config(launcher, job)
    record = record or {}
    direction = record.get("direction") or config.get("optimized_direction")
    ret = JobReturn(
        overrides=list(job.overrides),
        hydra_cfg=OmegaConf.create({"hydra": OmegaConf.to_container(config.hydra)}),
        working_dir=os.getcwd(),
        task_name=str(config.hydra.job.name),
        status=JobStatus.COMPLETED,
    )
    ret.return_value = worst_objective(direction if direction == "minimize" else "maximize")
    return ret


def job_config(launcher, job: Job):
    """The job's composed config, as its own process composed it (for its directory)."""
    config = launcher.hydra_context.config_loader.load_sweep_config(
        launcher.config, list(job.overrides)
    )
    with open_dict(config):
        config.hydra.job.id = f"{config.hydra.job.name}_{job.idx}"
        config.hydra.job.num = job.idx
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        subdir = str(OmegaConf.select(config, "hydra.sweep.subdir"))
        config.hydra.runtime.output_dir = str((sweep_dir / subdir).absolute())
    return config


def collect(launcher, job: Job) -> JobReturn:
    """What the job's process left: its JobReturn, or (died, or stopped) one made here."""
    returncode = job.process.returncode
    result: Any = None
    if job.result.exists():
        result = pickle.loads(job.result.read_bytes())
    if isinstance(result, JobReturn):
        return result
    job_dir = Path(job_config(launcher, job).hydra.runtime.output_dir)
    if isinstance(result, dict) and "exit_code" in result:  # stopped: it recorded itself
        log.warning("job #%d stopped (exit code %s)", job.idx, result["exit_code"])
        return job_return_for(launcher, job, read_record(job_dir))
    if isinstance(result, dict) and "error" in result:
        cause = f"the job could not start: {result['error']}"
    else:
        cause = death_cause(returncode)
    log.error("job #%d (%s): %s; the sweep goes on", job.idx, job_dir, cause)
    job_dir.mkdir(parents=True, exist_ok=True)
    return job_return_for(launcher, job, mark_dead(job_dir, cause, returncode))


def forward(job: Job, signum: int) -> None:
    """The signal to the job's process group (a DDP job's ranks too), as a terminal would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.process.pid, signum)
    job.signals_sent.append(signum)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """Run the batch, at most n_jobs at a time; returns one JobReturn per job, in order."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    n_jobs = parallel_jobs(dict(launcher.joblib), len(job_overrides))
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    env = job_environment(n_jobs)
    log.info(
        "launching %d jobs, %d at a time, each in its own process with %s torch thread(s)",
        len(job_overrides),
        n_jobs,
        env.get("OMP_NUM_THREADS", "torch's default of"),
    )
    log.info("sweep output dir: %s", sweep_dir)
    for idx, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))

    forking = can_fork()
    if forking:  # import torch, Lightning and the rest once here, then fork each job
        import trainlab.run  # noqa: F401
        from trainlab.search.warm_up import warm_up

        warm_up(launcher.config)
    freeze_imports()  # forked jobs' collections skip what the imports made, copy fewer pages
    log.info("jobs are %s", "forks of this process" if forking else "fresh Python processes")

    singleton_state = Singleton.get_state()
    returns: list[JobReturn | None] = [None] * len(job_overrides)
    with tempfile.TemporaryDirectory(prefix="trainlab-jobs-") as tmp, Forwarder() as stop:
        jobs = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            args = (
                idx,
                overrides,
                job_context(launcher.hydra_context, overrides),
                launcher.config,
                launcher.task_function,
                singleton_state,
            )
            files = Path(tmp) / f"{idx}.payload", Path(tmp) / f"{idx}.result"
            jobs.append(Job(idx, overrides, args, *files))
            if not forking:  # a fork has the args in its memory: nothing to pickle
                write_payload(jobs[-1])
        waiting, running = list(enumerate(jobs)), []
        while waiting or running:
            for entry in [e for e in running if e[1].process.poll() is not None]:
                running.remove(entry)
                returns[entry[0]] = collect(launcher, entry[1])
            while waiting and len(running) < n_jobs and stop.signum is None:
                running.append(waiting.pop(0))  # at once when one ended: no poll's wait
                if forking:
                    start_forked(running[-1][1], env)
                else:
                    start(running[-1][1], env)
            for signum in stop.pending:
                for _, job in running:
                    forward(job, signum)
            stop.pending.clear()
            if stop.signum is not None and not running:
                break
            time.sleep(POLL_S)
    if stop.signum is not None:
        raise SweepStopped(stop.signum, returns)
    return returns
