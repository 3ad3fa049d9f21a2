"""A network's width and parametrization: `sp` (standard) or `mup` (μP, the maximal update
parametrization of Yang et al., "Tensor Programs V").

With the standard parametrization the best lr moves as a network grows wider, so an lr tuned
on a small proxy is wrong for the large model. μP scales, with the width multiplier
m = width / base_width, what would otherwise drift:

  - hidden weight matrices (fan-in grows with width): init variance ~ 1/fan_in;
  - the output layer: its input multiplied by 1/m (its weights keep the base width's scale);
  - attention logits: q.k scaled by 1/d_head (sqrt(base d_head) / d_head, so that at the base
    width it is the usual 1/sqrt(d_head)) instead of 1/sqrt(d_head);
  - the lr (and weight decay) of each parameter group, by the optimizer's family:
    trainlab.optim.mup.

These are the network's part: a network that supports μP takes `parametrization` and
`base_width`, keeps a `Parametrization` as `self.parametrization`, and applies the first three
itself (trainlab.models.nets.MLP, trainlab.models.gpt.GPT). At m = 1 μP is the standard
parametrization exactly, so the base width is where lr and init are tuned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.checks import ConfigError, check_choice, check_whole_number, shown

PARAMETRIZATIONS = ("sp", "mup")


@dataclass(frozen=True)
class Parametrization:
    """How a network of `width` is parametrized; `base_width` is read only under mup."""

    name: str = "sp"
    width: int = 1
    base_width: int | None = None

    def __post_init__(self) -> None:
        check_parametrization(self.name)
        if self.name == "mup" and self.base_width is not None:
            check_whole_number("base_width", self.base_width, 1, str(self.width))

    @property
    def mup(self) -> bool:
        return self.name == "mup"

    @property
    def multiplier(self) -> float:
        """m = width / base_width under mup; 1 under sp (or with no base width)."""
        if not self.mup or self.base_width is None:
            return 1.0
        return self.width / self.base_width

    def as_plan(self) -> dict[str, Any]:
        """What the plan records."""
        return {
            "parametrization": self.name,
            "base_width": self.base_width if self.mup else None,
            "width_multiplier": self.multiplier,
        }


def check_parametrization(value: Any) -> None:
    check_choice(
        "parametrization",
        value,
        PARAMETRIZATIONS,
        ": sp (standard) or mup (μP: lr and init tuned at base_width carry over to wider networks)",
    )


def parametrization_of(module: Any) -> Parametrization:
    """The parametrization of a LightningModule's `net` (or of a network); sp for a network
    that does not support μP."""
    net = getattr(module, "net", module)
    found = getattr(net, "parametrization", None)
    return found if isinstance(found, Parametrization) else Parametrization()


def check_width_knobs(cfg: DictConfig) -> None:
    """parametrization is sp or mup; base_width is null or a whole number, given only with
    mup, and mup only for a model whose network supports it."""
    check_parametrization(cfg.parametrization)
    base_width = cfg.base_width
    if base_width is not None:
        check_whole_number("base_width", base_width, 1, "64")
        if cfg.parametrization != "mup":
            raise ConfigError(
                f"base_width={shown(base_width)} is not allowed with parametrization="
                f"{cfg.parametrization}: base_width is the width at which lr and init are "
                f"right under μP, read only by parametrization=mup. Give parametrization=mup "
                f"base_width={base_width}, or leave base_width=null."
            )
    net = cfg.model.get("net") if isinstance(cfg.get("model"), DictConfig) else None
    if cfg.parametrization == "mup" and not (
        isinstance(net, DictConfig) and "parametrization" in net
    ):
        target = net.get("_target_") if isinstance(net, DictConfig) else None
        raise ConfigError(
            f"parametrization=mup is not available for this model ({target or 'no net'}): its "
            "network does not take `parametrization`. μP is built into model=mlp and model=gpt; "
            "use one of them, or parametrization=sp."
        )


def base_width_or(default: Any, *, _root_: DictConfig) -> Any:
    """`${trainlab.base_width:<width>}` in a model config: the `base_width` knob, or, when it
    is null, the width the model config itself is written with."""
    given = OmegaConf.select(_root_, "base_width")
    return default if given is None else given


def register_resolver() -> None:
    if not OmegaConf.has_resolver("trainlab.base_width"):
        OmegaConf.register_new_resolver("trainlab.base_width", base_width_or)


def refuse_lr_test_off_base(module: Any) -> None:
    """Lightning's LR range test sets every parameter group to one lr, which would drop μP's
    per-group multipliers: the test runs at the base width (m = 1), where they are all 1."""
    found = parametrization_of(module)
    if found.multiplier != 1.0:
        raise ConfigError(
            f"tune=lr is not available at parametrization=mup with width {found.width} and "
            f"base_width={found.base_width} (width multiplier {found.multiplier:g}): the LR "
            "range test gives every parameter group one lr, dropping μP's per-group "
            "multipliers. Tune at the base width, where μP is the standard parametrization "
            f"(e.g. the model at width {found.base_width}, or base_width={found.width}), then "
            "train wider with the lr it finds."
        )


def check_checkpoint_parametrization(checkpoint: dict[str, Any] | None, module: Any) -> None:
    """A checkpoint trained under one parametrization, built into a network of another, would
    compute other outputs from the same weights (μP multiplies the head's input and the
    attention scores): refused, naming the knobs that rebuild it."""
    saved = (checkpoint or {}).get("parametrization")
    ours = parametrization_of(module).as_plan()
    if saved is None or saved == ours:
        return

    def knobs(plan: dict[str, Any]) -> str:
        if plan["parametrization"] != "mup":
            return f"parametrization={plan['parametrization']}"
        return (
            f"parametrization=mup base_width={plan['base_width']} (width multiplier "
            f"{plan['width_multiplier']:g})"
        )

    raise ConfigError(
        f"the checkpoint was trained with {knobs(saved)}, and this config builds the network "
        f"with {knobs(ours)}: the same weights would give other outputs. Give the knobs it was "
        "trained with, and the same model width."
    )
