"""What the template costs: `python train.py` against a plain PyTorch loop doing the same work.

    OMP_NUM_THREADS=1 python scripts/bench.py                 # everything, about 6 minutes on CPU
    python scripts/bench.py --repeats 1 --skip-sweep --skip-gpt   # a quick check
    python scripts/bench.py --markdown --json bench.json      # the README table, raw numbers

Every measurement is a separate process (cwd: the repository root, OMP_NUM_THREADS=1 unless
set), the two sides alternating A B A B ... so that a slow spell of the machine hits both.
Runs write only under a temporary folder (or --workdir), never under outputs/.

Digits (A: scripts/plain_digits.py; B: python train.py optimizer=adam lr=0.001 batch_size=64
max_epochs=20 seed=42, the defaults; C: B with callbacks=none logger=none, the template
stripped to Lightning's own loop): the same split, network, initial weights, optimizer,
batches (the same per-epoch order rule) and epochs, validation every epoch, test accuracy of
the best-val-epoch weights. A B C A B C ...
  loop_s     wall seconds of the training loop: 20 epochs of training + validation.
             Template: `trained.loop_s` in metrics.json (Lightning's on_train_start to
             on_train_end, so checkpoints, logging and the progress bar count; setup, the
             sanity check and teardown do not). Plain: the loop timed in the script.
  fit_s      the template's whole trainer.fit, for reference.
  steps/s    optimizer steps / loop_s.
  process_s  wall seconds of the whole command, measured here around the subprocess: imports,
             data, fit, test, writing results.
  test_acc   test accuracy. Both sides compute the same thing from the same start, so with
             one seed they agree to the last image or one or two off (float summation order).
  Ratios are template / plain of the medians; C shows how much of the gap is Lightning's
  loop itself rather than what the template adds. D: scripts/peer_lightning_digits.py, the
  same run written as most Lightning templates write it (per-step self.log, a torchmetrics
  Accuracy, a DataLoader over a TensorDataset, ModelCheckpoint, progress bar, CSV logger):
  template / peer must be < 1.

The same ratio B / C measured two steadier ways (the separate processes' ratio moved
0.92-1.30x between runs on this shared VM): --loop-rounds rounds of the two interleaved as
the jobs of one sweep (scripts/bench_callbacks.py), and with --instructions the loop's
instructions counted under valgrind's callgrind (scripts/bench_instructions.py).

Sweep: scripts/bench_sweep.py (12 jobs in one process, their first 4 alone, the 12 with
hydra/launcher=joblib, interleaved; its docstring defines each number): what each job costs
beyond its own fit, what a sweep pays once, and joblib's speed-up with its Amdahl bound.

Targets (issue 17), PASS/FAIL next to each: the template's training loop <= 1.10x the same
run stripped to Lightning's loop (B / C), the whole command <= 1.30x the plain script, each
further sweep job's overhead <= 25 % of its own fit, joblib sweep >= 1.7x faster than
in-process, template
faster than the stock-Lightning peer, test accuracy within 0.5 pp of plain, GPT tokens/s
>= 0.9x plain. The loop against plain PyTorch (B / A) is printed with no target: its floor
is Lightning's own loop (C / A).
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
import time
from pathlib import Path

import bench_callbacks  # scripts/bench_callbacks.py, beside this file
import bench_instructions
import bench_sweep

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

GPT_TOKENS_PER_STEP = 32 * 128  # batch_size x block_size of experiment=gpt_small

TARGETS = {  # name: (comparison, limit)
    "loop_vs_stripped": ("<=", 1.10),
    "process_ratio": ("<=", 1.30),
    "gpt_tokens_ratio": (">=", 0.9),
    "acc_diff_pp": ("abs<=", 0.5),
    "peer_ratio": ("<", 1.0),
}

# --- running things ------------------------------------------------------------------------


def run(cmd: list[str]) -> tuple[float, str]:
    """Run `cmd` from the repository root; (wall seconds, stdout). Stops the bench on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["HYDRA_FULL_ERROR"] = "1"
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        sys.exit(f"bench: this command failed (exit {done.returncode}):\n  {' '.join(cmd)}\n{tail}")
    return wall, done.stdout


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def read_record(run_dir: Path) -> dict:
    """A template run's metrics.json, checked for the timings this bench needs."""
    path = run_dir / "metrics.json"
    if not path.exists():
        sys.exit(f"bench: {path} was not written")
    record = json.loads(path.read_text())
    if record.get("status") != "completed":
        sys.exit(f"bench: {path} says status={record.get('status')}: {record.get('error')}")
    trained = record.get("trained") or {}
    if trained.get("fit_s") is None or trained.get("loop_s") is None:
        sys.exit(
            f"bench: {path} has no trained.loop_s / trained.fit_s (the wall seconds of the "
            "training loop and of trainer.fit). This bench compares training-loop time, which "
            "duration_s (the whole pipeline) is not."
        )
    return record


# the template with every callback and logger off: Lightning's own loop and nothing else
STRIPPED = ["callbacks=none", "logger=none"]


def template_digits(run_dir: Path, seed: int, extra: list[str] = ()) -> dict:
    cmd = [PYTHON, "train.py", "optimizer=adam", "lr=0.001", "batch_size=64", "max_epochs=20"]
    cmd += [f"seed={seed}", f"hydra.run.dir={run_dir}", *extra]
    wall, _ = run(cmd)
    record = read_record(run_dir)
    trained, metrics = record["trained"], record["metrics"]
    return {
        "loop_s": trained["loop_s"],
        "fit_s": trained["fit_s"],
        "test_s": trained.get("test_s"),
        "steps": trained["optimizer_steps"],
        "steps_per_s": trained["optimizer_steps"] / trained["loop_s"],
        "test_acc": metrics["test/acc"],
        "val_acc_best": metrics["val/acc_best"],
        "process_s": wall,
    }


def peer_digits(seed: int) -> dict:
    """scripts/peer_lightning_digits.py: stock Lightning, written as most templates are."""
    wall, stdout = run([PYTHON, "scripts/peer_lightning_digits.py", "--seed", str(seed)])
    result = last_json_line(stdout)
    return {**result, "loop_s": result["fit_s"], "process_s": wall}


def plain_digits(seed: int) -> dict:
    wall, stdout = run([PYTHON, "scripts/plain_digits.py", "--seed", str(seed)])
    result = last_json_line(stdout)
    return {**result, "loop_s": result["fit_s"], "process_s": wall}


def template_gpt(run_dir: Path, steps: int, warmup_steps: int) -> dict:
    cmd = [PYTHON, "train.py", "experiment=gpt_small", f"trainer.max_steps={steps + warmup_steps}"]
    # no validation, so the run's objective is the training loss
    cmd += ["trainer.limit_val_batches=0", "test=false", "optimized_metric=train/loss"]
    cmd += [f"hydra.run.dir={run_dir}"]
    wall, _ = run(cmd)
    trained = read_record(run_dir)["trained"]
    throughput = trained.get("throughput") or {}
    if "device/items_per_sec" not in throughput:
        sys.exit(
            f"bench: {run_dir}/metrics.json has no trained.throughput['device/items_per_sec'] "
            f"(it has {sorted(throughput)}): the ThroughputMonitor's window of 20 batches "
            "needs at least 20 steps, and experiment=gpt_small counts tokens as its items."
        )
    return {
        "tokens_per_s": throughput["device/items_per_sec"],
        "fit_tokens_per_s": trained["optimizer_steps"] * GPT_TOKENS_PER_STEP / trained["fit_s"],
        "fit_s": trained["fit_s"],
        "steps": trained["optimizer_steps"],
        "process_s": wall,
    }


def plain_gpt(steps: int, warmup_steps: int) -> dict:
    cmd = [PYTHON, "scripts/plain_gpt.py", "--steps", str(steps)]
    wall, stdout = run(cmd + ["--warmup-steps", str(warmup_steps)])
    return {**last_json_line(stdout), "process_s": wall}


# --- numbers -------------------------------------------------------------------------------


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def spread(runs: list[dict], key: str, fmt: str = ".3f") -> str:
    """'median (min-max)' of one number over the repeats."""
    values = [r[key] for r in runs]
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def verdict(name: str, value: float) -> str:
    op, limit = TARGETS[name]
    ok = {
        "<=": value <= limit,
        ">=": value >= limit,
        "<": value < limit,
        "abs<=": abs(value) <= limit,
    }[op]
    shown = f"within ±{limit}" if op == "abs<=" else f"{op} {limit}"
    return f"{'PASS' if ok else 'FAIL'} (target {shown})"


def machine() -> str:
    import lightning
    import torch
    from machine import machine as describe  # scripts/machine.py

    return describe({"torch": torch.__version__, "lightning": lightning.__version__})


# --- the bench -----------------------------------------------------------------------------


def steadier_loop_ratios(args, results: dict) -> list[tuple[str, str, str, str, str]]:
    """Default against stripped, interleaved as the jobs of one sweep (--loop-rounds) and
    counted in instructions (--instructions): the table's rows for them."""
    rows = []
    if args.loop_rounds > 0:
        print(f"\nloop, {args.loop_rounds} rounds of default/stripped in one sweep ...")
        loops = bench_callbacks.measure(["default", "stripped"], args.loop_rounds)
        by_median, by_fastest = bench_callbacks.ratios(loops)
        results["loop_sweep"] = {**loops, "ratio": by_median, "fastest_ratio": by_fastest}
        print(f"default/stripped {by_median:.2f}x by medians, {by_fastest:.2f}x by fastest runs")
        rows.append((
            f"… the same, {args.loop_rounds} rounds interleaved in one sweep "
            "(`scripts/bench_callbacks.py`; the fastest runs' ratio after the ;)",
            f"{statistics.median(loops['stripped']):.2f}",
            f"{statistics.median(loops['default']):.2f}",
            f"{by_median:.2f}x; {by_fastest:.2f}x",
            verdict("loop_vs_stripped", by_median),
        ))  # fmt: skip
    if args.instructions:
        print("\nloop instructions under callgrind, default and stripped side by side ...")
        counts = bench_instructions.count(bench_instructions.VARIANTS)
        ratio = counts["default"] / counts["stripped"]
        results["loop_instructions"] = {**counts, "ratio": ratio}
        print(f"default/stripped {ratio:.3f}x by instructions")
        rows.append((
            "… the same counted in instructions, which the machine's load does not change "
            "(callgrind: `scripts/bench_instructions.py`), millions",
            f"{counts['stripped'] / 1e6:.0f}",
            f"{counts['default'] / 1e6:.0f}",
            f"{ratio:.3f}x",
            verdict("loop_vs_stripped", ratio),
        ))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Template vs plain PyTorch, side by side (see the docstring)."
    )
    parser.add_argument("--repeats", type=int, default=5, help="digits runs per side (>= 1)")
    parser.add_argument("--gpt-repeats", type=int, default=3, help="GPT runs per side (>= 1)")
    parser.add_argument("--gpt-steps", type=int, default=40, help="timed GPT steps")
    parser.add_argument("--gpt-warmup-steps", type=int, default=5, help="untimed GPT steps")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--vary-seed", action="store_true", help="digits repeat i: seed + i on both sides"
    )
    parser.add_argument(
        "--loop-rounds", type=int, default=10,
        help="rounds of default vs stripped interleaved in one sweep (0: skip)",
    )  # fmt: skip
    parser.add_argument(
        "--instructions", action="store_true",
        help="also count the loop's instructions under callgrind (~7 min; needs valgrind, gcc)",
    )  # fmt: skip
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--sweep-repeats", type=int, default=2, help="rounds of the sweeps")
    parser.add_argument("--skip-gpt", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, help="save every raw number to this file")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args()
    if args.repeats < 1 or args.gpt_repeats < 1:
        parser.error("--repeats and --gpt-repeats must be at least 1")
    if args.instructions:
        bench_instructions.check_tools()  # before minutes of other runs
    if args.gpt_steps < 20:
        parser.error("--gpt-steps must be at least 20 (the ThroughputMonitor's window)")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trainlab-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info}\nruns in: {workdir}\n", flush=True)
    results: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    rows: list[tuple[str, str, str, str, str]] = []  # the Markdown table
    try:
        # --- digits: A B A B ...
        plain, template, stripped, peer = [], [], [], []
        for i in range(args.repeats):
            seed = args.seed + i if args.vary_seed else args.seed
            plain.append(plain_digits(seed))
            template.append(template_digits(workdir / f"run_{i}", seed))
            stripped.append(template_digits(workdir / f"stripped_{i}", seed, STRIPPED))
            peer.append(peer_digits(seed))
            print(
                f"digits {i + 1}/{args.repeats} (seed {seed}): loop_s plain "
                f"{plain[-1]['loop_s']:.3f} template {template[-1]['loop_s']:.3f} stripped "
                f"{stripped[-1]['loop_s']:.3f}; process_s plain {plain[-1]['process_s']:.2f} "
                f"template {template[-1]['process_s']:.2f}; peer loop_s "
                f"{peer[-1]['loop_s']:.3f}",
                flush=True,
            )
        results["digits"] = {
            "plain": plain,
            "template": template,
            "stripped": stripped,
            "peer": peer,
        }
        peer_ratio = median(template, "loop_s") / median(peer, "loop_s")
        fit_ratio = median(template, "loop_s") / median(plain, "loop_s")
        floor_ratio = median(stripped, "loop_s") / median(plain, "loop_s")
        loop_vs_stripped = median(template, "loop_s") / median(stripped, "loop_s")
        process_ratio = median(template, "process_s") / median(plain, "process_s")
        floor_process = median(stripped, "process_s") / median(plain, "process_s")
        acc_diff = 100 * (median(template, "test_acc") - median(plain, "test_acc"))
        results["digits"]["ratios"] = {
            "fit_ratio": fit_ratio,
            "stripped_fit_ratio": floor_ratio,
            "loop_vs_stripped": loop_vs_stripped,
            "process_ratio": process_ratio,
            "stripped_process_ratio": floor_process,
            "acc_diff_pp": acc_diff,
            "peer_ratio": peer_ratio,
        }
        print(f"\nDigits MLP, {args.repeats} runs per side, median (min-max):")
        print(
            f"{'':22}{'plain PyTorch':>24}{'template':>24}{'template, stripped':>24}"
            f"{'stock Lightning peer':>24}"
        )
        for label, key, fmt in (
            ("training loop s", "loop_s", ".3f"),
            ("trainer.fit s", "fit_s", ".3f"),
            ("optimizer steps/s", "steps_per_s", ".0f"),
            ("whole process s", "process_s", ".2f"),
            ("test accuracy", "test_acc", ".4f"),
        ):
            print(
                f"{label:22}{spread(plain, key, fmt):>24}{spread(template, key, fmt):>24}"
                f"{spread(stripped, key, fmt):>24}{spread(peer, key, fmt):>24}"
            )
        print(
            f"training loop  template/stripped = {loop_vs_stripped:.2f}x  "
            f"{verdict('loop_vs_stripped', loop_vs_stripped)}   (against plain PyTorch: "
            f"template {fit_ratio:.2f}x, stripped {floor_ratio:.2f}x)"
        )
        print(
            f"whole process  template/plain = {process_ratio:.2f}x  "
            f"{verdict('process_ratio', process_ratio)}   (stripped: {floor_process:.2f}x)"
        )
        print(
            f"test accuracy  template - plain = {acc_diff:+.2f} pp  "
            f"{verdict('acc_diff_pp', acc_diff)}",
        )
        print(
            f"training loop  template/stock-Lightning peer = {peer_ratio:.2f}x  "
            f"{verdict('peer_ratio', peer_ratio)}",
            flush=True,
        )
        rows += [
            (
                "Digits MLP: training loop, 20 epochs with validation (s)",
                f"{median(plain, 'loop_s'):.2f}",
                f"{median(template, 'loop_s'):.2f}",
                f"{fit_ratio:.2f}x",
                "",
            ),
            (
                "… the template stripped to Lightning's loop (`callbacks=none logger=none`)",
                f"{median(plain, 'loop_s'):.2f}",
                f"{median(stripped, 'loop_s'):.2f}",
                f"{floor_ratio:.2f}x",
                "",
            ),
            (
                "… the template's own cost: default against stripped, training loop",
                f"{median(stripped, 'loop_s'):.2f}",
                f"{median(template, 'loop_s'):.2f}",
                f"{loop_vs_stripped:.2f}x",
                verdict("loop_vs_stripped", loop_vs_stripped),
            ),
            (
                "… a stock-Lightning peer (per-step `self.log`, torchmetrics `Accuracy`, "
                "DataLoader over a TensorDataset: `scripts/peer_lightning_digits.py`)",
                f"{median(plain, 'loop_s'):.2f}",
                f"{median(peer, 'loop_s'):.2f}",
                f"template {peer_ratio:.2f}x the peer",
                verdict("peer_ratio", peer_ratio),
            ),
            (
                "Digits MLP: optimizer steps/s in the loop",
                f"{median(plain, 'steps_per_s'):.0f}",
                f"{median(template, 'steps_per_s'):.0f}",
                "",
                "",
            ),
            (
                "Digits MLP: whole command (s)",
                f"{median(plain, 'process_s'):.2f}",
                f"{median(template, 'process_s'):.2f}",
                f"{process_ratio:.2f}x",
                verdict("process_ratio", process_ratio),
            ),
            (
                "Digits MLP: test accuracy",
                f"{median(plain, 'test_acc'):.4f}",
                f"{median(template, 'test_acc'):.4f}",
                f"{acc_diff:+.2f} pp",
                verdict("acc_diff_pp", acc_diff),
            ),
        ]

        # --- the loop's ratio measured two steadier ways (bench_callbacks, bench_instructions)
        at = next(i for i, row in enumerate(rows) if row[0].startswith("… the template's own"))
        rows[at + 1 : at + 1] = steadier_loop_ratios(args, results)

        # --- sweeps: 12 jobs in one process, its first 4, the 12 with joblib (bench_sweep.py)
        if not args.skip_sweep:
            print(f"\nsweeps, {args.sweep_repeats} rounds ...", flush=True)
            swept = bench_sweep.run_all(workdir / "sweeps", args.sweep_repeats)
            results["sweep"] = swept
            m, cores = swept["median"], os.cpu_count() or 1
            print("\n".join(bench_sweep.report(m, cores)), flush=True)
            pct, speedup = m["per_job_pct"], m["speedup"]
            rows += [
                (
                    "Sweep of 12 jobs in one process: each further job's cost beyond its fit "
                    "(vs 4 jobs)",
                    f"fit {m['mean_fit_s']:.2f} s",
                    f"{m['per_job_s']:.2f} s",
                    f"{pct:.0f} %",
                    "met (≤ 25 %)" if pct <= bench_sweep.TARGET_PCT else "missed (≤ 25 %)",
                ),
                (
                    "… paid once per sweep (start-up, report), and all in per job",
                    "",
                    f"{m['once_s']:.1f} s; {m['all_in_s']:.2f} s",
                    f"{m['all_in_pct']:.0f} %",
                    "",
                ),
                (
                    f"The 12 jobs with `hydra/launcher=joblib` ({cores} cores, forked jobs): "
                    "wall time, in one process vs joblib",
                    f"{m['wall_one_process_s']:.1f} s",
                    f"{m['wall_joblib_s']:.1f} s",
                    f"{speedup:.2f}x faster",
                    ("met" if speedup >= bench_sweep.TARGET_SPEEDUP else "missed")
                    + f" (≥ 1.7x; Amdahl bound {m['bound']:.2f}x)",
                ),
                (
                    "… the jobs phase (wall less what is paid once)",
                    "",
                    "",
                    f"{m['jobs_phase_speedup']:.2f}x faster",
                    "",
                ),
            ]

        # --- GPT: A B A B ...
        if not args.skip_gpt:
            print(
                f"\nGPT: {args.gpt_warmup_steps} untimed + {args.gpt_steps} timed steps, "
                f"{args.gpt_repeats} runs per side ...",
                flush=True,
            )
            plain_g, template_g = [], []
            for i in range(args.gpt_repeats):
                plain_g.append(plain_gpt(args.gpt_steps, args.gpt_warmup_steps))
                template_g.append(
                    template_gpt(workdir / f"gpt_{i}", args.gpt_steps, args.gpt_warmup_steps)
                )
                print(
                    f"gpt {i + 1}/{args.gpt_repeats}: tokens/s plain "
                    f"{plain_g[-1]['tokens_per_s']:.0f} template "
                    f"{template_g[-1]['tokens_per_s']:.0f}",
                    flush=True,
                )
            gpt_ratio = median(template_g, "tokens_per_s") / median(plain_g, "tokens_per_s")
            results["gpt"] = {"plain": plain_g, "template": template_g, "ratio": gpt_ratio}
            print(f"{'':22}{'plain PyTorch':>26}{'template':>26}")
            print(
                f"{'tokens/s (steady)':22}{spread(plain_g, 'tokens_per_s', '.0f'):>26}"
                f"{spread(template_g, 'tokens_per_s', '.0f'):>26}"
            )
            fit_tokens = spread(template_g, "fit_tokens_per_s", ".0f")
            print(f"{'tokens/s (whole fit)':22}{'':>26}{fit_tokens:>26}")
            print(
                f"{'whole process s':22}{spread(plain_g, 'process_s', '.1f'):>26}"
                f"{spread(template_g, 'process_s', '.1f'):>26}"
            )
            print(
                f"GPT tokens/s   template/plain = {gpt_ratio:.2f}x  "
                f"{verdict('gpt_tokens_ratio', gpt_ratio)}"
            )
            rows.append(
                (
                    "GPT small: training tokens/s (steady state)",
                    f"{median(plain_g, 'tokens_per_s'):.0f}",
                    f"{median(template_g, 'tokens_per_s'):.0f}",
                    f"{gpt_ratio:.2f}x",
                    verdict("gpt_tokens_ratio", gpt_ratio),
                )
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    if args.markdown:
        gpt_runs = "" if args.skip_gpt else f" ({args.gpt_repeats} for GPT)"
        print(f"\nMeasured on {info}; medians of {args.repeats} runs per side{gpt_runs}, ", end="")
        print("alternating plain and template.\n")
        print("| | reference (plain PyTorch unless named) | template | ratio | target |")
        print("|---|---:|---:|---:|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nraw numbers: {args.json}")


if __name__ == "__main__":
    main()
