"""Checkpoints that survive a kill and resume exactly.

- `AtomicCheckpointIO`: torch.save into a temporary file beside the target, renamed over
  it, so a kill in the middle of a save leaves the previous checkpoint whole. The file is
  created by open(), so its mode is 0666 minus the umask (Lightning's own atomic save goes
  through a `tempfile.mkstemp` file, 0600 whatever the umask, unreadable by the group).
- `RngState`: the global RNG states travel with each checkpoint (Lightning does not save
  them); a resumed run draws the dropout masks an unbroken run would have drawn.
- `read_checkpoint`, `latest_checkpoint`: a missing, corrupt or foreign file becomes a
  one-paragraph error instead of a traceback from deep inside torch.load;
  `nonfinite_tensors` names the weights that hold NaN or inf.

Everything saved is tensors and plain values, so checkpoints load with torch's default
`weights_only=True`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from trainlab.checks import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `.<name>.<pid>.tmp` beside the target, then rename: readers see old or new,
    never half. A write error (a full disk) is an OSError that names the checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: Lightning's fsspec save
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local files")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
            os.replace(tmp, path)
        except OSError as err:
            if err.filename is not None:
                raise
            raise OSError(err.errno, err.strerror, str(path)) from err
        finally:
            tmp.unlink(missing_ok=True)


def rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": random.getstate(),
    }


def set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])


class RngState(Callback):
    """Saves the RNG states with every checkpoint and restores them right before the first
    training step after a resume (nothing between the checkpoint and that step draws from
    them: the data order has its own generator)."""

    def __init__(self) -> None:
        self._restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if self._restore is not None:
            if trainer.world_size == 1:  # ranks draw differently; rank 0's state fits rank 0
                set_rng_states(self._restore)
            self._restore = None


def read_checkpoint(path: str | Path, knob: str) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU, safely (weights_only), or say plainly why not."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{knob}={path} does not exist or is not a file: give the path of a .ckpt file, "
            "e.g. outputs/train/<date>/<time>_<id>/checkpoints/last.ckpt."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(
            f"{knob}={path} is not a readable checkpoint (corrupt, truncated, or not saved by "
            f"torch): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"{knob}={path} is a torch file but not a Lightning checkpoint (it has no "
            "state_dict): give a .ckpt saved by a run of this template."
        )
    return checkpoint


def nonfinite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an inf; a best-so-far
    (`val_<metric>_best`) may be +-inf: its start, before the first validation."""
    return [
        name
        for name, value in state_dict.items()
        if torch.is_tensor(value)
        and (value.is_floating_point() or value.is_complex())
        and not bool(torch.isfinite(value).all())
        and not (is_best_so_far(name) and not bool(torch.isnan(value).any()))
    ]


def is_best_so_far(name: str) -> bool:
    return name.startswith("val_") and name.endswith("_best")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint a run left to continue from: checkpoints/last.ckpt (saved by time,
    by steps if asked, at the end of training and on SIGTERM/SIGINT) or Lightning's SLURM
    hpc_ckpt_N.ckpt (saved on SLURM's requeue signal)."""
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def epochs_trained(checkpoint: dict[str, Any]) -> int:
    """Epochs whose training batches a Lightning checkpoint has all been through."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    return int(progress.get("current", {}).get("processed", checkpoint.get("epoch", 0)))


def best_checkpoint_in(checkpoint: dict[str, Any]) -> str | None:
    """The best checkpoint a ModelCheckpoint with a monitor had kept when this one was saved."""
    for state in checkpoint.get("callbacks", {}).values():
        if not isinstance(state, dict) or not state.get("monitor"):
            continue
        path = state.get("best_model_path")
        if path and Path(path).is_file():
            return str(path)
    return None
