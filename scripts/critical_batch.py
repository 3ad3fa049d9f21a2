"""Does the gradient noise scale predict the critical batch? Steps to a target loss, measured.

    OMP_NUM_THREADS=1 python scripts/critical_batch.py --markdown          # digits (README)
    python scripts/critical_batch.py --case gpt --seeds 1                  # the byte-level GPT
    python scripts/critical_batch.py --seeds 1 --batch-sizes 16,64,256     # a quick look

McCandlish et al. (2018): training to a given loss takes S optimizer steps and E = S x B
samples, traded off as (S / S_min - 1)(E / E_min - 1) = 1, so S = S_min (1 + B_crit / B) with
the critical batch B_crit = E_min / S_min; and B_crit is about the noise scale B_simple.

For each batch size B (spanning 32x) and seed: one `python train.py` run (cwd the repository
root, OMP_NUM_THREADS=1, under a temporary folder or --workdir, whose finished runs are
reused) that trains until val/loss reaches --target (Lightning's EarlyStopping with
stopping_threshold, validating ten times an epoch), with lr_scaling=sqrt (Adam's rule) and
noise_scale=true over small micro batches (half the batch at the smallest B):
  digits  the MLP, Adam, lr 1e-3 at batch 64, micro batches of 8, to val/loss 0.15
  gpt     experiment=gpt_small made small (2 layers, n_embd 64, blocks of 64 bytes, 600 kB),
          AdamW at a constant lr 3e-3 at batch 32, clipped at norm 1, micro batches of 4, to 2.5,
          on one data split (split_seed=1) for every seed
S is its optimizer steps. The fit is least squares of S on 1/B (S = S_min + S_min B_crit / B).
B_simple is each run's mean over its trajectory (train/noise_scale as it trained), then the median
over runs. Printed: per B the steps, samples and B_simple; the fitted S_min, E_min, B_crit,
and B_crit / B_simple.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = [
    "lr_scaling=sqrt", "max_epochs=200",
    "callbacks=early_stopping", "callbacks.early_stopping.monitor=val/loss",
    "callbacks.early_stopping.patience=1000000", "noise_scale=true", "logger=none",
    "test=false", "checkpoint_every_n_steps=0", "checkpoint_every_s=0",
]  # fmt: skip
CASES = {
    "digits": {
        "label": "digits MLP",
        "overrides": [
            "data=digits",
            "model=mlp",
            "optimizer=adam",
            "lr=1e-3",
            "base_batch_size=64",
        ],  # fmt: skip
        "batch_sizes": "8,16,32,64,128,256",
        "micro": 8,
        "target": 0.15,
        "val_check_interval": 0.1,
    },
    "gpt": {
        "label": "experiment=gpt_small, 2 layers, n_embd 64, blocks of 64 bytes, constant lr",
        "overrides": [
            "experiment=gpt_small",
            "model.net.n_layer=2",
            "model.net.n_embd=64",
            "data.block_size=64",
            "data.max_bytes=600000",
            "scheduler=none",
            "grad_clip=1.0",
            "lr=3e-3",
            "base_batch_size=32",
            # seeds vary the weights and the order: seed 2's own split never got to 2.5
            "split_seed=1",
            "trainer.max_steps=3000",  # a run at a bad lr of --lr-grid stops, unreached
        ],  # fmt: skip
        "batch_sizes": "4,8,16,32,64,128",
        "micro": 4,
        "target": 2.5,
        "val_check_interval": 0.025,  # S is counted at validations: 40 an epoch
    },
}


def one_run(case: str, batch: int, seed: int, factor: float, target: float, workdir: Path) -> dict:
    """{steps, reached, noise_scale} of one run to the target, at `factor` x the case's lr
    (before the sqrt rule scales it to the batch)."""
    spec = CASES[case]
    tag = "" if factor == 1 else f"_lr{factor:g}"
    run_dir = workdir / case / f"b{batch}_t{target:g}_s{seed}{tag}"
    micro = spec["micro"] if batch > spec["micro"] else batch // 2  # two batch sizes
    overrides = [
        f"lr={float(o.split('=')[1]) * factor:g}" if o.startswith("lr=") else o
        for o in spec["overrides"]
    ]
    cmd = [sys.executable, "train.py", *overrides, *COMMON, f"batch_size={batch}",
           f"trainer.val_check_interval={spec['val_check_interval']}",
           f"micro_batch_size={micro}", f"+callbacks.early_stopping.stopping_threshold={target}",
           f"seed={seed}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    record_path = run_dir / "metrics.json"
    if not finished(record_path):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if not finished(record_path):
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    record = json.loads(record_path.read_text())
    trained = record["trained"]
    trajectory = [value for _step, value in trained["noise_scale"]["trajectory"]]
    return {
        "steps": trained["optimizer_steps"],
        "reached": (record["metrics"].get("val/loss") or 1e9) <= target,
        "noise_scale": statistics.mean(trajectory) if trajectory else None,
    }


def finished(path: Path) -> bool:
    try:
        return json.loads(path.read_text())["status"] == "completed"
    except (OSError, ValueError, KeyError):
        return False


def fit_critical_batch(batches: list[float], steps: list[float]) -> tuple[float, float]:
    """(S_min, B_crit) by least squares of S = S_min + S_min B_crit / B."""
    xs = [1 / b for b in batches]
    mean_x, mean_y = statistics.mean(xs), statistics.mean(steps)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, steps, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    intercept = mean_y - slope * mean_x
    if intercept <= 0:
        raise SystemExit(
            f"the fit gives S_min = {intercept:.1f} <= 0: the steps do not level off at large "
            "batches; add larger batch sizes or a lower --target"
        )
    return intercept, slope / intercept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), default="digits")
    parser.add_argument("--batch-sizes", help="default: the case's (spanning 32x)")
    parser.add_argument("--target", type=float, help="val/loss to reach (default: the case's)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument(
        "--lr-grid",
        default="1",
        help="multipliers on the case's lr, e.g. 0.5,1,2: per batch the lr that reaches the "
        "target in the fewest steps (mean over seeds) is the one counted",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, help="keep the runs; reuse the finished ones")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    spec = CASES[args.case]
    batches = [int(b) for b in (args.batch_sizes or spec["batch_sizes"]).split(",")]
    target = args.target if args.target is not None else spec["target"]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="critical_batch_"))
    factors = [float(f) for f in args.lr_grid.split(",")]
    points = [(b, s, f) for b in batches for s in range(1, args.seeds + 1) for f in factors]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda p: one_run(args.case, *p, target, workdir), points))
    steps, best_factor = {}, {}
    for b in batches:
        means = {}  # factor -> mean steps over the seeds, if every seed reached the target
        for f in factors:
            mine = [r for (pb, _, pf), r in zip(points, runs, strict=True) if (pb, pf) == (b, f)]
            if all(r["reached"] for r in mine):
                means[f] = statistics.mean(r["steps"] for r in mine)
        if not means:
            raise SystemExit(f"no lr of {factors} reached val/loss {target} at batch {b}")
        best_factor[b] = min(means, key=means.get)
        steps[b] = means[best_factor[b]]
    counted = [(p, r) for p, r in zip(points, runs, strict=True) if p[2] == best_factor[p[0]]]
    points, runs = [p for p, _ in counted], [r for _, r in counted]
    s_min, b_crit = fit_critical_batch(batches, [steps[b] for b in batches])
    simple = [r["noise_scale"] for r in runs if r["noise_scale"] is not None]
    b_simple = statistics.median(simple)
    print(f"\n{spec['label']} to val/loss {target:g}, {args.seeds} seed(s) per batch size")
    lr = next(float(o.split("=")[1]) for o in spec["overrides"] if o.startswith("lr="))
    print("\n| batch | lr x | steps S | samples E | S / S_min | fitted S | B_simple (run mean) |")
    print("|---|---|---|---|---|---|---|")
    for b in batches:
        ns = [r["noise_scale"] for (pb, _, _), r in zip(points, runs, strict=True) if pb == b]
        shown = ", ".join(f"{v:.0f}" for v in ns if v is not None)
        fitted = s_min * (1 + b_crit / b)
        print(f"| {b} | {best_factor[b]:g} | {steps[b]:.0f} | {steps[b] * b:.0f} | "
              f"{steps[b] / s_min:.2f} | {fitted:.0f} | {shown} |")  # fmt: skip
    print(f"(lr x: the multiplier on lr {lr:g} that reached it in the fewest steps, of "
          f"{args.lr_grid}, before lr_scaling=sqrt scales it to the batch)")  # fmt: skip
    print(f"\nS_min {s_min:.0f}, E_min {s_min * b_crit:.0f}, empirical B_crit = E_min / S_min "
          f"{b_crit:.0f}; B_simple (median over runs) {b_simple:.0f}; B_crit / B_simple "
          f"{b_crit / b_simple:.2f}")  # fmt: skip
    if args.json:
        summary = {"s_min": s_min, "b_crit": b_crit, "b_simple": b_simple, "steps": steps,
                   "best_lr_factor": best_factor,
                   "runs": [{"batch": b, "seed": s, "lr_factor": f, **r} for (b, s, f), r in
                            zip(points, runs, strict=True)]}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
