"""What pruning buys an Optuna search, and what a second worker buys: issue 14, requirement 8.

    OMP_NUM_THREADS=1 python scripts/bench_pruning.py --out pruning.md   # everything
    python scripts/bench_pruning.py --trials 6 --seeds 1 --epochs 5      # a quick check, ~1 min
    python scripts/bench_pruning.py --variant min_resource=4 --variant reduction_factor=2
                                                                        # other ASHA settings too

Every sweep is `python train.py -m hparams_search=optuna ...` as a subprocess, cwd the
repository root, OMP_NUM_THREADS=1 and threads=1 (one torch thread), logger=none, on digits
(the default data), with its own fresh hydra.sweep.dir under a temporary folder (or
--workdir); nothing is written under outputs/. The search space is the default one of
conf/hparams_search/optuna.yaml: lr (log-uniform 1e-4..1e-1), optimizer (sgd_momentum, adam,
adamw), batch_size (32, 64, 128); TPE seeded with `seed` (hydra.sweeper.seed: ${seed}, so
seed also sets the jobs' weights and data split: both sides of a seed see the same ones).

Pruning: for each seed, the same --trials-trial study with hydra.sweeper.pruner=asha (its
defaults from pruner_defaults in trainlab.search.optuna_settings: min_resource = a tenth of
max_epochs, at least 1, reduction_factor 3) and with hydra.sweeper.pruner=none, run one
after the other (ASHA first), so that a slow spell of the machine hits both.
  epochs     trained epochs summed over the study's jobs, from each <sweep dir>/<n>/metrics.json:
             completed jobs their `trained.epochs` (the trainer's current_epoch after fit:
             epochs whose training finished), pruned jobs their `pruned.epoch` (the epoch
             after whose validation the pruner stopped them; its training and validation
             ran), diverged / failed / interrupted jobs (no epoch count in their record) the
             rows of their epochs.csv (epochs that ended with a validation; a partial epoch
             is not counted). The epochs.csv of every job is checked against its record.
  best       study.best_value (load_sweep_study), the best completed trial's objective: the
             optimized_metric, val/acc_best by default (the best validation accuracy of the
             run, so pruned trials, which are never COMPLETE, do not count).
  wall s     seconds of the whole sweep command, measured around the subprocess.
  CPU s      user + system seconds of the sweep process(es) (getrusage of the children):
             steadier than wall on a busy machine. Each sweep's line on the console also
             gives the load average just before it.
  Summary per seed: epochs ASHA / epochs none (target <= 0.5) and best ASHA - best none in
  percentage points (target within 0.5 pp); the mean row is the mean of the per-seed numbers.
  On digits the validation split is 270 images, so one image is 0.37 pp of val/acc_best.
--variant runs more pruner settings beside these two, each against the same `none` run.

Workers (--skip-workers to leave out): the same study (seed --workers-seed, ASHA) run by one
process, and by two identical processes started at once on the same hydra.sweep.dir (they
share the study through <sweep dir>/optuna.journal; the study must end with exactly --trials
trials, and one job dir per trial). Speedup = wall of one / wall of two (both finished);
--workers-repeats N runs each N times, alternating, and takes the medians.

The machine is shared and small: wall times are noisy; epochs and best values are not
(the same seed gives the same study, up to float summation order and the order in which two
workers ask).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

TARGETS = {  # name: (comparison, limit)
    "epochs_ratio": ("<=", 0.5),
    "best_diff_pp": ("abs<=", 0.5),
}
OTHER_STATUSES = ("diverged", "failed", "interrupted")


# --- running sweeps ------------------------------------------------------------------------


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def sweep_command(sweep_dir: Path, trials: int, seed: int, epochs: int, extra: list[str]):
    cmd = [PYTHON, "train.py", "-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={trials}"]
    cmd += [f"seed={seed}", f"max_epochs={epochs}", "logger=none", "threads=1"]
    return cmd + [f"hydra.sweep.dir={sweep_dir}", *extra]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sweeps(sweep_dir: Path, cmd: list[str], processes: int = 1) -> tuple[float, float]:
    """`processes` copies of `cmd` started at once (each logging to <sweep dir>.<i>.log);
    (wall seconds until the last one ends, CPU seconds of them all). Stops the bench when
    one fails."""
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    logs = [sweep_dir.with_name(f"{sweep_dir.name}.{i}.log") for i in range(processes)]
    cpu = children_cpu_s()
    started = time.perf_counter()
    running = []
    for log in logs:
        with log.open("w") as out:
            running.append(
                subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT)
            )
    codes = [p.wait() for p in running]
    wall = time.perf_counter() - started
    cpu = children_cpu_s() - cpu
    for code, log in zip(codes, logs, strict=True):
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            sys.exit(
                f"bench: this command failed (exit {code}, log {log}):\n  {' '.join(cmd)}\n{tail}"
            )
    return wall, cpu


# --- reading a sweep -----------------------------------------------------------------------


def csv_epochs(job_dir: Path) -> int | None:
    """Epochs that ended with a validation, from the job's epochs.csv (None: no such file)."""
    path = job_dir / "epochs.csv"
    if not path.exists():
        return None
    with path.open(newline="") as f:
        return len({row["epoch"] for row in csv.DictReader(f) if row.get("epoch")})


def job_epochs(record: dict, job_dir: Path) -> tuple[int, str]:
    """(epochs trained, where the number came from); see the module text."""
    status = record.get("status")
    if status == "completed":
        return int(record["trained"]["epochs"]), "trained.epochs"
    if status == "pruned":
        return int(record["pruned"]["epoch"]), "pruned.epoch"
    counted = csv_epochs(job_dir)
    return (counted or 0), "epochs.csv" if counted is not None else "nothing recorded: 0"


def read_sweep(sweep_dir: Path, trials: int) -> dict:
    """Epochs, statuses, the study's best value and trial count of one finished sweep dir."""
    sys.path.insert(0, str(ROOT / "src"))
    import optuna
    from optuna.trial import TrialState

    from trainlab.search.storage import load_sweep_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_sweep_study(sweep_dir)
    if study is None:
        sys.exit(f"bench: {sweep_dir} holds no Optuna study (optuna_study.json)")
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = study.best_value if complete else None
    statuses: dict[str, int] = {}
    sources: dict[str, int] = {}
    epochs = 0
    mismatches = []
    objectives = []
    job_dirs = sorted(
        (d for d in sweep_dir.iterdir() if d.name.isdigit()), key=lambda d: int(d.name)
    )
    for job_dir in job_dirs:
        path = job_dir / "metrics.json"
        if not path.exists():
            sys.exit(f"bench: {path} was not written")
        record = json.loads(path.read_text())
        status = record.get("status")
        statuses[status] = statuses.get(status, 0) + 1
        n, source = job_epochs(record, job_dir)
        sources[source] = sources.get(source, 0) + 1
        epochs += n
        from_csv = csv_epochs(job_dir)
        if from_csv is not None and from_csv != n:
            mismatches.append(f"job {job_dir.name} ({status}): {source} {n}, epochs.csv {from_csv}")
        if status == "completed" and record.get("objective") is not None:
            objectives.append(record["objective"])
    metric = None
    if job_dirs:
        metric = json.loads((job_dirs[0] / "metrics.json").read_text()).get("optimized_metric")
    if best is not None and objectives:
        best_record = max(objectives) if study.direction.name == "MAXIMIZE" else min(objectives)
        if abs(best_record - best) > 1e-9:
            mismatches.append(
                f"study.best_value {best} but the best completed record {best_record}"
            )
    return {
        "epochs": epochs,
        "best": best,
        "metric": metric,
        "statuses": statuses,
        "epoch_sources": sources,
        "study_trials": len(study.trials),
        "study_states": {s.name: states.count(s) for s in set(states)},
        "job_dirs": len(job_dirs),
        "expected_trials": trials,
        "mismatches": mismatches,
    }


def one_sweep(workdir: Path, name: str, args, seed: int, extra: list[str], processes=1) -> dict:
    sweep_dir = workdir / name
    cmd = sweep_command(sweep_dir, args.trials, seed, args.epochs, extra)
    load = os.getloadavg()[0]
    wall, cpu = run_sweeps(sweep_dir, cmd, processes)
    result = {
        "wall_s": wall,
        "cpu_s": cpu,
        "load_before": load,
        "command": cmd,
        "processes": processes,
        **read_sweep(sweep_dir, args.trials),
    }
    if result["study_trials"] != args.trials or result["job_dirs"] != args.trials:
        print(
            f"WARNING {name}: the study holds {result['study_trials']} trials and the sweep dir "
            f"{result['job_dirs']} job dirs, not {args.trials}",
            flush=True,
        )
    for line in result["mismatches"]:
        print(f"WARNING {name}: {line}", flush=True)
    statuses = " ".join(f"{k} {v}" for k, v in sorted(result["statuses"].items()))
    best = "none" if result["best"] is None else f"{result['best']:.4f}"
    print(
        f"{name}: {result['epochs']} epochs, best {best}, {wall:.1f} s wall, {cpu:.1f} s CPU, "
        f"load {load:.1f} before ({result['study_trials']} trials: {statuses})",
        flush=True,
    )
    return result


# --- numbers -------------------------------------------------------------------------------


def verdict(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    op, limit = TARGETS[name]
    ok = {"<=": value <= limit, ">=": value >= limit, "abs<=": abs(value) <= limit}[op]
    shown = f"within ±{limit}" if op == "abs<=" else f"{op} {limit}"
    return f"{'PASS' if ok else 'FAIL'} (target {shown})"


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'min_resource=4,reduction_factor=2' (pruner=NAME picks another pruner) -> (label,
    overrides)."""
    overrides = ["hydra.sweeper.pruner=asha"]
    parts = [p.strip() for p in text.split(",") if p.strip()]
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: give key=value pairs")
        if key == "pruner":
            overrides[0] = f"hydra.sweeper.pruner={value}"
        else:
            overrides.append(f"+hydra.sweeper.pruner_options.{key}={value}")
    label = overrides[0].rsplit("=", 1)[1]
    options = [p for p in parts if not p.startswith("pruner=")]
    return (f"{label} {' '.join(options)}".strip(), overrides)


def machine() -> str:
    import optuna
    import torch
    from machine import machine as describe  # scripts/machine.py

    return describe({"torch": torch.__version__, "optuna": optuna.__version__}, load=True)


# --- the bench -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description="ASHA vs no pruning, and 2 workers vs 1, on Optuna studies (see the docstring)"
    )
    parser.add_argument("--trials", type=int, default=30, help="trials per study (n_trials)")
    parser.add_argument("--seeds", default="1,2,3", help="sampler (and run) seeds, comma-separated")
    parser.add_argument("--epochs", type=int, default=20, help="max_epochs of every job")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="K=V,...",
        help="also run this pruner setting for each seed: pruner_options of ASHA "
        "(min_resource=4,reduction_factor=2), pruner=NAME for another pruner; repeatable",
    )
    parser.add_argument("--skip-pruning", action="store_true", help="only the workers part")
    parser.add_argument("--skip-workers", action="store_true", help="only the pruning part")
    parser.add_argument(
        "--workers-seed", type=int, help="seed of the workers' study (default: the first)"
    )
    parser.add_argument(
        "--workers-repeats", type=int, default=1, help="runs of each worker count (>= 1)"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown tables to this file")
    parser.add_argument("--json", type=Path, help="save every raw number to this file")
    parser.add_argument("--workdir", type=Path, help="keep the sweeps here (default: a temp dir)")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give whole numbers separated by commas")
    if not seeds or min(args.trials, args.epochs, args.workers_repeats) < 1:
        parser.error("--seeds needs a seed; --trials, --epochs, --workers-repeats must be >= 1")
    try:
        variants = [parse_variant(v) for v in args.variant]
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    configs = [("asha", ["hydra.sweeper.pruner=asha"]), ("none", ["hydra.sweeper.pruner=none"])]
    configs += variants

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trainlab-bench-pruning-"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info}\nruns in: {workdir}\n", flush=True)
    results: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    started = time.perf_counter()
    lines: list[str] = []  # the Markdown
    try:
        if not args.skip_pruning:
            runs: dict[str, dict[int, dict]] = {label: {} for label, _ in configs}
            for seed in seeds:
                for i, (label, extra) in enumerate(configs):
                    name = f"seed{seed}_{i}_{label.replace(' ', '_').replace('=', '')}"
                    runs[label][seed] = one_sweep(workdir, name, args, seed, extra)
            results["pruning"] = runs
            metric = runs["none"][seeds[0]]["metric"] or "the objective"
            lines += pruning_tables(runs, configs, seeds, args, metric)
        if not args.skip_workers:
            seed = args.workers_seed if args.workers_seed is not None else seeds[0]
            extra = ["hydra.sweeper.pruner=asha"]
            ones, twos = [], []
            for i in range(args.workers_repeats):  # 1 2 1 2 ...
                name = f"workers{{}}_seed{seed}_{i}"
                ones.append(one_sweep(workdir, name.format(1), args, seed, extra, processes=1))
                twos.append(one_sweep(workdir, name.format(2), args, seed, extra, processes=2))
            speedup = median_wall(ones) / median_wall(twos)
            results["workers"] = {"one": ones, "two": twos, "speedup": speedup}
            lines += workers_table(ones, twos, seed, args)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started
    results["total_s"] = total
    header = [
        f"Measured on {info}; {args.trials} trials per study, max_epochs={args.epochs}, "
        f"digits, TPE over lr (log), optimizer, batch_size; the bench took {total / 60:.1f} min.",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
        print(f"tables: {args.out}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"raw numbers: {args.json}")


def pruning_tables(runs, configs, seeds, args, metric: str) -> list[str]:
    lines = [
        f"Per study: trained epochs summed over its {args.trials} jobs (completed: trained.epochs,"
        " pruned: pruned.epoch, others: their epochs.csv rows), study.best_value "
        f"({metric}), wall seconds of the sweep command and CPU seconds of its process.",
        "",
        "| pruner | seed | completed / pruned / other | epochs | best | wall s | CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _ in configs:
        for seed in seeds:
            r = runs[label][seed]
            other = sum(r["statuses"].get(s, 0) for s in OTHER_STATUSES)
            counts = (
                f"{r['statuses'].get('completed', 0)} / {r['statuses'].get('pruned', 0)} / {other}"
            )
            lines.append(
                f"| {label} | {seed} | {counts} | {r['epochs']} | {fmt(r['best'], '.4f')} | "
                f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} |"
            )
    lines += [
        "",
        f"Against no pruning, same seed: epochs pruner / none, best pruner - best none in "
        f"percentage points of {metric}, wall pruner / none; mean = mean over the seeds.",
        "",
        "| pruner | seed | epochs ratio | | best diff | | wall ratio |",
        "|---|---:|---:|---|---:|---|---:|",
    ]
    base = runs["none"]
    for label, _ in configs:
        if label == "none":
            continue
        ratios, diffs, walls = [], [], []
        for seed in seeds:
            r, b = runs[label][seed], base[seed]
            ratio = r["epochs"] / b["epochs"] if b["epochs"] else None
            diff = 100 * (r["best"] - b["best"]) if None not in (r["best"], b["best"]) else None
            wall = r["wall_s"] / b["wall_s"]
            ratios.append(ratio)
            diffs.append(diff)
            walls.append(wall)
            lines.append(
                f"| {label} | {seed} | {fmt(ratio, '.2f')} | {verdict('epochs_ratio', ratio)} | "
                f"{fmt(diff, '+.2f', ' pp')} | {verdict('best_diff_pp', diff)} | {wall:.2f} |"
            )
        if len(seeds) > 1:
            ratio, diff, wall = mean(ratios), mean(diffs), mean(walls)
            lines.append(
                f"| **{label}** | **mean** | **{fmt(ratio, '.2f')}** | "
                f"{verdict('epochs_ratio', ratio)} | **{fmt(diff, '+.2f', ' pp')}** | "
                f"{verdict('best_diff_pp', diff)} | {fmt(wall, '.2f')} |"
            )
    return lines + [""]


def median_wall(runs: list[dict]) -> float:
    return statistics.median(r["wall_s"] for r in runs)


def workers_table(ones: list[dict], twos: list[dict], seed: int, args) -> list[str]:
    repeats = len(ones)
    each = f"; {repeats} runs of each, alternating 1 2 1 2, median wall" if repeats > 1 else ""
    lines = [
        f"Workers: the {args.trials}-trial study (seed {seed}, ASHA) by one `python train.py -m` "
        "process, and by two started at once on the same sweep dir (one torch thread each, "
        f"{os.cpu_count()} cores){each}. Speedup = wall of one / wall of two; CPU s: both "
        "processes together.",
        "",
        "| workers | trials in the study | job dirs | epochs | best | wall s | CPU s | speedup |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = median_wall(ones)
    for n, runs in ((1, ones), (2, twos)):
        trials = sorted({r["study_trials"] for r in runs})
        dirs = sorted({r["job_dirs"] for r in runs})
        ok = "" if trials == [args.trials] else f" (expected {args.trials})"
        epochs = "/".join(str(r["epochs"]) for r in runs)
        best = "/".join(fmt(r["best"], ".4f") for r in runs)
        walls = "/".join(f"{r['wall_s']:.0f}" for r in runs)
        wall = f"{median_wall(runs):.0f} ({walls})" if repeats > 1 else walls
        cpus = "/".join(f"{r['cpu_s']:.0f}" for r in runs)
        lines.append(
            f"| {n} | {'/'.join(map(str, trials))}{ok} | {'/'.join(map(str, dirs))} | {epochs} | "
            f"{best} | {wall} | {cpus} | {base / median_wall(runs):.2f}x |"
        )
    return lines + [""]


if __name__ == "__main__":
    main()
