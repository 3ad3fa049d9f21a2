"""What `noise_scale=true` costs per optimizer step: issue 19, requirement 1 (target <= 5 %).

    OMP_NUM_THREADS=1 python scripts/bench_noise_scale.py              # digits MLP and a GPT
    python scripts/bench_noise_scale.py --repeats 5 --case mlp

Each case is trained with noise_scale=false and noise_scale=true, alternating, --repeats
times (so a slow spell of the shared machine hits both), each a `python train.py` subprocess
(cwd the repository root, threads=1, logger=none, callbacks=none, test=false, under a
temporary folder). Compared: `trained.loop_s` (Lightning's training loop, validation
included) per optimizer step; the medians' ratio is printed, with B_simple as measured.

  mlp  digits, batch 256 of micro batches of 32 (accumulation 8), 20 epochs
  gpt  experiment=gpt_small over 300 kB of bytes, batch 32 of micro batches of 8, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "mlp": ["data=digits", "batch_size=256", "micro_batch_size=32", "max_epochs=20"],
    "gpt": [
        "experiment=gpt_small",
        "data.max_bytes=300000",
        "batch_size=32",
        "micro_batch_size=8",
        "max_epochs=1",
    ],  # fmt: skip
}
COMMON = ["threads=1", "logger=none", "callbacks=none", "test=false"]


def one_run(case: str, on: bool, run_dir: Path) -> tuple[float, float | None]:
    """(loop seconds per optimizer step, B_simple or None)."""
    cmd = [sys.executable, "train.py", *CASES[case], *COMMON, f"noise_scale={str(on).lower()}",
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    trained = json.loads((run_dir / "metrics.json").read_text())["trained"]
    estimate = (trained.get("noise_scale") or {}).get("noise_scale")
    return trained["loop_s"] / trained["optimizer_steps"], estimate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_noise_scale_"))
    print("| case | ms/step off | ms/step on | on / off | B_simple |\n|---|---|---|---|---|")
    for case in CASES if args.case == "all" else [args.case]:
        times: dict[bool, list[float]] = {False: [], True: []}
        estimates = []
        for repeat in range(args.repeats):
            for on in (False, True):
                seconds, estimate = one_run(case, on, workdir / f"{case}_{on}_{repeat}")
                times[on].append(seconds)
                if estimate is not None:
                    estimates.append(estimate)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        shown = f"{statistics.median(estimates):.0f}" if estimates else "-"
        print(f"| {case} | {1000 * off:.2f} | {1000 * on:.2f} | {on / off:.3f} | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
