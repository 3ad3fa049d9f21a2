"""Sweep-side code: how a sweep launches its jobs, reads their records and stops.

- `processes`: each job of a parallel sweep in its own process (the `hydra/launcher=joblib`
  plugin calls it); a process that dies is recorded `failed` with the cause, the rest go on
- `worker`: what runs in such a process
- `records`: a job's `metrics.json` as the sweep sees it (its status; marking a dead job)
- `plan`: the jobs a sweep was to run, so that a stopped sweep can say which never ran
- `stopping`: a signal to the sweep process stops it cleanly (`SweepStopped`)
- the Optuna sweeper (hydra_plugins.trainlab_sweepers.optuna_sweeper calls them):
  `optuna_sweep` one worker's run; `optuna_study` ask, launch, tell (pruned, failed and
  untried trials as they are; n_trials as the study's total); `space` the search-space
  syntax; `optuna_settings` the settings, samplers and pruners; `optuna_checks` their
  checks before any trial;
  `storage` where the study lives (a journal file by default); `ask_lock` the lock workers
  count and ask under

Nothing here imports torch: it runs in the sweep process, which trains nothing.
"""
