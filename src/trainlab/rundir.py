"""One directory per run: never reused for another run, only continued by `resume=`.

- `RunDirGuard` (a Hydra callback, conf/hydra/default.yaml) refuses to start a run in a
  directory that already holds one (an explicit `hydra.run.dir=`), and a grid sweep in a
  sweep directory that already holds jobs, before Hydra writes anything there.
- `resume_argv` turns `python train.py resume=<run dir> [max_epochs=N]` into the command
  that run was started with, pointed at its own directory: train.py calls it before Hydra
  composes anything, so the resumed run has exactly the saved config.

Nothing here imports torch or Lightning: it runs before every start-up.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from trainlab.checks import ConfigError

METRICS_FILE = "metrics.json"
# the only knob a resumed run may change: training further than first planned
RESUME_MAY_CHANGE = ("max_epochs",)


def holds_a_run(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / METRICS_FILE).exists()


def _same_path(a: Any, b: Path) -> bool:
    return a is not None and Path(str(a)).resolve() == b.resolve()


def _refuse(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)


def is_other_rank() -> bool:
    """DDP ranks > 0 (started by Lightning, torchrun or srun) re-enter rank 0's run directory
    with rank 0's command line."""
    keys = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return any(os.environ.get(key, "0") != "0" for key in keys)


class RunDirGuard(Callback):
    """Refuse, with exit code 2, a run or sweep that would write into an earlier one."""

    def on_run_start(self, config, **kwargs) -> None:
        run_dir = Path(str(config.hydra.run.dir))
        if is_other_rank() or not holds_a_run(run_dir):
            return
        if _same_path(config.get("resume"), run_dir):
            return
        _refuse(
            f"hydra.run.dir={run_dir} already holds a run (it has .hydra/ or metrics.json), "
            "and a run directory is never reused. Leave hydra.run.dir out to get a fresh one, "
            f"give a new path, or continue that run with: python train.py resume={run_dir}"
        )

    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if is_other_rank() or "Resumable" in str(config.hydra.sweeper.get("_target_", "")):
            return  # the resumable Optuna sweeper numbers new jobs after the existing ones
        jobs = sorted(p.name for p in sweep_dir.glob("*") if holds_a_run(p))
        if jobs:
            _refuse(
                f"hydra.sweep.dir={sweep_dir} already holds jobs ({', '.join(jobs[:5])}"
                f"{', ...' if len(jobs) > 5 else ''}) and a sweep would write over them from "
                "job 0. Leave hydra.sweep.dir out to get a fresh sweep directory, or give a new "
                "one (an Optuna sweep, hparams_search=optuna, continues in its old directory)."
            )


def _key(override: str) -> str:
    """`max_epochs` for `max_epochs=3`, `+foo` for `+foo=1`, `~bar` for `~bar`."""
    return override.split("=", 1)[0]


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
    others = [a for a in args if a not in given and _key(a) not in RESUME_MAY_CHANGE]
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
    config = yaml.safe_load((saved / "config.yaml").read_text()) or {}
    if (config.get("cv") or {}).get("folds") or config.get("train") is False:
        raise ConfigError(
            f"resume={run_dir} is a cross-validation or evaluation run; only a training run "
            "(train=true, cv.folds=0) can be resumed. Start it again instead."
        )
    new = [a for a in args if _key(a) in RESUME_MAY_CHANGE]
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
    overrides = yaml.safe_load((saved / "overrides.yaml").read_text()) or []
    hydra_overrides = _hydra_overrides(saved)
    changed = {_key(a) for a in new}
    # ckpt_path was where the run started; it goes on from its own checkpoint now
    kept = [o for o in overrides if _key(o) not in changed | {"resume", "ckpt_path"}]
    resolved = run_dir.resolve()
    return [
        argv[0],
        *kept,
        *new,
        f"resume={resolved}",
        *hydra_overrides,
        f"hydra.run.dir={resolved}",
    ]


def _new_max_epochs(new: list[str], config: dict[str, Any]) -> int:
    given = [a.split("=", 1)[1] for a in new if _key(a) == "max_epochs"]
    try:
        return int(given[-1]) if given else int(config.get("max_epochs") or 0)
    except ValueError as err:
        raise ConfigError(
            f"max_epochs={given[-1]} is not a whole number, e.g. max_epochs=40."
        ) from err


def check_epochs_left(run_dir: Path, max_epochs: int, extending: bool) -> None:
    """The run's newest checkpoint must exist and load; to extend the run, it must have epochs
    left to train (without a new max_epochs, a run stopped after its last epoch finishes:
    it validates and tests its best checkpoint)."""
    from trainlab.checkpoints import epochs_trained, latest_checkpoint, read_checkpoint

    path = latest_checkpoint(run_dir)
    if path is None:
        raise ConfigError(
            f"resume={run_dir} has no checkpoint to continue from (no checkpoints/last.ckpt): "
            "it stopped before its first one, or ran with callbacks=none. Start it again."
        )
    done = epochs_trained(read_checkpoint(path, "resume"))
    if extending and done >= max_epochs:
        raise ConfigError(
            f"resume={run_dir}: its last checkpoint ({path.name}) has trained {done} epochs, all "
            f"of max_epochs={max_epochs}. To train further, give a larger max_epochs, e.g. "
            f"resume={run_dir} max_epochs={2 * done}."
        )


def _hydra_overrides(saved: Path) -> list[str]:
    """The `hydra.*` and `hydra/...` overrides the run was started with, except its run dir."""
    if not (saved / "hydra.yaml").is_file():
        return []
    hydra_cfg = yaml.safe_load((saved / "hydra.yaml").read_text()) or {}
    listed = (((hydra_cfg.get("hydra") or {}).get("overrides") or {}).get("hydra")) or []
    return [o for o in listed if _key(o) not in ("hydra.run.dir", "hydra.mode")]


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json, or {} when there is none (yet) or it cannot be read."""
    try:
        return json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
