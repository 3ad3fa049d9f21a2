"""`python train.py resume=<run dir> [max_epochs=N]`: the command that continues a run.

train.py calls `resume_argv` before Hydra composes anything. It checks that the run can be
continued, by this process, from a sound checkpoint (refusing with one paragraph otherwise),
and returns a command that points Hydra at the run's own directory without writing Hydra's
files there (`hydra.output_subdir=null`: `.hydra/` stays the run's). The run's config then
comes from its `.hydra/config.yaml` (`trainlab.resumed.saved_config`), not from today's
defaults.

Nothing here imports torch or Lightning at module level: it runs before every start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trainlab.checks import ConfigError
from trainlab.ranks import is_other_rank, override_key
from trainlab.rundir import read_record
from trainlab.runlock import check_not_held

# the only knob a resumed run may change: training further than first planned
RESUME_MAY_CHANGE = ("max_epochs",)


def resume_argv(argv: list[str]) -> list[str]:
    """The command line that continues the run named by `resume=<dir>` in its own directory."""
    args = argv[1:]
    given = [a for a in args if a.startswith("resume=")]
    if len(given) != 1:
        raise ConfigError(f"give one resume=<run dir>, not {len(given)}: {' '.join(given)}")
    run_dir = Path(given[0].split("=", 1)[1]).expanduser()
    if any(a in ("-m", "--multirun") for a in args):
        raise ConfigError(
            f"resume={run_dir} continues one run; it cannot be part of a sweep (-m). Resume "
            "each job of a sweep on its own: python train.py resume=<sweep dir>/<job number>."
        )
    others = [a for a in args if a not in given and override_key(a) not in RESUME_MAY_CHANGE]
    if others:
        raise ConfigError(
            f"resume={run_dir} continues that run with its saved config; only "
            f"{', '.join(RESUME_MAY_CHANGE)} may change, but the command also gives: "
            f"{' '.join(others)}. To train with other settings, start a new run."
        )
    saved = run_dir / ".hydra"
    if not (saved / "overrides.yaml").is_file() or not (saved / "config.yaml").is_file():
        raise ConfigError(
            f"resume={run_dir} is not a run directory of this template (no .hydra/overrides.yaml "
            "and .hydra/config.yaml there). Give the directory a run was written to, e.g. "
            "resume=outputs/train/<date>/<time>_<id>."
        )
    if not is_other_rank():  # the other ranks of a multi-node resume see rank 0's lock
        check_not_held(run_dir)
    config = yaml.safe_load((saved / "config.yaml").read_text()) or {}
    if (config.get("cv") or {}).get("folds") or config.get("train") is False:
        raise ConfigError(
            f"resume={run_dir} is a cross-validation or evaluation run; only a training run "
            "(train=true, cv.folds=0) can be resumed. Start it again instead."
        )
    new = [a for a in args if override_key(a) in RESUME_MAY_CHANGE]
    record = read_record(run_dir)
    if record.get("status") == "completed" and not new:
        raise ConfigError(
            f"resume={run_dir} already completed (max_epochs={config.get('max_epochs')}). To "
            "train it further, give a larger max_epochs, e.g. "
            f"resume={run_dir} max_epochs={int(config.get('max_epochs') or 0) * 2 or 20}."
        )
    if new and (config.get("scheduler") or {}).get("length_arg"):
        raise ConfigError(
            f"resume={run_dir} cannot change max_epochs: its scheduler was sized for "
            f"max_epochs={config.get('max_epochs')} and keeps that length in the checkpoint "
            "(it would end early, or step past its end). Start a new run with the longer "
            "schedule, or use scheduler=none / plateau / step for runs you extend."
        )
    check_epochs_left(run_dir, _new_max_epochs(new, config), extending=bool(new))
    resolved = run_dir.resolve()
    return [
        argv[0],
        *new,
        f"resume={resolved}",
        *_hydra_overrides(saved),
        f"hydra.run.dir={resolved}",
        "hydra.output_subdir=null",  # .hydra/ is the run's; only a new max_epochs changes it
    ]


def _new_max_epochs(new: list[str], config: dict[str, Any]) -> int:
    given = [a.split("=", 1)[1] for a in new if override_key(a) == "max_epochs"]
    try:
        return int(given[-1]) if given else int(config.get("max_epochs") or 0)
    except ValueError as err:
        raise ConfigError(
            f"max_epochs={given[-1]} is not a whole number, e.g. max_epochs=40."
        ) from err


def check_epochs_left(run_dir: Path, max_epochs: int, extending: bool) -> None:
    """The run's newest checkpoint must exist, load and hold finite weights; to extend the
    run, it must have epochs left to train (without a new max_epochs, a run stopped after its
    last epoch finishes: it validates and tests its best checkpoint)."""
    from trainlab.checkpoints import epochs_trained, latest_checkpoint, read_checkpoint

    path = latest_checkpoint(run_dir)
    if path is None:
        raise ConfigError(
            f"resume={run_dir} has no checkpoint to continue from (no checkpoints/last.ckpt): "
            "it stopped before its first one, or ran with callbacks=none. Start it again."
        )
    checkpoint = read_checkpoint(path, "resume")
    check_finite(run_dir, path, checkpoint)
    done = epochs_trained(checkpoint)
    if extending and done >= max_epochs:
        raise ConfigError(
            f"resume={run_dir}: its last checkpoint ({path.name}) has trained {done} epochs, all "
            f"of max_epochs={max_epochs}. To train further, give a larger max_epochs, e.g. "
            f"resume={run_dir} max_epochs={2 * done}."
        )


def check_finite(run_dir: Path, path: Path, checkpoint: dict[str, Any]) -> None:
    """Refuse to continue from weights that hold NaN or inf: every later step would too."""
    from trainlab.checkpoints import best_checkpoint_in, nonfinite_tensors, read_checkpoint

    bad = nonfinite_tensors(checkpoint["state_dict"])
    if not bad:
        return
    best = best_checkpoint_in(checkpoint)
    if best and nonfinite_tensors(read_checkpoint(best, "the best checkpoint")["state_dict"]):
        best = None
    start_over = (
        f"start a new run from its best checkpoint, which is finite (ckpt_path={best}), or "
        if best
        else ""
    )
    raise ConfigError(
        f"resume={run_dir}: its last checkpoint ({path.name}, written at step "
        f"{checkpoint.get('global_step')}) holds non-finite weights (NaN or inf in "
        f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}), so every further step would "
        f"be NaN too: the run diverged before that save. Do not resume it: {start_over}start "
        "it again with a smaller lr or grad_clip=1.0."
    )


def _hydra_overrides(saved: Path) -> list[str]:
    """The `hydra.*` and `hydra/...` overrides the run was started with, except those that
    name its directory and what Hydra writes there (the resumed command sets them)."""
    if not (saved / "hydra.yaml").is_file():
        return []
    hydra_cfg = yaml.safe_load((saved / "hydra.yaml").read_text()) or {}
    listed = (((hydra_cfg.get("hydra") or {}).get("overrides") or {}).get("hydra")) or []
    skip = ("hydra.run.dir", "hydra.mode", "hydra.output_subdir")
    return [o for o in listed if override_key(o) not in skip and not _of_the_sweep(o)]


def _of_the_sweep(override: str) -> bool:
    """An override that configured the sweep the job ran in (its sweeper, its launcher, the
    trial hand-off): a resumed job is a single run, and its result no longer reaches a study."""
    key = override_key(override)
    sweep_keys = ("hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher")
    return key.startswith(sweep_keys) or key.startswith("hydra.job.env_set.TRAINLAB_OPTUNA")
