"""What the task's torchmetrics scores cost the training loop: issue 12, requirement 2.

    OMP_NUM_THREADS=1 python scripts/bench_task_metrics.py            # digits, 3 rounds
    python scripts/bench_task_metrics.py --data breast_cancer --rounds 5

Each variant is one in-process run of the pipeline (trainlab.run.train) on the same data,
seed and model, differing only in `task.metrics`: none (the loss and the running means only,
the path the training split always takes), the data's default metrics, and every metric of
its kind. The variants run one after the other in each round, so a slow spell of the shared
machine hits all of them; the table gives each variant's median `trained.loop_s` (first
training batch to last validation) and its ratio to `none`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

EVERY = {
    "digits": "[acc,f1,precision,recall,auroc,ap]",
    "breast_cancer": "[auroc,acc,f1,precision,recall,ap]",
    "diabetes": "[mse,rmse,mae,r2]",
}


def loop_seconds(data: str, metrics: str | None, out: Path) -> float:
    import json

    from conftest import compose_run
    from trainlab.run import train

    overrides = [f"data={data}", "logger=none", "callbacks=none", "threads=1"]
    if metrics is not None:
        overrides.append(f"task.metrics={metrics}")
    cfg = compose_run(overrides, out)
    if metrics is not None and cfg.optimized_metric.split("/")[-1].removesuffix("_best") not in (
        metrics.strip("[]").split(",") + ["loss"]
    ):
        cfg.optimized_metric = "val/loss_best"  # `none` logs no score to optimize
    train(cfg)
    return json.loads((out / "metrics.json").read_text())["trained"]["loop_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=sorted(EVERY))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variants = {"none": "[]", "default": None, "every": EVERY[args.data]}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, metrics in variants.items():
                seconds = loop_seconds(args.data, metrics, Path(tmp) / f"{name}{r}")
                times[name].append(seconds)
                print(f"round {r + 1}: {name:8s} loop {seconds:.3f} s", flush=True)
    base = statistics.median(times["none"])
    print(f"\ndata={args.data}, {args.rounds} rounds, median loop_s (20 epochs)")
    print("| task.metrics | loop s | vs none |")
    print("|---|---|---|")
    for name, metrics in variants.items():
        median = statistics.median(times[name])
        shown = metrics or "(the data's default)"
        print(f"| {name}: {shown} | {median:.3f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
