"""Where to start with each optimizer: the best lr of a small grid, and its mean ± std over seeds.

    OMP_NUM_THREADS=1 python scripts/optimizer_table.py digits            # 3 seeds, ~15 min
    OMP_NUM_THREADS=1 python scripts/optimizer_table.py gpt_small         # 1 seed
    python scripts/optimizer_table.py digits --only muon,lion --out /tmp/t
    python scripts/optimizer_table.py digits --summarize-only --out outputs/optimizer_table/digits
    python scripts/optimizer_table.py gpt_small --only muon --grid 0.1 --suffix .more  # one lr more

For each optimizer it runs one Hydra sweep (`python train.py -m optimizer=<name> lr=<grid>
seed=<seeds>`), with a grid of four lrs around where that optimizer's lr usually lies (Lion's
is smaller than Adam's, SGD's and LARS's larger), then reads every job's metrics.json. The
best lr is the one with the best mean objective (val); the table gives that mean ± std (sample
std over seeds) and the test metric of the same jobs, and says when the best lr sits at an edge
of its grid (the optimum may lie beyond). It prints a markdown table and writes it to
<out>/table.md; README's "Choosing the optimizer" table comes from it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")

ADAM_GRID = "3e-4,1e-3,3e-3,1e-2"
GRIDS = {  # optimizer -> the lrs tried on the digits MLP (batch 64, constant lr)
    "digits": {
        "adam": ADAM_GRID,
        "adamw": ADAM_GRID,
        "sgd_momentum": "1e-2,3e-2,1e-1,3e-1",
        "muon": ADAM_GRID,
        "adamw_schedulefree": ADAM_GRID,
        "lamb": "1e-3,3e-3,1e-2,3e-2",
        "lars": "0.3,1,3,10",
        "lion": "1e-4,3e-4,1e-3,3e-3",
        "soap": ADAM_GRID,
        "adopt": ADAM_GRID,
        "adam+ema": ADAM_GRID,  # adam with callbacks=ema (decay 0.999, warmed up)
    },
    "gpt_small": {  # warmup_cosine, weight_decay 0.1, grad_clip 1.0 (the experiment's own)
        "adamw": "1e-3,3e-3,1e-2",
        "muon": "3e-3,1e-2,3e-2",
        "adamw_schedulefree": "1e-3,3e-3,1e-2",
        "lion": "3e-4,1e-3,3e-3",
        "lamb": "1e-2,3e-2,1e-1",
        "soap": "3e-3,1e-2,3e-2",
        "adopt": "1e-3,3e-3,1e-2",
    },
}
SETUPS = {  # the overrides of each setup, its seeds and its test metric
    "digits": ([], "1,2,3", "test/acc"),
    # 1 MB of text (two thirds of the experiment's) so that the grid fits in ~20 minutes on
    # two cores (two instances, --only); text has no test split: val/bpb of the last epoch
    "gpt_small": (["experiment=gpt_small", "data.max_bytes=1000000"], "1", "val/bpb"),
}
SCHEDULE_FREE = {"adamw_schedulefree"}  # take no scheduler (their own warmup)


def run_sweep(setup: str, name: str, grid: str, out: Path, suffix: str = "") -> None:
    """One sweep of `name`: an optimizer, or `<optimizer>+ema` for it with callbacks=ema."""
    overrides, seeds, _ = SETUPS[setup]
    optimizer, _, averaged = name.partition("+")
    extra = ["scheduler=none"] if optimizer in SCHEDULE_FREE else []
    extra += ["callbacks=ema"] if averaged == "ema" else []
    command = [
        sys.executable,
        "train.py",
        "-m",
        *overrides,
        f"optimizer={optimizer}",
        *extra,
        f"lr={grid}",
        f"seed={seeds}",
        "split_seed=0",  # one split: seeds vary the weights and the order only
        "logger=none",
        "threads=1",
        f"hydra.sweep.dir={out / (name + suffix)}",
    ]
    print("+", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def read_jobs(sweep: Path) -> list[dict]:
    jobs = []
    for path in sorted(sweep.glob("*/metrics.json")):
        record = json.loads(path.read_text())
        if record.get("status") in ("completed", "diverged"):
            jobs.append(record)
    return jobs


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def summarize(setup: str, out: Path, optimizers: list[str]) -> str:
    test_metric = SETUPS[setup][2]
    rows = []
    objective_name = direction = None
    for optimizer in optimizers:
        # <name>.more*: lrs added after the first sweep (--grid ... --suffix .more)
        jobs = [
            j
            for sweep in [out / optimizer, *out.glob(f"{optimizer}.more*")]
            for j in read_jobs(sweep)
        ]
        if not jobs:
            continue
        objective_name, direction = jobs[0]["optimized_metric"], jobs[0]["direction"]
        by_lr: dict[float, list[dict]] = {}
        for job in jobs:
            by_lr.setdefault(float(job["hparams"]["lr"]), []).append(job)
        sign = 1 if direction == "maximize" else -1

        def score(lr: float, by_lr=by_lr, sign=sign) -> float:
            return sign * statistics.mean(float(j["objective"]) for j in by_lr[lr])

        lrs = sorted(by_lr)
        best = max(lrs, key=score)
        chosen = by_lr[best]
        edge = " (grid edge)" if best in (lrs[0], lrs[-1]) else ""
        tests = [j["metrics"][test_metric] for j in chosen if test_metric in j["metrics"]]
        diverged = sum(j["status"] == "diverged" for j in jobs)
        rows.append(
            f"| `{optimizer}` | {', '.join(f'{lr:g}' for lr in lrs)} | **{best:g}**{edge} | "
            f"{mean_std([float(j['objective']) for j in chosen])} | {mean_std(tests)} | "
            f"{len(chosen)} | {diverged} |"
        )
    header = (
        f"| optimizer | lrs tried | best lr | {objective_name} (mean ± std) | {test_metric} | "
        "seeds | diverged jobs |\n|---|---|---|---|---|---|---|"
    )
    return "\n".join([header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("setup", choices=sorted(SETUPS))
    parser.add_argument("--only", help="comma-separated optimizers (default: all of the setup)")
    parser.add_argument("--out", type=Path, help="default: outputs/optimizer_table/<setup>")
    parser.add_argument("--summarize-only", action="store_true", help="read the sweeps in --out")
    parser.add_argument("--grid", help="other lrs (e.g. 0.1) for --only's optimizers")
    parser.add_argument("--suffix", default="", help="sweep dir suffix, e.g. .more (with --grid)")
    args = parser.parse_args()
    grids = GRIDS[args.setup]
    optimizers = args.only.split(",") if args.only else list(grids)
    out = (args.out or ROOT / "outputs" / "optimizer_table" / args.setup).resolve()
    if not args.summarize_only:
        for optimizer in optimizers:
            if (out / (optimizer + args.suffix)).exists():
                print(f"{out / (optimizer + args.suffix)} exists: summarized as it is", flush=True)
                continue
            run_sweep(args.setup, optimizer, args.grid or grids[optimizer], out, args.suffix)
    table = summarize(args.setup, out, optimizers)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
