"""Does the lr tuned on the narrowest model still hold for the widest? SP against μP, measured.

    OMP_NUM_THREADS=1 python scripts/mup_transfer.py                 # both cases (README table)
    python scripts/mup_transfer.py --case mlp --seeds 1              # the quick one
    python scripts/mup_transfer.py --markdown --json mup.json --plot docs/mup_transfer.png
    python scripts/mup_transfer.py --case gpt --set model.net.output_multiplier=8   # any override

For each case a width ladder spanning 8x, an lr grid 2x apart, and parametrization=sp and
parametrization=mup (base_width = the narrowest width, so the two are the same model there):
every (parametrization, width, lr, seed) is one `python train.py` run (cwd: the repository
root, OMP_NUM_THREADS=1, --jobs at a time, under a temporary folder), scored by its
val/loss_best (the lowest validation loss; mean over seeds).

  gpt  experiment=gpt_small made small for a CPU: 2 layers, 4 heads, n_embd 32..256, blocks
       of 64 bytes, batch 32, one pass over 600 kB of the stdlib's source (a fixed token
       budget: 263 AdamW steps, warmup + cosine, clipping, weight decay 0.1 as gpt_small).
  mlp  the digits MLP (two hidden layers of 64..512), Adam, batch 64, 20 epochs.

Printed per parametrization: the best lr at each width (the grid's, and the vertex of a
parabola through it and its two neighbours in log lr), how far the best lr moves across the
ladder (max / min of the fitted ones), and at the widest model the loss at the lr carried
over from the narrowest against the best loss there. Targets (issue 18), PASS/FAIL: under
μP the best lr moves by at most 2x and the carried-over lr loses <= 1 % of loss at the
widest model. A best lr at the edge of the grid is flagged: widen the grid there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARAMETRIZATIONS = ("sp", "mup")

CASES = {
    "gpt": {
        "overrides": [
            "experiment=gpt_small",
            "model.net.n_layer=2",
            "model.net.n_head=4",
            "data.block_size=64",
            "data.max_bytes=600000",
            "batch_size=32",
        ],
        "width": lambda w: [f"model.net.n_embd={w}"],
        "widths": [32, 64, 128, 256],
        "lrs": [1e-3 * 2**k for k in range(-1, 6)],  # 5e-4 .. 3.2e-2
        "seeds": 1,
    },
    "mlp": {
        "overrides": [
            "model=mlp",
            "data=digits",
            "optimizer=adam",
            "batch_size=64",
            "max_epochs=20",
        ],
        "width": lambda w: [f"model.net.hidden_sizes=[{w},{w}]"],
        "widths": [64, 128, 256, 512],
        "lrs": [1e-3 * 2**k for k in range(-2, 6)],  # 2.5e-4 .. 3.2e-2
        "seeds": 2,
    },
}
COMMON = ["optimized_metric=val/loss_best", "test=false", "logger=none", "callbacks=none"]


def one_run(
    case: str, name: str, width: int, lr: float, seed: int, workdir: Path, extra: tuple = ()
) -> float:
    """val/loss_best of one run; inf for a run that diverged or failed. `extra`: overrides
    given with --set, which also name the runs' folder (so --workdir reuses only their own)."""
    spec = CASES[case]
    named = "+".join(extra).replace("=", "-")
    grid = case if not extra else f"{case}+" + re.sub(r"[^A-Za-z0-9.+_-]", "_", named)
    run_dir = workdir / grid / name / f"w{width}_lr{lr:g}_s{seed}"
    mup = [f"parametrization={name}"]
    if name == "mup":  # the narrowest width is the base: there μP is the standard model
        mup.append(f"base_width={spec['widths'][0]}")
    cmd = [
        sys.executable, "train.py", *spec["overrides"], *spec["width"](width), *mup, *COMMON,
        *extra, f"lr={lr}", f"seed={seed}", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    record = run_dir / "metrics.json"
    if not finished(record):  # a run of an earlier call with this --workdir is kept
        shutil.rmtree(run_dir, ignore_errors=True)  # one that was cut short starts again
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if not finished(record):  # a fault, not a diverged lr: the measurement stops
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    objective = json.loads(record.read_text()).get("objective")
    return float(objective) if objective is not None and math.isfinite(objective) else math.inf


def finished(record: Path) -> bool:
    try:
        return json.loads(record.read_text())["status"] in ("completed", "diverged")
    except (OSError, ValueError, KeyError):
        return False


def fitted_best(lrs: list[float], losses: list[float]) -> tuple[float, bool]:
    """(the best lr: the vertex of a parabola in log lr through the grid's best and its
    neighbours, or the grid's best at an edge; whether it is at an edge)."""
    i = min(range(len(lrs)), key=losses.__getitem__)
    if i in (0, len(lrs) - 1) or not all(map(math.isfinite, losses[i - 1 : i + 2])):
        return lrs[i], i in (0, len(lrs) - 1)
    x = [math.log(lr) for lr in lrs[i - 1 : i + 2]]
    y = losses[i - 1 : i + 2]
    curvature = (y[2] - 2 * y[1] + y[0]) / (x[1] - x[0]) ** 2
    slope = (y[2] - y[0]) / (x[2] - x[0])
    vertex = x[1] - slope / curvature if curvature > 0 else x[1]
    return math.exp(min(max(vertex, x[0]), x[2])), False


def summarize(case: str, losses: dict) -> dict:
    """Per parametrization: best lr per width, its shift, the carried-over lr's loss."""
    spec = CASES[case]
    lrs, widths = spec["lrs"], spec["widths"]
    summary = {}
    for name in PARAMETRIZATIONS:
        best = {}
        for w in widths:
            row = [losses[name][w][lr] for lr in lrs]
            fitted, edge = fitted_best(lrs, row)
            grid = lrs[min(range(len(lrs)), key=row.__getitem__)]
            best[w] = {"grid_lr": grid, "lr": fitted, "edge": edge, "loss": min(row)}
        carried = best[widths[0]]["grid_lr"]
        wide = widths[-1]
        at_wide = losses[name][wide][carried]
        fitted = [best[w]["lr"] for w in widths]
        summary[name] = {
            "best": best,
            "shift": max(fitted) / min(fitted),
            "carried_lr": carried,
            "carried_loss": at_wide,
            "carried_loss_pct": 100 * (at_wide / best[wide]["loss"] - 1),
        }
    return summary


def report(case: str, losses: dict, summary: dict, markdown: bool, extra: tuple = ()) -> None:
    spec = CASES[case]
    widths = spec["widths"]
    given = f", {' '.join(extra)}" if extra else ""
    print(
        f"\n## {case}: widths {widths}, lr grid {spec['lrs'][0]:g}..{spec['lrs'][-1]:g} (2x){given}"
    )
    if markdown:
        print("\n| parametrization | " + " | ".join(f"best lr @ {w}" for w in widths)
              + " | best-lr shift | loss @ widest: best / carried-over lr |")  # fmt: skip
        print("|---" * (len(widths) + 3) + "|")
    for name in PARAMETRIZATIONS:
        s = summary[name]
        cells = [
            f"{s['best'][w]['lr']:.2g}" + (" (edge)" if s["best"][w]["edge"] else "")
            for w in widths
        ]
        wide = s["best"][widths[-1]]["loss"]
        carried = f"{wide:.4f} / {s['carried_loss']:.4f} ({s['carried_loss_pct']:+.1f} %)"
        if markdown:
            print(f"| {name} | " + " | ".join(cells) + f" | {s['shift']:.2f}x | {carried} |")
        else:
            print(f"{name:>4}: best lr per width {', '.join(cells)}; shift {s['shift']:.2f}x; "
                  f"at width {widths[-1]}: best {carried} at lr {s['carried_lr']:g}")  # fmt: skip
    mup = summary["mup"]
    print(f"μP best lr moves {mup['shift']:.2f}x (target <= 2x): "
          f"{'PASS' if mup['shift'] <= 2 else 'FAIL'}; carried-over lr loses "
          f"{mup['carried_loss_pct']:.2f} % at the widest (target <= 1 %): "
          f"{'PASS' if mup['carried_loss_pct'] <= 1 else 'FAIL'}")  # fmt: skip
    print("loss per lr (rows: width; mean over seeds):")
    for name in PARAMETRIZATIONS:
        for w in widths:
            row = " ".join(f"{losses[name][w][lr]:7.4f}" for lr in spec["lrs"])
            print(f"  {name:>4} {w:>4}: {row}")


def plot(results: dict, path: Path, extra: tuple = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.6 * len(results)), squeeze=False)
    for row, (case, (losses, summary)) in enumerate(results.items()):
        spec = CASES[case]
        finite = [v for n in losses.values() for w in n.values() for v in w.values()
                  if math.isfinite(v)]  # fmt: skip
        top = min(max(finite), 1.5 * min(finite) + 0.5)
        for column, name in enumerate(PARAMETRIZATIONS):
            ax = axes[row][column]
            for i, w in enumerate(spec["widths"]):
                color = plt.get_cmap("viridis")(i / (len(spec["widths"]) - 1))
                ys = [losses[name][w][lr] for lr in spec["lrs"]]
                ax.plot(spec["lrs"], ys, marker="o", ms=3, color=color, label=f"width {w}")
                ax.axvline(summary[name]["best"][w]["lr"], color=color, ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_ylim(top=top)
            ax.set_xlabel("lr")
            ax.set_ylabel("val/loss_best")
            shift = summary[name]["shift"]
            ax.set_title(f"{case}, {name}: best lr moves {shift:.2f}x", fontsize=10)
            ax.grid(True, alpha=0.3)
        axes[row][1].legend(fontsize=7)
    if extra:
        fig.suptitle(" ".join(extra), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\n{path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--seeds", type=int, help="seeds per point (default: the case's)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--set", action="append", default=[], metavar="OVERRIDE",
        help="a train.py override for every run, e.g. model.net.output_multiplier=8",
    )  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="README tables")
    parser.add_argument("--json", type=Path, help="write every loss and the summaries here")
    parser.add_argument("--plot", type=Path, help="PNG: loss against lr per width, SP | μP")
    parser.add_argument(
        "--workdir", type=Path, help="keep the runs here; reuse the finished ones (default: temp)"
    )
    args = parser.parse_args()
    cases = list(CASES) if args.case == "all" else [args.case]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mup_transfer_"))
    results, raw = {}, {}
    for case in cases:
        spec = CASES[case]
        seeds = range(1, (args.seeds or spec["seeds"]) + 1)
        points = [(n, w, lr, s) for n in PARAMETRIZATIONS for w in spec["widths"]
                  for lr in spec["lrs"] for s in seeds]  # fmt: skip
        with ThreadPoolExecutor(args.jobs) as pool:
            scores = list(
                pool.map(lambda p, c=case: one_run(c, *p, workdir, tuple(args.set)), points)
            )
        losses: dict = {n: {w: {} for w in spec["widths"]} for n in PARAMETRIZATIONS}
        for (n, w, lr, _s), score in zip(points, scores, strict=True):
            losses[n][w].setdefault(lr, []).append(score)
        losses = {n: {w: {lr: sum(v) / len(v) for lr, v in row.items()} for w, row in ws.items()}
                  for n, ws in losses.items()}  # fmt: skip
        summary = summarize(case, losses)
        report(case, losses, summary, args.markdown, tuple(args.set))
        results[case] = (losses, summary)
        raw[case] = {"losses": losses, "summary": summary, "seeds": len(seeds)}
    if args.plot:
        plot(results, args.plot, tuple(args.set))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
