"""Where a run starts from: a checkpoint to resume, to start from or to evaluate, checked to be
readable, finite and of this model; and whether it had already trained to its end."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.checkpoints import (
    epochs_trained,
    latest_checkpoint,
    nonfinite_tensors,
    read_checkpoint,
)
from trainlab.checks import ConfigError

log = logging.getLogger(__name__)


def starting_checkpoint(cfg: DictConfig) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint this run starts from, already checked to be readable: the latest one of
    the run being resumed, or `ckpt_path`; (None, None) for a run from scratch."""
    if cfg.resume is not None:
        run_dir = Path(str(cfg.resume))
        if run_dir.resolve() != Path(cfg.paths.output_dir).resolve():
            raise ConfigError(
                f"resume={run_dir} must continue in that directory, but this run writes to "
                f"{cfg.paths.output_dir}: start it with python train.py resume={run_dir}"
            )
        path = latest_checkpoint(run_dir)
        if path is None:
            raise ConfigError(f"resume={run_dir} has no checkpoints/last.ckpt to continue from.")
        return str(path), read_checkpoint(path, "resume")  # resume_argv checked what is left
    if cfg.ckpt_path is not None:
        checkpoint = read_checkpoint(cfg.ckpt_path, "ckpt_path")
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path} holds NaN or inf weights ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}; written at step "
                f"{checkpoint.get('global_step')}): evaluating or training from them gives "
                "garbage. Give a checkpoint from before the run diverged (the best one in "
                "<run dir>/checkpoints/epoch_*.ckpt)."
            )
        return str(cfg.ckpt_path), checkpoint
    requeued = latest_checkpoint(Path(cfg.paths.output_dir)) if cfg.train else None
    if requeued is not None:
        # a fresh run's directory is new, so a checkpoint there means this is the same job
        # started again: SLURM requeued it (submitit keeps the job's directory)
        log.warning("this run's directory already has %s: continuing from it", requeued)
        return str(requeued), read_checkpoint(requeued, "the requeued job's checkpoint")
    return None, None


@contextmanager
def checkpoint_must_fit(ckpt: str | None, model_choice: str | None) -> Iterator[None]:
    """A checkpoint of another architecture: say which options built it, not a state_dict dump."""
    try:
        yield
    except RuntimeError as err:
        if ckpt is None or "state_dict" not in str(err):
            raise
        saved = Path(ckpt).resolve().parent.parent / ".hydra" / "overrides.yaml"
        # as typed: an override may hold an interpolation (x=${task_name})
        options = OmegaConf.to_container(OmegaConf.load(saved)) if saved.is_file() else None
        hint = (
            f" The run that saved it was started with: "
            f"{' '.join(map(str, options)) or '(no overrides)'}."
            if options is not None
            else ""
        )
        details = "; ".join(line.strip().rstrip(".")[:300] for line in str(err).splitlines()[1:3])
        raise ConfigError(
            f"ckpt_path={ckpt} does not fit the model this config builds (model={model_choice}): "
            f"{details}. Give the same model and data options as the run that saved it.{hint}"
        ) from err


def trained_to_the_end(checkpoint: dict[str, Any], max_epochs: int, max_steps: Any) -> bool:
    """The checkpoint has every epoch of max_epochs, or every step of trainer.max_steps."""
    if epochs_trained(checkpoint) >= max_epochs:
        return True
    return isinstance(max_steps, int) and 0 < max_steps <= checkpoint.get("global_step", 0)
