"""Sweep-side code: how a sweep launches its jobs, reads their records and stops.

- `processes`: each job of a parallel sweep in its own process (the `hydra/launcher=joblib`
  plugin calls it); a process that dies is recorded `failed` with the cause, the rest go on
- `worker`: what runs in such a process
- `records`: a job's `metrics.json` as the sweep sees it (its status; marking a dead job)
- `plan`: the jobs a sweep was to run, so that a stopped sweep can say which never ran
- `stopping`: a signal to the sweep process stops it cleanly (`SweepStopped`)
- `optuna_study`: the ask-launch-tell loop of the Optuna sweeper, which tells diverged and
  failed jobs to the study as failed trials instead of a fake value

Nothing here imports torch: it runs in the sweep process, which trains nothing.
"""
