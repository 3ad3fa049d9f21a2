"""Plot a learning-rate schedule to PNG without training.

    python scripts/plot_schedule.py scheduler=wsd max_epochs=30
    python scripts/plot_schedule.py scheduler=warmup_cosine warmup=0.1 min_lr_ratio=0.1 \
        batch_size=256 out=outputs/warmup_cosine.png

Arguments are the same overrides as train.py (plus `out=` for the PNG path and
`world_size=` to plan for more devices than this machine has). The number of optimizer
steps comes from the same plan as training: data size, batch size, micro batch and
accumulation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from trainlab.batch_warmup import (
        default_micro_batch,
        lr_factor,
        planned_warmup,
        warming_up,
    )
    from trainlab.checks import ConfigError
    from trainlab.plan import make_plan, micro_batches_per_epoch, optimizer_steps_per_epoch

    options = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in ("out", "world_size"))
    overrides = [a for a in argv if a.split("=", 1)[0] not in options]
    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    os.environ.setdefault("TRAINLAB_RUN_ID", "plot")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    name = cfg.hydra.runtime.choices.get("scheduler", "scheduler")
    spec = instantiate(cfg.scheduler)
    if spec is None or spec.monitor is not None:
        why = "it keeps the lr constant" if spec is None else f"it follows {spec.monitor}"
        print(
            f"Error: scheduler={name} cannot be plotted without training: {why}.", file=sys.stderr
        )
        return 2
    world_size = int(options.get("world_size", 1))
    try:
        plan = make_plan(
            batch_size=cfg.batch_size,
            micro_batch_size=default_micro_batch(cfg, world_size),
            world_size=world_size,
            lr=cfg.lr,
            lr_scaling=cfg.lr_scaling,
            base_batch_size=cfg.base_batch_size,
        )
        train_size = instantiate(cfg.data, batch_size=plan.micro_batch_size).train_size()
        per_epoch = optimizer_steps_per_epoch(train_size, plan)
        total = per_epoch * cfg.max_epochs
        epoch_ends = {per_epoch * (e + 1) - 1 for e in range(cfg.max_epochs)}
        factors = [1.0] * total  # batch_size_warmup: the lr rule at each step's batch
        if warming_up(cfg.get("batch_size_warmup")):
            batches = micro_batches_per_epoch(train_size, plan)
            warm = planned_warmup(cfg.batch_size_warmup, plan, batches, cfg.max_epochs, None)
            total, factors, epoch_ends = int(warm.optimizer_steps), [], set()
            for _ in range(cfg.max_epochs):  # Lightning's steps: see trainlab.batch_warmup
                done = 0
                while done < batches:
                    accumulation = warm.accumulation_at(len(factors))
                    taken = min(accumulation, batches - done)
                    per_micro = plan.micro_batch_size * plan.world_size
                    # the rule at the step's accumulation, as the run applies it (a short
                    # last step of an epoch too)
                    factors.append(lr_factor(plan, accumulation * per_micro))
                    done += taken
                epoch_ends.add(len(factors) - 1)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=plan.lr_effective)
    length = total if spec.interval == "step" else cfg.max_epochs
    try:
        scheduler = spec.lightning_config(optimizer, length)["scheduler"]
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    lrs = []
    for step in range(total):
        lrs.append(optimizer.param_groups[0]["lr"] * factors[step])
        optimizer.step()
        if spec.interval == "step" or step in epoch_ends:
            scheduler.step()

    out = Path(options.get("out", ROOT / "outputs" / f"schedule_{name}.png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(total), lrs)
    steps = f"{per_epoch} steps" if total == per_epoch * cfg.max_epochs else "warmup's steps"
    ax.set_xlabel(f"optimizer step ({cfg.max_epochs} epochs x {steps})")
    ax.set_ylabel("learning rate")
    ax.set_title(
        f"scheduler={name}: lr {plan.lr_effective:g}, batch {plan.batch_size}, "
        f"{total} optimizer steps"
    )
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"{out}  (peak lr {max(lrs):.4g}, last lr {lrs[-1]:.4g}, {total} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
