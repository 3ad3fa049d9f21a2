"""The config a resumed run trains with: the run's own `.hydra/config.yaml`.

Hydra composes today's defaults for `python train.py resume=<run dir>` (the command that
`trainlab.resume.resume_argv` built); `saved_config` swaps in what the run was started with,
so that a change of defaults since then does not continue a different run:

- the saved config, with only what the resume command may change (`max_epochs`), and
  `resume=<run dir>`, `ckpt_path=null` (the run goes on from its own checkpoint);
- a top-level knob that today's config has and the saved one lacks (added to the template
  since) is taken from today's config, so that today's code finds it;
- Hydra's record of the run's group choices and overrides (`HydraConfig`) is the saved one:
  hparams say `optimizer: adam` when the run trained Adam, whatever today's default is;
- what today's defaults with the run's overrides would give instead is compared, and every
  difference logged in one warning (`key: old -> new`); the run keeps its saved values;
- a new `max_epochs` is written into `.hydra/config.yaml`, `overrides.yaml` and
  `hydra.yaml` (by rank 0, atomically), so that the next resume sees it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from trainlab.checks import ConfigError
from trainlab.ranks import override_key
from trainlab.resume import RESUME_MAY_CHANGE

log = logging.getLogger(__name__)
# where the run starts from is the resume command's business, not a difference of config
NOT_COMPARED = ("resume", "ckpt_path", *RESUME_MAY_CHANGE)
SHOWN = 12  # differences named in the warning; the rest are counted


def _load(path: Path) -> Any:
    try:
        return OmegaConf.load(path)
    except Exception as err:
        raise ConfigError(
            f"resume: {path} cannot be read ({type(err).__name__}: {err}); the run's saved "
            "config is what a resume continues, so it cannot be resumed without it."
        ) from err


def saved_config(cfg: DictConfig, write: bool) -> DictConfig:
    """The resumed run's config (see the module docstring). `write`: this is global rank 0,
    which reports the differences and keeps `.hydra/` up to date."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    saved_dir = run_dir / ".hydra"
    saved = _load(saved_dir / "config.yaml")
    # as typed: an override may hold an interpolation (`x=${paths.output_dir}/f`), which
    # reading the list through OmegaConf would try to resolve
    overrides = [str(o) for o in OmegaConf.to_container(_load(saved_dir / "overrides.yaml"))]
    saved_hydra = _load(saved_dir / "hydra.yaml") if (saved_dir / "hydra.yaml").is_file() else None
    choices = dict(saved_hydra.hydra.runtime.choices) if saved_hydra is not None else {}

    # max_epochs=N of the resume command: composed into `cfg` already, typed by Hydra
    changed = [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task)]
    changed = [o for o in changed if override_key(o) in RESUME_MAY_CHANGE]
    keys = {override_key(o) for o in changed}
    for key in keys:
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key))
    new = {override_key(o): o for o in changed}  # in the place of the old value, if any
    overrides = [new.pop(override_key(o), o) for o in overrides] + list(new.values())

    if write:
        report_differences(saved, choices, overrides, hydra_cfg.job.config_name)
        if changed:
            save_run_files(saved_dir, saved, overrides, saved_hydra)

    running = OmegaConf.create(OmegaConf.to_container(saved, resolve=False))
    today = OmegaConf.to_container(cfg, resolve=False)
    for key in today.keys() - set(running.keys()):
        running[key] = today[key]  # a knob added to the template since the run started
    running.resume = str(run_dir)
    running.ckpt_path = None
    OmegaConf.set_struct(running, True)
    _record_in_hydra(choices, overrides)
    return running


def _record_in_hydra(choices: dict[str, Any], overrides: list[str]) -> None:
    """HydraConfig says what the run was composed from (group choices, overrides)."""
    node = HydraConfig.instance().cfg.hydra
    with read_write(node), open_dict(node):
        if choices:
            node.runtime.choices = choices
        node.overrides.task = overrides


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for a nested config container; lists (and empty dicts) are values."""
    if not isinstance(node, dict) or not node:
        return {prefix[:-1]: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flat(value, f"{prefix}{key}."))
    return out


_ABSENT = object()


def _short(value: Any) -> str:
    text = "(absent)" if value is _ABSENT else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(
    saved: dict[str, Any],
    saved_choices: dict[str, Any],
    today: dict[str, Any],
    today_choices: dict[str, Any],
) -> list[str]:
    """`key: old -> new` for every group choice and value that differ; the values of a group
    whose option changed are counted under the choice instead of listed one by one."""
    lines, groups = [], []
    for group in sorted(saved_choices.keys() | today_choices.keys()):
        if group.startswith("hydra/"):
            continue
        old, new = saved_choices.get(group, _ABSENT), today_choices.get(group, _ABSENT)
        if old != new:
            groups.append(group.replace("/", "."))
            lines.append(f"{group} (option): {_short(old)} -> {_short(new)}")
    saved_flat, today_flat = flat(saved), flat(today)
    for key in sorted(saved_flat.keys() | today_flat.keys()):
        if key.split(".")[0] in NOT_COMPARED or any(key.startswith(g + ".") for g in groups):
            continue
        old, new = saved_flat.get(key, _ABSENT), today_flat.get(key, _ABSENT)
        if old != new:
            added = old is _ABSENT and "." not in key
            taken = " (a knob added since: today's value used)" if added else ""
            lines.append(f"{key}: {_short(old)} -> {_short(new)}{taken}")
    return lines


def report_differences(
    saved: DictConfig, choices: dict[str, Any], overrides: list[str], config_name: str | None
) -> None:
    """One warning naming what today's defaults with the run's overrides would change."""
    try:
        today = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except Exception as err:  # an option or key the run used is gone from today's conf/
        log.warning(
            "resume: continuing with the run's saved config (.hydra/config.yaml). Today's "
            "config cannot be composed with the run's overrides (%s: %s), so what changed "
            "since cannot be listed.",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
        )
        return
    today_choices = dict(today.hydra.runtime.choices)
    with open_dict(today):
        del today["hydra"]
    lines = differences(
        OmegaConf.to_container(saved, resolve=False),
        choices,
        OmegaConf.to_container(today, resolve=False),
        today_choices,
    )
    if not lines:
        return
    more = f"; and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
    log.warning(
        "resume: the defaults changed since this run started; it continues with its saved "
        "config (.hydra/config.yaml), where today's defaults with its overrides would give "
        "%d differences (saved -> today): %s%s",
        len(lines),
        "; ".join(lines[:SHOWN]),
        more,
    )


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` all at once (a rank reading it sees old or new); the new file
    is created by open(), so its mode is 0666 minus the umask."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_run_files(
    saved_dir: Path, saved: DictConfig, overrides: list[str], saved_hydra: DictConfig | None
) -> None:
    """`.hydra/` as Hydra would have written it had the run been started with these values."""
    write_atomic(saved_dir / "config.yaml", OmegaConf.to_yaml(saved))
    write_atomic(saved_dir / "overrides.yaml", OmegaConf.to_yaml(ListConfig(overrides)))
    if saved_hydra is not None:
        with open_dict(saved_hydra):
            saved_hydra.hydra.overrides.task = overrides
        write_atomic(saved_dir / "hydra.yaml", OmegaConf.to_yaml(saved_hydra))
