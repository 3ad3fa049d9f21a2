"""Where the template's loop time goes: the default run, the run stripped to Lightning's own
loop, and the default with each callback (or the logger) left out, as jobs of one sweep.

    OMP_NUM_THREADS=1 python scripts/bench_callbacks.py              # ~2 minutes on 2 cores
    python scripts/bench_callbacks.py --repeats 16 --markdown
    python scripts/bench_callbacks.py --only default,stripped        # issue 17's first ratio

The digits run of scripts/bench.py (Adam, batch 64, 20 epochs, seed 42). Every variant is a
job of one in-process sweep, `python train.py -m seed=42,42,... +bench_variant=default,
stripped,...` (the variants are configs written to a temporary search path), so that

- within each round the variants run one after another: a slow spell of this shared machine
  falls on all of them rather than on one (a ratio of separate processes moved 0.92-1.30x
  from run to run here);
- a job costs ~1.3 s against a fresh process's ~5 s: four times the samples in the same time.

A first round is run and left out: the sweep's first job pays the process's one-time costs.
Measured per job: `trained.loop_s` (Lightning's on_train_start to on_train_end). Printed per
variant: the median, min-max, the median's ratio to the stripped run's, the fastest run's
ratio to the stripped fastest (the least disturbed pair), and what leaving that piece out
saves against the default (a piece's cost). The default's ratio is issue 17's first target
(<= 1.10x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ["optimizer=adam", "lr=0.001", "batch_size=64", "max_epochs=20"]
PIECES = ("checkpoint", "lr_monitor", "throughput", "progress", "epoch_table")
VARIANTS = ("default", "stripped", *(f"no_{p}" for p in PIECES), "no_logger")


def default_callbacks() -> list[str]:
    """The entries of conf/callbacks/default.yaml's defaults list, `_self_` left out."""
    defaults = yaml.safe_load((ROOT / "conf" / "callbacks" / "default.yaml").read_text())
    return [entry for entry in defaults["defaults"] if entry != "_self_"]


def write_variants(conf: Path) -> None:
    """conf/bench_variant/<variant>.yaml (and the callbacks lists they pick) under `conf`,
    a search path of the sweep: each a `@package _global_` option, as experiment= is."""
    variants, callbacks = conf / "bench_variant", conf / "callbacks"
    variants.mkdir(parents=True)
    callbacks.mkdir(parents=True)
    shipped = default_callbacks()
    overrides = {"default": [], "stripped": ["callbacks: none", "logger: none"]}
    overrides["no_logger"] = ["logger: none"]
    for piece in PIECES:
        kept = [entry for entry in shipped if entry != piece]
        lines = ["defaults:", *(f"  - {entry}" for entry in kept), "  - _self_"]
        (callbacks / f"bench_no_{piece}.yaml").write_text("\n".join(lines) + "\n")
        overrides[f"no_{piece}"] = [f"callbacks: bench_no_{piece}"]
    for name, picks in overrides.items():
        lines = ["# @package _global_", "defaults:", *(f"  - override /{p}" for p in picks)]
        (variants / f"{name}.yaml").write_text("\n".join(lines if picks else lines[:1]) + "\n")


def measure(variants: list[str], repeats: int, workdir: Path | None = None) -> dict:
    """{variant: [loop_s of each round]}: one sweep of (repeats + 1) rounds of `variants`,
    the first round left out."""
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_callbacks_")) if own else workdir
    try:
        write_variants(workdir / "conf")
        seeds = ",".join(["42"] * (repeats + 1))
        cmd = [sys.executable, "train.py", "-m", *DIGITS, f"seed={seeds}"]
        cmd += [f"+bench_variant={','.join(variants)}", f"hydra.sweep.dir={workdir / 'sweep'}"]
        cmd += [f"hydra.searchpath=[file://{workdir / 'conf'}]"]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
            sys.exit(f"bench_callbacks: the sweep failed (exit {done.returncode}):\n{tail}")
        return loops_of(workdir / "sweep", variants, repeats + 1)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def loops_of(sweep: Path, variants: list[str], rounds: int) -> dict[str, list[float]]:
    """Each job's trained.loop_s by the variant its own overrides name, in job order, the
    first round (the first len(variants) jobs) dropped."""
    loops: dict[str, list[float]] = {name: [] for name in variants}
    for job in range(len(variants), rounds * len(variants)):
        record_path = sweep / str(job) / "metrics.json"
        if not record_path.is_file():
            sys.exit(f"bench_callbacks: job {job} of the sweep wrote no {record_path}")
        record = json.loads(record_path.read_text())
        if record.get("status") != "completed":
            sys.exit(f"bench_callbacks: job {job} says {record.get('status')}: {record}")
        loops[variant_of(sweep / str(job))].append(record["trained"]["loop_s"])
    return loops


def variant_of(job_dir: Path) -> str:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    return next(o.split("=", 1)[1] for o in overrides if o.startswith("+bench_variant="))


def ratios(loops: dict[str, list[float]]) -> tuple[float, float]:
    """The default against the stripped run: (medians, fastest runs)."""
    default, stripped = loops["default"], loops["stripped"]
    return (statistics.median(default) / statistics.median(stripped), min(default) / min(stripped))


def print_table(loops: dict[str, list[float]], markdown: bool) -> None:
    median = {name: statistics.median(values) for name, values in loops.items()}
    fastest = {name: min(values) for name, values in loops.items()}
    header = ("variant", "loop s (median)", "min-max", "vs stripped", "fastest vs", "saves")
    rows = [header]
    for name, values in loops.items():
        saves = (
            "" if name in ("default", "stripped") else f"{median['default'] - median[name]:+.3f} s"
        )
        rows.append((name, f"{median[name]:.3f}", f"{min(values):.2f}-{max(values):.2f}",
                     f"{median[name] / median['stripped']:.2f}x",
                     f"{fastest[name] / fastest['stripped']:.2f}x", saves))  # fmt: skip
    if markdown:
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "---|" * len(rows[0]))
        for row in rows[1:]:
            print("| " + " | ".join(row) + " |")
    else:
        for row in rows:
            print(
                f"{row[0]:15s} {row[1]:>16s} {row[2]:>10s} {row[3]:>12s} {row[4]:>11s} {row[5]:>9s}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8, help="rounds kept (default 8)")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants, comma-separated")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give at least 1")
    variants = args.only.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not {"default", "stripped"} <= set(variants):
        parser.error(f"--only {args.only}: give default, stripped and any of {list(VARIANTS)}")
    loops = measure(variants, args.repeats)
    print_table(loops, args.markdown)
    by_median, by_fastest = ratios(loops)
    verdict = "PASS" if by_median <= 1.10 else "FAIL"
    print(
        f"\ndefault / stripped loop: {by_median:.2f}x by medians (target <= 1.10x: {verdict}), "
        f"{by_fastest:.2f}x by the fastest runs; {args.repeats} rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
