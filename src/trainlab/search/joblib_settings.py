"""Which of joblib's settings the `hydra/launcher=joblib` launcher (trainlab.search.processes)
honours: only `n_jobs`; the others describe joblib's pool of workers, which it does not use,
and are refused unless left at their defaults.

The one place that knows the rule: the launcher calls `parallel_jobs` for each batch, and
RunDirGuard (trainlab.rundir) calls `check_launcher` when a multirun starts, so that a bad
setting is refused with one paragraph before the sweep directory is created. Nothing here
imports more than omegaconf.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

from trainlab.checks import ConfigError

LAUNCHER = "ProcessPerJobLauncher"  # hydra_plugins.trainlab_launchers.joblib_launcher
# joblib's settings that mean nothing for one process per job, at the plugin's defaults
JOBLIB_DEFAULTS = {
    "backend": None,
    "prefer": "processes",
    "require": None,
    "verbose": 0,
    "timeout": None,
    "pre_dispatch": "2*n_jobs",
    "batch_size": "auto",
    "temp_folder": None,
    "max_nbytes": None,
    "mmap_mode": "r",
}


def check_settings(settings: dict[str, Any]) -> int:
    """The n_jobs setting, once the settings are known to apply (ConfigError if not)."""
    changed = {k: v for k, v in settings.items() if JOBLIB_DEFAULTS.get(k, v) != v}
    if changed:
        given = " ".join(f"hydra.launcher.{k}={v}" for k, v in changed.items())
        raise ConfigError(
            f"{given}: this launcher runs each job in a process of its own, so of joblib's "
            "settings only hydra.launcher.n_jobs applies. Leave the others out."
        )
    n_jobs = settings.get("n_jobs", -1)
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
        raise ConfigError(
            f"hydra.launcher.n_jobs={n_jobs} must be a whole number: how many jobs run at once "
            "(-1: one per CPU, -2: all CPUs but one)."
        )
    return n_jobs


def parallel_jobs(settings: dict[str, Any], n_jobs_wanted: int) -> int:
    """How many jobs run at once, from joblib's settings (refusing those that do not apply)."""
    n_jobs = check_settings(settings)
    if n_jobs < 0:
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, min(n_jobs, n_jobs_wanted))


def check_launcher(launcher_config: Any) -> None:
    """A multirun's `hydra.launcher` config: ConfigError for a setting this project's joblib
    launcher does not honour; other launchers are not checked here."""
    target = OmegaConf.select(launcher_config, "_target_", default="") if launcher_config else ""
    if not str(target).endswith(LAUNCHER):  # not resolved: another launcher's own settings
        return
    settings = OmegaConf.to_container(launcher_config, resolve=True)
    settings.pop("_target_", None)
    check_settings(settings)
