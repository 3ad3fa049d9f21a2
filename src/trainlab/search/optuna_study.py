"""The Optuna sweeper's loop: ask trials, launch them as jobs, tell the study what each job
really did (hparams_search=optuna; the plugin is hydra_plugins.trainlab_sweepers).

- `n_trials` is the study's total: a worker asks only while the study holds fewer trials
  (finished or running), so the same command again on the same sweep dir tops the study
  up, and N workers sharing it (on one machine or several) run `n_trials` in all. Counting
  and asking happen under a lock file in the sweep dir, so that two workers never both ask
  the last trial, and a batch gets consecutive trial numbers.
- A job's number is its trial's number: job dirs never collide between workers, and the
  numbers of a continued study follow the earlier ones.
- Each job's metrics.json decides what is told: `completed` with its value, `pruned` as
  TrialState.PRUNED (its last reported value stands), `diverged`, `failed` (also a job
  whose process died) and `interrupted` as TrialState.FAIL, with the status and error as
  the trial's user attributes (`trainlab_status`, `trainlab_error`). Never a fake value.
- A trial left RUNNING by a worker on this machine that no longer runs (kill -9) is told
  from its job's record when the next worker starts.
- The sampler is seeded by `seed`; a worker that joins a study which already has trials
  draws fresh random numbers (the same seed would replay the first suggestions).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from trainlab.search.records import FINISHED, mark_dead, read_record
from trainlab.search.stopping import SweepStopped

log = logging.getLogger(__name__)
TRIAL_ENV = "TRAINLAB_OPTUNA_TRIAL"  # set in each job (hydra.job.env_set): its trial number
ASK_LOCK = "optuna.ask"  # <sweep dir>/optuna.ask.lock while a worker counts and asks
LOCK_GRACE_S = 120  # a lock older than this was left by a dead worker: taken over


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def ask_lock(sweep_dir: Path):
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(str(sweep_dir / ASK_LOCK), grace_period=LOCK_GRACE_S)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def counted(study) -> int:
    """Trials that count toward n_trials: finished (completed, pruned, failed) or running."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def outcome_of(record: dict[str, Any] | None, n_objectives: int, value: Any = None):
    """(state, values, user attributes) to tell for a job with this record (None: it wrote
    none); `value` is what the job returned, when it returned."""
    from optuna.trial import TrialState

    record = record or {}
    status = record.get("status")
    attrs = {"trainlab_status": status or "no record"}
    if record.get("error"):
        attrs["trainlab_error"] = str(record["error"])[:500]
    if status == "pruned":
        return TrialState.PRUNED, None, attrs
    if status != "completed":
        return TrialState.FAIL, None, attrs
    value = record.get("objective") if value is None else value
    try:
        values = [float(v) for v in (value if n_objectives > 1 else [value])]
    except (TypeError, ValueError):
        attrs["trainlab_error"] = f"the job returned {value!r}, not a number"
        return TrialState.FAIL, None, attrs
    if len(values) != n_objectives:
        attrs["trainlab_error"] = f"{len(values)} values for {n_objectives} objectives"
        return TrialState.FAIL, None, attrs
    return TrialState.COMPLETE, values, attrs


def tell(study, trial, state, values, attrs: dict[str, Any]) -> None:
    from optuna.trial import TrialState

    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    try:
        study.tell(trial.number, values, state=state)
    except RuntimeError as err:  # GridSampler stops the study from its after_trial hook
        if "Study.stop" not in str(err):
            raise
    if state == TrialState.FAIL:
        log.warning("trial %d: %s, told to the study as failed", trial.number, attrs)


def tell_job(study, trial, ret, job_dir: Path, n_objectives: int) -> bool:
    """Tell one trial from its job; True when the job raised (counts toward
    max_failure_rate). Without a JobReturn (the sweep stopped), its record decides."""
    from hydra.core.utils import JobStatus

    if ret is not None:
        found = OmegaConf.select(ret.hydra_cfg or OmegaConf.create(), "hydra.runtime.output_dir")
        job_dir = Path(found) if found else job_dir
    record = read_record(job_dir) if job_dir.is_dir() else None
    if ret is None and job_dir.is_dir() and record is None:
        record = {"status": "interrupted"}
    elif ret is None and record is None:
        record = {"status": "never ran"}
    elif ret is not None and ret.status != JobStatus.COMPLETED:
        record = {**(record or {}), "status": (record or {}).get("status", "failed")}
        if record["status"] == "completed":
            record["status"] = "failed"
    value = ret.return_value if ret is not None and ret.status == JobStatus.COMPLETED else None
    tell(study, trial, *outcome_of(record, n_objectives, value))
    return ret is not None and ret.status == JobStatus.FAILED


def settle_dead_workers(study, sweep_dir: Path, n_objectives: int) -> None:
    """Trials left RUNNING by a worker process of this machine that is gone: told from what
    their job recorded (a job that never finished is marked failed with the cause)."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get("trainlab_worker", ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        job_dir = sweep_dir / str(trial.number)
        record = read_record(job_dir)
        if job_dir.is_dir() and (record or {}).get("status") not in FINISHED + ("pruned",):
            cause = f"the sweep worker that ran it ({owner}) ended before the job did"
            record = mark_dead(job_dir, cause, -9)
        log.warning("trial %d was left running by %s, which is gone: told now", trial.number, owner)
        tell(study, trial, *outcome_of(record or {"status": "never ran"}, n_objectives))


def foreign_jobs(sweep_dir: Path, study) -> list[str]:
    """Job dirs in the sweep dir that no trial of the study (None: no study yet) accounts
    for, another sweep's: a trial numbered like one of them would write over it."""
    from trainlab.rundir import holds_a_run

    numbers = {t.number for t in study.get_trials(deepcopy=False)} if study else set()
    found = [
        p.name
        for p in sweep_dir.glob("[0-9]*")
        if p.name.isdigit() and int(p.name) not in numbers and holds_a_run(p)
    ]
    return sorted(found, key=int)


def trial_overrides(space, trial) -> list[str]:
    return [*space.overrides(trial.params), f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}"]


def ask_batch(study, space, size: int, n_trials: int, first: bool) -> list[Any]:
    """Up to `size` new trials, no more than the study lacks of n_trials (see module text)."""
    missing = n_trials - counted(study)
    if missing <= 0:
        return []
    if first and len(study.trials) > 0 and hasattr(study.sampler, "reseed_rng"):
        study.sampler.reseed_rng()  # joining a study: fresh draws, not the seed's replay
    trials = []
    for _ in range(min(size, missing)):
        trial = study.ask(space.distributions)
        study._storage.set_trial_user_attr(trial._trial_id, "trainlab_worker", worker_id())
        trials.append(trial)
    return trials


def launch_batch(sweeper, study, trials: list[Any], space, sweep_dir: Path) -> int:
    """Launch the trials' jobs and tell their outcomes; returns how many jobs raised."""
    n_objectives = len(study.directions)
    overrides = [trial_overrides(space, t) for t in trials]
    numbers = [t.number for t in trials]
    consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    if consecutive:
        batches = [(overrides, numbers[0])]
    else:  # another process asked in between: one launch per trial keeps the numbers
        batches = [([o], n) for o, n in zip(overrides, numbers, strict=True)]
    returns: list[Any] = []
    try:
        for batch, first in batches:
            returns.extend(sweeper.launcher.launch(batch, initial_job_idx=first))
    except BaseException as stop:  # a signal (SweepStopped, or a job's SystemExit)
        given = returns + (list(stop.returns) if isinstance(stop, SweepStopped) else [])
        for i, trial in enumerate(trials):
            ret = given[i] if i < len(given) else None
            tell_job(study, trial, ret, sweep_dir / str(trial.number), n_objectives)
        raise
    return sum(
        tell_job(study, t, r, sweep_dir / str(t.number), n_objectives)
        for t, r in zip(trials, returns, strict=True)
    )
