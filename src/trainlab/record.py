"""The run's verdict, `metrics.json`: written once, last, atomically, by rank 0 only.

A reader (a person, a sweeper, a report) sees either the old file or the new one, never
half of one, and a run that did not finish never says "completed".
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig

from trainlab.objective import direction_or_default
from trainlab.rundir import METRICS_FILE, read_record

# Lightning's own rank_zero_only (the same object): Lightning sets its rank from the launcher's
# environment when it is imported, and again once its strategy knows the global rank. A record
# written before Lightning is imported (a refused config) reads the environment the same way.
if getattr(rank_zero_only, "rank", None) is None:
    rank_zero_only.rank = next(
        (
            int(os.environ[k])
            for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
            if k in os.environ
        ),
        0,
    )


def group_choices() -> dict[str, str]:
    """Which option of each config group this run uses (`optimizer` -> `adam`, ...)."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None}


def hparams_of(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """The knobs a reader compares runs by, as the user chose them (the lr trained with, after
    lr_scaling or tune=lr, is the plan's lr_effective). A knob that does not resolve (a broken
    interpolation) is recorded as written, so that the record of that fault can be written."""

    def knob(key: str) -> Any:
        try:
            return cfg[key]
        except Exception:
            return cfg._get_node(key)._value() if key in cfg else None

    return {
        "optimizer": choices.get("optimizer"),
        "lr": knob("lr"),
        "weight_decay": knob("weight_decay"),
        "batch_size": knob("batch_size"),
        "max_epochs": knob("max_epochs"),
        "scheduler": choices.get("scheduler"),
        "model": choices.get("model"),
        "data": choices.get("data"),
        "task": choices.get("task"),
        "seed": knob("seed"),
        "split_seed": knob("split_seed"),
        "precision": knob("precision"),
    }


def worst_objective(direction: str) -> float:
    """What a diverged or failed job reports: finite (Optuna needs a number), and worse than
    any real value of a metric such as accuracy or loss."""
    return -1e9 if direction == "maximize" else 1e9


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only set it, and another
    thread creating a file in between would get the wrong mode)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def umask_mode(mode: int = 0o666) -> int:
    """`mode` as the umask leaves it: what open() would give a new file (mkstemp gives 0600,
    and a rename keeps it, which a group sharing the outputs folder could not read)."""
    return mode & ~current_umask()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`. Any value
    can be written (`json_safe`): a record is never lost to the value it holds."""
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """`text` to a temporary file beside `path`, renamed over it: a reader (another worker
    of the sweep, the report) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """`value` as plain JSON: tensors and numpy scalars as numbers or lists, OmegaConf nodes
    as lists and dicts, non-finite floats as the strings "nan", "inf", "-inf", anything else
    unknown as its str()."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # tensors, numpy arrays/scalars
        return json_safe(value.tolist())
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return json_safe(OmegaConf.to_container(value, resolve=False))
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


def plain_number(value: Any) -> float | None:
    """A tensor or number as a JSON-safe float; NaN and inf (and what is no number) become None."""
    try:
        value = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


@rank_zero_only
def write_metrics(
    output_dir: Path,
    *,
    status: str,
    objective: float | None,
    optimized_metric: str,
    direction: str,
    metrics: dict[str, Any],
    hparams: dict[str, Any],
    duration_s: float,
    **extra: Any,
) -> Path:
    path = Path(output_dir) / METRICS_FILE
    record = {
        "status": status,
        "objective": objective,
        "optimized_metric": optimized_metric,
        "direction": direction,
        "metrics": {name: plain_number(v) for name, v in sorted(metrics.items())},
        "hparams": hparams,
        "duration_s": round(duration_s, 3),
        **extra,
    }
    write_json_atomic(path, record)
    return path


def write_refusal(cfg: DictConfig, error: str) -> Path | None:
    """The `failed` record of a run refused before it started (nothing trained, no plan), by
    the process that owns the run dir (global rank 0: not a node > 0 of a hand-started run)."""
    from trainlab.ranks import is_other_rank

    if is_other_rank():
        return None
    return write_metrics(
        Path(cfg.paths.output_dir),
        status="failed",
        objective=None,
        optimized_metric=cfg.get("optimized_metric"),
        direction=direction_or_default(cfg),
        metrics={},
        hparams=hparams_of(cfg, group_choices()),
        duration_s=0.0,
        error=error,
    )


def recorded_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The knobs the record compares runs by: with train=false those of the run that trained
    the evaluated checkpoint (from its metrics.json), since this run's own trained nothing."""
    if cfg.get("train") is False and cfg.get("ckpt_path"):
        saved = read_record(Path(str(cfg.ckpt_path)).resolve().parent.parent).get("hparams")
        if isinstance(saved, dict):
            return {**saved, "evaluated": str(cfg.ckpt_path)}
    return hparams_of(cfg, group_choices())
