"""GPU check: run the template's large-model paths on this machine's GPUs and print a table.

    python scripts/gpu_check.py                 # on a GPU machine, a few minutes
    python scripts/gpu_check.py --steps 100 --json gpu_check.json

Each row is a real `python train.py experiment=gpt_medium ...` run, limited to a few optimizer
steps: bf16-mixed, bf16-mixed with torch.compile, FSDP over all GPUs, and the digits MLP on
`trainer=gpu` with `tune=batch_size` (Lightning's memory finder). It reads each run's
metrics.json and prints tokens/s and MFU (model FLOPs utilization: achieved training FLOP/s
over the GPU's peak dense bf16 FLOP/s). `--cpu-smoke` runs tiny versions on the CPU, to check
the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# peak dense bf16 FLOP/s for GPUs Lightning's table may not name (H200 reports "NVIDIA H200")
PEAK_BF16 = {"h200": 989e12, "h100": 989e12, "a100": 312e12, "l40s": 362e12}


def peak_flops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    from lightning.fabric.utilities.throughput import get_available_flops

    known = get_available_flops(torch.device("cuda"), torch.bfloat16)
    if known:
        return float(known)
    name = torch.cuda.get_device_name().lower()
    return next((flops for chip, flops in PEAK_BF16.items() if chip in name), None)


def run(name: str, overrides: list[str], out_dir: Path, timeout: int) -> dict:
    run_dir = out_dir / name
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    print(f"\n=== {name}: {' '.join(overrides)}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        tail = (proc.stdout + proc.stderr)[-1500:]
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        tail, rc = f"timed out after {timeout} s", -1
    wall = time.perf_counter() - started
    metrics_file = run_dir / "metrics.json"
    record = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    if rc != 0 or record.get("status") != "completed":
        print(f"FAILED (rc={rc}):\n{tail}", flush=True)
    return {"name": name, "rc": rc, "wall_s": round(wall, 1), "record": record}


def summarize(result: dict, peak: float | None) -> dict:
    record = result["record"]
    trained = record.get("trained", {})
    throughput = trained.get("throughput") or {}
    flops = throughput.get("device/flops_per_sec")
    return {
        "run": result["name"],
        "status": record.get("status", f"rc={result['rc']}"),
        "world_size": record.get("plan", {}).get("world_size"),
        "micro_batch": record.get("plan", {}).get("micro_batch_size"),
        "tokens/s/device": throughput.get("device/items_per_sec"),
        "samples/s/device": throughput.get("device/samples_per_sec"),
        "TFLOP/s/device": flops / 1e12 if flops else None,
        "MFU": flops / peak if flops and peak else throughput.get("device/mfu"),
        "val/bpb": record.get("metrics", {}).get("val/bpb"),
        "wall_s": result["wall_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per GPT run")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per run")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny runs on the CPU")
    parser.add_argument("--only", default="", help="run only the runs whose name has this")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    short = [
        f"trainer.limit_train_batches={args.steps}",  # one short epoch, then validation
        "trainer.val_check_interval=1.0",
        "trainer.limit_val_batches=4",
        "test=false",
        "logger=none",
        "callbacks=throughput",
    ]
    if args.cpu_smoke:
        hardware = [
            "trainer=cpu",
            "model.net.n_layer=1",
            "model.net.n_embd=32",
            "model.net.n_head=2",
            "data.max_bytes=200000",
            "data.block_size=64",
        ]
        runs = {
            "gpt bf16-mixed": ["experiment=gpt_medium", "precision=bf16-mixed", *hardware],
            "mlp tune=batch_size": ["trainer=cpu", "tune=batch_size", "max_epochs=1"],
        }
    else:
        runs = {
            "gpt bf16-mixed": ["experiment=gpt_medium", "trainer=gpu", "precision=bf16-mixed"],
            "gpt bf16-mixed compile": [
                "experiment=gpt_medium",
                "trainer=gpu",
                "precision=bf16-mixed",
                "compile=true",
            ],
            "gpt fsdp bf16-mixed": [
                "experiment=gpt_medium",
                "trainer=fsdp",
                "precision=bf16-mixed",
            ],
            "mlp gpu tune=batch_size": [
                "trainer=gpu",
                "precision=bf16-mixed",
                "tune=batch_size",
                "batch_size=512",
                "max_epochs=2",
            ],
        }
    peak = peak_flops()
    results = []
    for name, overrides in runs.items():
        if args.only not in name:
            continue
        extra = short if name.startswith("gpt") else ["logger=none"]
        results.append(
            run(
                name.replace(" ", "_").replace("=", "-"),
                [*overrides, *extra],
                args.out,
                args.timeout,
            )
        )
    table = [summarize(r, peak) for r in results]

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    print(
        f"\nGPU check on {device} x {count}, torch {torch.__version__}, "
        f"peak bf16 {peak / 1e12 if peak else 'unknown'} TFLOP/s"
    )
    import pandas as pd

    print(pd.DataFrame(table).to_markdown(index=False, floatfmt=".4g"))
    for r in results:
        tuned = r["record"].get("plan", {}).get("tuned", {}).get("batch_size")
        if tuned:
            print(f"{r['name']}: {tuned}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"device": device, "count": count, "peak": peak, "rows": table, "runs": results},
                indent=1,
            )
        )
    return 0 if all(row["status"] == "completed" for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
