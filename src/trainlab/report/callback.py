"""The Hydra callback that writes the report when a multirun ends, however it ends.

Hydra calls `on_multirun_end` only when the sweep finished. So `on_multirun_start` also
makes SIGINT/SIGTERM end the sweep process through SystemExit (trainlab.search.stopping)
and registers an exit hook: a sweep stopped by a signal, by a job's SystemExit (a job in
the sweep process that was interrupted) or by an error still writes its report on the way
out, saying which jobs completed, were interrupted, or never ran.
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from trainlab.report.jobs import job_dirs, read_record
from trainlab.report.progress import job_line, ranking_lines
from trainlab.report.summary import write_report
from trainlab.search import stopping
from trainlab.search.plan import SweepPlan, sweep_plan

log = logging.getLogger("trainlab.report")

# launchers whose jobs cannot outlive the sweep process (in it, or its child processes):
# when it exits, a job still `running` was interrupted. A cluster's jobs (submitit) go on.
LOCAL_LAUNCHERS = ("BasicLauncher", "ProcessPerJobLauncher", "JoblibLauncher")


class SweepReport(Callback):
    """Hydra callback: write the report when a multirun ends (never fails the sweep)."""

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._plan: SweepPlan | None = None
        self._local = False
        self._handlers: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a job's process gets a copy of the callbacks: it needs none of this

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def on_multirun_start(self, config, **kwargs) -> None:
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            earlier = self._sweep_dir.is_dir() and job_dirs(self._sweep_dir)
            self._plan = sweep_plan(config, frozenset(p.name for p in earlier or []))
        except Exception as err:  # a report without "never ran" rather than no sweep
            log.warning("cannot tell which jobs this sweep plans: %s", err)
            self._plan = SweepPlan()
        launcher = str(config.hydra.launcher.get("_target_", ""))
        self._local = launcher.endswith(LOCAL_LAUNCHERS)
        self._handlers = stopping.catch_signals()
        # the report imports pandas, which imports this; at exit it could no longer register
        # its own exit hook ("can't register atexit after shutdown") and the report would be lost
        import concurrent.futures.thread  # noqa: F401

        atexit.register(self._on_exit)

    def on_multirun_end(self, config, **kwargs) -> None:
        atexit.unregister(self._on_exit)
        stopping.restore(self._handlers)
        self._write(jobs_ended=True, ended_early=None)
        for line in ranking_lines(self._sweep_dir):
            log.info(line)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """One line per finished job of a sweep (in whichever process ran it)."""
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
            sweep_dir, job_dir = Path(config.hydra.sweep.dir), Path(config.hydra.runtime.output_dir)
            log.info(job_line(sweep_dir, job_dir, [str(o) for o in overrides]))
        except Exception as err:  # a line on the console must never fail a job
            log.warning("cannot summarize the job: %s: %s", type(err).__name__, err)

    def _on_exit(self) -> None:
        """The sweep process exits before on_multirun_end: stopped, or failed."""
        signum = stopping.stopped_by or self._signal_from_records()
        why = f"stopped by {stopping.signal_name(signum)}" if signum else "its process exited"
        self._write(jobs_ended=self._local, ended_early=why)

    def _signal_from_records(self) -> int | None:
        """A job in the sweep process that was interrupted ended the sweep with it: the
        signal its record names (`stopped by SIGTERM; saved ...`)."""
        import signal

        for job in job_dirs(self._sweep_dir) if self._sweep_dir.is_dir() else []:
            record, _ = read_record(job)
            error = str((record or {}).get("error") or "")
            if (record or {}).get("status") == "interrupted" and error.startswith("stopped by "):
                name = error.removeprefix("stopped by ").split(";")[0].split()[0]
                if name in signal.Signals.__members__:
                    return signal.Signals[name]
        return None

    def _write(self, jobs_ended: bool, ended_early: str | None) -> None:
        try:
            write_report(self._sweep_dir, self._plan, jobs_ended, ended_early)
        except Exception as err:  # a report must not turn a finished sweep into a failure
            log.error("could not write the sweep report: %s: %s", type(err).__name__, err)
