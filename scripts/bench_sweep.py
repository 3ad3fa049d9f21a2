"""What a sweep costs on top of its jobs' training, and what a second core gives it.

    OMP_NUM_THREADS=1 python scripts/bench_sweep.py [--repeats 2]   # about 2 minutes
    (scripts/bench.py runs the same, after its digits runs)

Three commands, interleaved A B C A B C (cwd: the repository root, OMP_NUM_THREADS=1):
  A  python train.py -m lr=1e-3,...,6e-3 batch_size=64,128 optimizer=adam max_epochs=20
     seed=42: 12 jobs in one process;
  B  the same command with only its first 4 jobs (lr=1e-3,2e-3 batch_size=64,128): the
     same kinds of plots in its report (a heatmap needs 2 lrs x 2 batch sizes);
  C  A with hydra/launcher=joblib hydra.launcher.n_jobs=-1: one job per core, each a fork of
     the sweep with one torch thread.

  per job    what each further job costs beyond its own trainer.fit, the target of issue 17
             (<= 25 % of the job's fit): (wall A - wall B - (A's fits - B's fits)) / 8, as a
             % of the mean fit of those 8 jobs. Everything that repeats per job counts
             (composing its config, building, checkpoint, test, its record, its report line,
             its share of the report); what a sweep pays once (Python, Hydra and Lightning's
             imports, the report's own imports) does not.
  steady     a cross-check of `per job` from A's own files: the mean time between two jobs'
             metrics.json, less the later job's fit.
  once       wall B - B's fits - 4 x per job: the start-up and the report every sweep pays
             once.
  all in     (wall A - A's fits) / 12, once included, as a % of the mean fit (the issue's
             earlier measure).
  joblib     wall A / wall C (target >= 1.7x on 2 cores). Amdahl: with `once` run on one
             core, no launcher can beat bound = wall A / (once + (wall A - once) / cores);
             `jobs phase` is the speed-up of the rest, (wall A - once) / (wall C - once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LRS = "1e-3,2e-3,3e-3,4e-3,5e-3,6e-3"
BATCH_SIZES = "64,128"
JOBS = 12
FIXED = ["optimizer=adam", "max_epochs=20", "seed=42"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=-1"]
TARGET_PCT, TARGET_SPEEDUP = 25.0, 1.7


def sweep(sweep_dir: Path, grid: list[str], extra: list[str] = ()) -> dict:
    """Run one sweep; its wall seconds, each job's fit_s and when its metrics.json was last
    written (seconds after the command started)."""
    cmd = [sys.executable, "train.py", "-m", *grid, *FIXED, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started_at, started = time.time(), time.perf_counter()
    done = subprocess.run(cmd + list(extra), cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        sys.exit(f"bench_sweep: this command failed (exit {done.returncode}):\n{tail}")
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    records = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    if any(r.get("status") != "completed" for r in records):
        sys.exit(f"bench_sweep: a job of {sweep_dir} did not complete")
    return {
        "wall_s": wall,
        "fit_s": [r["trained"]["fit_s"] for r in records],
        "ended_s": [(job / "metrics.json").stat().st_mtime - started_at for job in jobs],
    }


def per_job(many: dict, few: dict) -> tuple[float, float]:
    """(seconds, % of their mean fit) each job of `many` beyond those of `few` (its first
    jobs) costs besides its fit."""
    extra = many["fit_s"][len(few["fit_s"]) :]
    fits = sum(many["fit_s"]) - sum(few["fit_s"])
    seconds = (many["wall_s"] - few["wall_s"] - fits) / len(extra)
    return seconds, 100 * seconds / statistics.fmean(extra)


def steady(many: dict) -> float:
    """Mean seconds between two jobs' records beyond the later job's fit (in one process)."""
    ends, fits = many["ended_s"], many["fit_s"]
    return statistics.fmean(ends[k] - ends[k - 1] - fits[k] for k in range(1, len(ends)))


def measure(one_process: dict, few_jobs: dict, joblib: dict, cores: int) -> dict:
    """Every number of the module's text, from one A, B and C."""
    seconds, pct = per_job(one_process, few_jobs)
    once = few_jobs["wall_s"] - sum(few_jobs["fit_s"]) - len(few_jobs["fit_s"]) * seconds
    wall_a, wall_c = one_process["wall_s"], joblib["wall_s"]
    fits = one_process["fit_s"]
    return {
        "per_job_s": seconds,
        "per_job_pct": pct,
        "steady_s": steady(one_process),
        "once_s": once,
        "all_in_s": (wall_a - sum(fits)) / len(fits),
        "all_in_pct": 100 * (wall_a - sum(fits)) / len(fits) / statistics.fmean(fits),
        "speedup": wall_a / wall_c,
        "bound": wall_a / (once + (wall_a - once) / cores),
        "jobs_phase_speedup": (wall_a - once) / (wall_c - once),
        "wall_one_process_s": wall_a,
        "wall_joblib_s": wall_c,
        "mean_fit_s": statistics.fmean(fits),
    }


def run_all(workdir: Path, repeats: int) -> dict:
    """A B C, `repeats` times; each number's median over the rounds, and the rounds."""
    grid = [f"lr={LRS}", f"batch_size={BATCH_SIZES}"]
    first = [f"lr={','.join(LRS.split(',')[:2])}", f"batch_size={BATCH_SIZES}"]  # A's jobs 0-3
    rounds = []
    for i in range(repeats):
        a = sweep(workdir / f"sweep_{i}", grid)
        b = sweep(workdir / f"four_jobs_{i}", first)
        c = sweep(workdir / f"sweep_joblib_{i}", grid, JOBLIB)
        rounds.append({**measure(a, b, c, os.cpu_count() or 1), "raw": {"A": a, "B": b, "C": c}})
        print(
            f"sweep round {i + 1}/{repeats}: one process {a['wall_s']:.1f} s, 4 jobs "
            f"{b['wall_s']:.1f} s, joblib {c['wall_s']:.1f} s",
            flush=True,
        )
    medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if k != "raw"}
    return {"median": medians, "rounds": rounds}


def verdict(value: float, limit: float, at_most: bool) -> str:
    met = value <= limit if at_most else value >= limit
    return f"{'PASS' if met else 'FAIL'} ({'<=' if at_most else '>='} {limit:g})"


def report(m: dict, cores: int) -> list[str]:
    """The lines bench.py and this script print."""
    return [
        f"per job beyond its fit: {m['per_job_s']:.3f} s = {m['per_job_pct']:.0f} % of the mean "
        f"fit ({m['mean_fit_s']:.2f} s)  {verdict(m['per_job_pct'], TARGET_PCT, True)}; "
        f"steady-state cross-check {m['steady_s']:.3f} s",
        f"paid once per sweep (start-up, report): {m['once_s']:.2f} s; all in, per job: "
        f"{m['all_in_s']:.2f} s = {m['all_in_pct']:.0f} %",
        f"joblib ({cores} cores): {m['wall_one_process_s']:.1f} s -> {m['wall_joblib_s']:.1f} s "
        f"= {m['speedup']:.2f}x  {verdict(m['speedup'], TARGET_SPEEDUP, False)}; Amdahl bound "
        f"with {m['once_s']:.1f} s on one core: {m['bound']:.2f}x; the jobs phase "
        f"{m['jobs_phase_speedup']:.2f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="A sweep's overhead and joblib's speed-up.")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of A B C (>= 1)")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="save every number to this file")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trainlab-bench-sweep-"))
    numbers = run_all(workdir, args.repeats)
    print("\n".join(report(numbers["median"], os.cpu_count() or 1)))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
