"""Before anything is built: the data's task is the task the run learns, and every
`${data_spec:...}` of the task and model configs resolves, or one message says what to fix
(the data config's task line, a model that needs what the data lacks)."""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

from trainlab.checks import ConfigError
from trainlab.data.spec import DataSpec, SpecMissing, spec_of_data_config

TASK_LINE = "  - override /task@_global_.task: {kind}"


def check_sized_from_data(
    cfg: DictConfig, choices: dict[str, str], given: Iterable[str] = ()
) -> None:
    """The data is built first (its own refusal is reported as the data's), its task checked
    against the run's (`given`: the command line's overrides, to tell whose choice it was),
    then the task's and the model's `${data_spec:...}` resolved."""
    data = choices.get("data")
    try:
        spec = spec_of_data_config(cfg.data)
    except SpecMissing:
        spec = None  # fine unless a config asks for it: resolving below says so
    except Exception as err:  # noqa: BLE001 - reported as the data's, with its cause
        from trainlab.faults import describe

        raise ConfigError(f"data={data}: {describe(err)}") from err
    if spec is not None and cfg.get("task") is not None:
        check_task_of_data(spec, str(cfg.task.get("kind")), data, given)
    for node in ("task", "model"):
        if cfg.get(node) is None:
            continue
        try:
            OmegaConf.to_container(cfg[node], resolve=True)
        except Exception as err:  # noqa: BLE001 - the cause is what the user needs
            cause = err
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
            key = getattr(err, "full_key", None) or node
            raise ConfigError(
                f"{key} (model={choices.get('model')}, task={choices.get('task')}, "
                f"data={data}): {cause}"
            ) from err


def check_task_of_data(spec: DataSpec, kind: str, data: str | None, given: Iterable[str]) -> None:
    """The run learns the task its data holds: a `task=` of the command line that contradicts
    it, or a data config whose task line is missing or wrong, is refused with the fix."""
    if spec.task == kind:
        return
    if any(str(o).split("=", 1)[0].lstrip("+~") == "task" for o in given):
        raise ConfigError(
            f"task={kind} does not fit data={data}, which is {spec.task}: leave task= out (the "
            "data's config picks its own), or choose data of that kind"
        )
    raise ConfigError(
        f"data={data} is {spec.task} (its DataModule says so), but conf/data/{data}.yaml picks "
        f"task={kind} (the default, when it picks none): give it the task line\n"
        f"defaults:\n{TASK_LINE.format(kind=spec.task)}"
    )
