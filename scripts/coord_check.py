"""μP's coordinate check: does any layer's activation grow with width in the first steps?

    python scripts/coord_check.py model=gpt parametrization=mup     # PNG: activations vs width
    python scripts/coord_check.py model=mlp lr=0.01 steps=10 factors=1,2,4,8 out=coord.png

Arguments are train.py's overrides (model, data, optimizer, lr, base_width, precision, ...)
plus `out=` (the PNG; default outputs/coord_check_<model>.png), `steps=` (optimizer steps,
default 10) and `factors=` (widths as multiples of the configured one, default 1,2,4,8).
Both parametrizations are run side by side whatever `parametrization=` says: for each width
the network is built by its class's `at_width` (trainlab.models.nets.MLP, models.gpt.GPT),
seeded alike, and trained `steps` steps with Lightning on the same batches; a forward hook on
every weight layer (Linear, Embedding, Conv) records the mean |output| on each training batch.
`base_width` stays the configured one (default: the model config's own width), so the first
factor is μP's base only when it equals it.

Reading it: under the standard parametrization the hidden and output activations grow with
width after a few steps (the update is too large for a wide layer), so the lr tuned narrow
blows up wide; under μP every curve is flat in width. The script prints, per layer, the
growth from the narrowest to the widest network at the last step. The run defaults are those
of a coordinate check, not of training: scheduler=none (a constant lr), batch_size=8,
callbacks=none logger=none; each can be overridden.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ("out", "steps", "factors")
CHECK_DEFAULTS = {"scheduler": "none", "batch_size": "8", "callbacks": "none", "logger": "none"}
CHECK_LABEL = {"sp": "standard (sp)", "mup": "μP (mup)"}


def split_arguments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(the script's own options, train.py overrides with this script's defaults)."""
    options = {}
    overrides = []
    for argument in argv:
        key, _, value = argument.partition("=")
        if key in OPTIONS:
            options[key] = value
        elif key.lstrip("+~") != "parametrization":
            overrides.append(argument)
    given = {a.partition("=")[0].lstrip("+~") for a in overrides}
    overrides = [f"{k}={v}" for k, v in CHECK_DEFAULTS.items() if k not in given] + overrides
    return options, overrides


def compose_config(overrides: list[str], parametrization: str):
    from hydra import compose, initialize_config_dir

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    os.environ.setdefault("TRAINLAB_RUN_ID", "coord_check")
    if parametrization == "sp":  # base_width belongs to mup; sp ignores width multipliers
        overrides = [o for o in overrides if o.partition("=")[0].lstrip("+~") != "base_width"]
    from hydra.core.hydra_config import HydraConfig

    scratch = tempfile.mkdtemp(prefix="coord_check_")  # Lightning's root dir: nothing is kept
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"parametrization={parametrization}", f"hydra.run.dir={scratch}"]
            + overrides,
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)  # the config's ${hydra:...} paths resolve
    from trainlab.config_checks import check_config, overrides_and_groups
    from trainlab.data.sizing import check_sized_from_data

    given, groups = overrides_and_groups()
    check_config(cfg, given, groups)  # train.py's refusals, in its words
    check_sized_from_data(cfg, dict(cfg.hydra.runtime.choices), given)
    return cfg


def at_width(cfg, factor: float):
    """`cfg` with its network `factor` times as wide, base_width held where it was."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from trainlab.checks import ConfigError

    net = cfg.model.net
    widen = getattr(get_class(net._target_), "at_width", None)
    if widen is None:
        raise ConfigError(
            f"the coordinate check widens the network by its class's at_width, which "
            f"{net._target_} does not have: use model=mlp or model=gpt."
        )
    arguments = OmegaConf.to_container(net, resolve=True)
    widened = OmegaConf.create(widen(arguments, factor))
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.model.net = widened
    return cfg


class ActivationRecorder:
    """Forward hooks on a network's weight layers: mean |output| per layer per training batch."""

    def __init__(self, net) -> None:
        from torch import nn

        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] | None = None
        kinds = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
        for name, layer in net.named_modules():
            if isinstance(layer, kinds):
                layer.register_forward_hook(self.hook(name))

    def hook(self, name: str):
        def record(_module, _inputs, output) -> None:
            if self.current is not None:
                self.current[name] = float(output.detach().float().abs().mean())

        return record

    def callback(self):
        import lightning as L

        recorder = self

        class Record(L.Callback):
            def on_train_batch_start(self, *_args) -> None:
                recorder.current = {}

            def on_train_batch_end(self, *_args) -> None:
                recorder.steps.append(recorder.current)
                recorder.current = None

        return Record()


def measure(cfg, steps: int) -> tuple[int, list[dict[str, float]]]:
    """(width, mean |activation| per layer at each of `steps` training batches)."""
    import lightning as L
    from omegaconf import OmegaConf

    from trainlab.building import (
        build_module,
        build_trainer,
        callbacks_for_optimizer,
        optimizer_and_scheduler,
    )
    from trainlab.models.width import parametrization_of
    from trainlab.plan import make_plan

    plan = make_plan(
        batch_size=cfg.batch_size,
        micro_batch_size=cfg.micro_batch_size,
        world_size=1,
        lr=cfg.lr,
        lr_scaling=cfg.lr_scaling,
        base_batch_size=cfg.base_batch_size,
        lr_scaling_exponent=cfg.lr_scaling_exponent,
    )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, batch_size=plan.micro_batch_size)
    optimizer, scheduler = optimizer_and_scheduler(cfg, plan.lr_effective)
    module = build_module(cfg.model, cfg.task, optimizer, scheduler)
    recorder = ActivationRecorder(module.net)
    trainer_cfg = OmegaConf.merge(
        cfg.trainer,
        {
            "max_steps": steps,
            "max_epochs": -1,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "accumulate_grad_batches": plan.accumulate_grad_batches,
        },
    )
    callbacks = [recorder.callback(), *callbacks_for_optimizer(module.optimizer_factory)]
    trainer = build_trainer(trainer_cfg, callbacks, [])
    trainer.fit(module, datamodule=datamodule)
    return parametrization_of(module).width, recorder.steps[: steps * plan.accumulate_grad_batches]


def growth(curves: dict[int, list[dict[str, float]]], step: int) -> dict[str, float]:
    """Per layer: mean |activation| at the widest width over that at the narrowest."""
    narrow, wide = curves[min(curves)], curves[max(curves)]
    return {name: wide[step][name] / narrow[step][name] for name in narrow[step]}


def plot(results, steps: int, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = sorted({0, (steps - 1) // 2, steps - 1})
    fig, axes = plt.subplots(
        len(shown), 2, figsize=(11, 3.2 * len(shown)), sharey="row", squeeze=False
    )
    for column, (name, curves) in enumerate(results.items()):
        widths = sorted(curves)
        layers = list(curves[widths[0]][0])
        colors = plt.get_cmap("viridis")
        for row, step in enumerate(shown):
            ax = axes[row][column]
            for i, layer in enumerate(layers):
                values = [curves[w][step][layer] for w in widths]
                ax.plot(widths, values, marker="o", ms=3, color=colors(i / max(1, len(layers) - 1)),
                        label=layer)  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{CHECK_LABEL[name]}: step {step + 1}", fontsize=10)
            ax.set_xlabel("width")
            ax.grid(True, alpha=0.3)
            if column == 0:
                ax.set_ylabel("mean |activation|")
    axes[0][1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def quiet_lightning() -> None:
    """Eight short fits: Lightning's per-fit banners and tips would bury the table."""
    import logging

    import lightning  # noqa: F401  (it sets its loggers' level when imported)

    from trainlab.quiet import quiet_framework

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_framework()


def main(argv: list[str]) -> int:
    from trainlab.checks import ConfigError
    from trainlab.faults import describe

    options, overrides = split_arguments(argv)
    quiet_lightning()
    try:
        steps = int(options.get("steps", 10))
        factors = [float(f) for f in options.get("factors", "1,2,4,8").split(",")]
        if steps < 1 or len(factors) < 2 or min(factors) <= 0:
            raise ValueError
    except ValueError:
        print(
            f"Error: steps={options.get('steps')} factors={options.get('factors')}: steps is "
            "a whole number >= 1 and factors at least two positive widths as multiples of "
            "the configured one, e.g. steps=10 factors=1,2,4,8.",
            file=sys.stderr,
        )
        return 2
    results: dict[str, dict[int, list[dict[str, float]]]] = {}
    try:
        for name in ("sp", "mup"):
            cfg = compose_config(overrides, name)
            if cfg.compile:
                raise ConfigError(
                    "compile=true is not available in the coordinate check: its forward hooks "
                    "read the eager network. Leave compile=false."
                )
            results[name] = dict(measure(at_width(cfg, f), steps) for f in factors)
    except Exception as err:  # one line, as train.py gives it
        print(f"Error: {describe(err)}", file=sys.stderr)
        return 2
    model = cfg.hydra.runtime.choices.get("model", "model")
    out = Path(options.get("out", ROOT / "outputs" / f"coord_check_{model}.png"))
    widths = sorted(results["mup"])
    title = (
        f"coordinate check: model={model}, optimizer={cfg.hydra.runtime.choices.optimizer}, "
        f"lr={cfg.lr:g}, widths {widths[0]}..{widths[-1]}, base_width "
        f"{cfg.model.net.get('base_width')}, {steps} steps"
    )
    plot(results, steps, title, out)
    last = {name: growth(curves, steps - 1) for name, curves in results.items()}
    print(f"mean |activation| at step {steps}, width {widths[-1]} / width {widths[0]}:")
    print(f"  {'layer':<28} {'sp':>8} {'mup':>8}")
    for layer in last["sp"]:
        print(f"  {layer:<28} {last['sp'][layer]:>8.3g} {last['mup'][layer]:>8.3g}")
    for name, ratios in last.items():
        layer = max(ratios, key=lambda k: abs(math.log(ratios[k])))
        print(f"{CHECK_LABEL[name]}: largest change {ratios[layer]:.3g}x ({layer})")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
