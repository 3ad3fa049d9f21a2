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
# trials that did not get to say anything about their point: they do not count toward
# n_trials, and the next worker asks their parameters again
NOT_TRIED = ("interrupted", "never ran")
SURPLUS = "surplus"  # asked beyond n_trials by a worker that shares no lock with the others


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def counts(trial) -> bool:
    """Whether a trial counts toward n_trials: finished (completed, pruned, failed, diverged)
    or running; not one interrupted or never launched, nor a surplus one."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("trainlab_status") not in (*NOT_TRIED, SURPLUS)
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def counted(study, below: int | None = None) -> int:
    """How many trials count toward n_trials (numbered below `below`, when given)."""
    trials = study.get_trials(deepcopy=False)
    return sum(counts(t) for t in trials if below is None or t.number < below)


def outcome_of(record: dict[str, Any] | None, value: Any = None):
    """(state, values, user attributes) to tell for a job with this record (None: it wrote
    none); `value` is what the job returned, when it returned. One objective: the settings
    refuse several."""
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
        values = [float(value)]
    except (TypeError, ValueError):
        attrs["trainlab_error"] = f"the job returned {value!r}, not a number"
        return TrialState.FAIL, None, attrs
    return TrialState.COMPLETE, values, attrs


def tell(study, trial, state, values, attrs: dict[str, Any]) -> str:
    from optuna.trial import TrialState

    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    try:
        study.tell(trial.number, values, state=state, skip_if_finished=True)
    except RuntimeError as err:  # GridSampler stops the study from its after_trial hook
        if "Study.stop" not in str(err):
            raise
    if state == TrialState.FAIL:
        said = attrs.get("trainlab_error") or attrs.get("trainlab_status")
        log.warning("trial %d told to the study as failed: %s", trial.number, said)
    return str(attrs.get("trainlab_status"))


def tell_job(study, trial, ret, job_dir: Path) -> str:
    """Tell one trial from its job; returns the status told (a job that raised out of
    Hydra is `failed`). Without a JobReturn (the sweep stopped), its record decides."""
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
    return tell(study, trial, *outcome_of(against_the_study(study, record), value))


def against_the_study(study, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A completed job that optimized another metric or direction than the study's (an
    experiment or override changed its objective) is told as failed, never as a value."""
    if not record or record.get("status") != "completed":
        return record
    metric = study.user_attrs.get("trainlab_objective")
    direction = study.direction.name.lower()
    got = (record.get("optimized_metric"), record.get("direction"))
    if (metric and got[0] != metric) or (got[1] and got[1] != direction):
        error = (
            f"the job optimized {got[0]} ({got[1]}), the study {metric} ({direction}): "
            "its value would be ranked against another objective's"
        )
        return {**record, "status": "failed", "error": error}
    return record


def settle_dead_workers(study, sweep_dir: Path) -> None:
    """Trials left RUNNING by a worker process of this machine that is gone: told from what
    their job recorded (a job that never finished is marked failed with the cause)."""
    from optuna.trial import TrialState

    from trainlab.runlock import LOCK_FILE, is_alive, read_lock, stale_reason, this_process

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get("trainlab_worker", ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or is_alive(int(pid), None):
            continue
        job_dir = sweep_dir / str(trial.number)
        holder = read_lock(job_dir / LOCK_FILE)
        if holder is not None and (not holder or stale_reason(holder, this_process()) is None):
            continue  # its job still trains (in a process of its own): its worker will tell
        record = read_record(job_dir)
        if job_dir.is_dir() and (record or {}).get("status") not in FINISHED:
            cause = f"the sweep worker that ran it ({owner}) ended before the job did"
            record = mark_dead(job_dir, cause, -9)
        log.warning("trial %d was left running by %s, which is gone: told now", trial.number, owner)
        tell(study, trial, *outcome_of(record or {"status": "never ran"}))


def requeue_untried(study) -> int:
    """Ask again, as the next trials, the points of trials that were interrupted or never
    launched (a stopped sweep); each is requeued once. Returns how many."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("trainlab_retries") for t in trials}  # a finished trial
    again = 0  # cannot be marked: the trial that asks its point again names it
    for trial in trials:
        untried = trial.state == TrialState.FAIL and trial.user_attrs.get("trainlab_status")
        if untried in NOT_TRIED and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"trainlab_retries": trial.number})
            again += 1
    if again:
        log.info("%d interrupted or never launched trials asked again", again)
    return again


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
    """Up to `size` new trials, no more than the study lacks of n_trials (see module text).
    Workers that share a database but no sweep dir (so no lock) may both ask the last one:
    the one numbered later is told failed as `surplus` and not run."""
    from optuna.trial import TrialState

    missing = n_trials - counted(study)
    if missing <= 0:
        return []
    if first and len(study.trials) > 0 and hasattr(study.sampler, "reseed_rng"):
        study.sampler.reseed_rng()  # joining a study: fresh draws, not the seed's replay
    trials = []
    for _ in range(min(size, missing)):
        trial = study.ask(space.distributions)
        study._storage.set_trial_user_attr(trial._trial_id, "trainlab_worker", worker_id())
        if counted(study, below=trial.number) >= n_trials:  # a worker without our lock
            tell(study, trial, TrialState.FAIL, None, {"trainlab_status": SURPLUS})
            break
        trials.append(trial)
    return trials


def launch_batch(sweeper, study, trials: list[Any], space, sweep_dir: Path) -> list[str]:
    """Launch the trials' jobs and tell their outcomes; returns the statuses told."""
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
            tell_job(study, trial, ret, sweep_dir / str(trial.number))
        raise
    return [
        tell_job(study, t, r, sweep_dir / str(t.number))
        for t, r in zip(trials, returns, strict=True)
    ]
