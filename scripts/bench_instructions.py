"""The template's own share of the training loop counted in instructions, which a busy shared
machine does not change: the digits run of scripts/bench.py, default against stripped to
Lightning's loop (`callbacks=none logger=none`), each under valgrind's callgrind.

    OMP_NUM_THREADS=1 python scripts/bench_instructions.py          # ~7 minutes on 2 cores
    python scripts/bench_instructions.py --variant no_throughput=~callbacks.throughput

Wall-clock ratios of the same two runs moved 0.92-1.30x between runs on this 2-core VM (see
scripts/bench_callbacks.py); instruction counts repeat to ~0.5% (the default's ratio was
1.098x and 1.091x in two runs on 2026-12-04: timers, the ETA's text and allocations still
vary a little). Needs valgrind and a C compiler (Debian: valgrind, gcc): a tiny marker
library, compiled into a temporary folder, starts callgrind's count at Lightning's
on_train_start and stops it at on_train_end (the span of `trained.loop_s`), so start-up,
data, the sanity check and the test are not counted. The runs go side by side, one per core,
~100x slower than natively; so that they take the branches a native ~1 s run takes, the
time-based triggers that a 100 s loop would fire and a 1 s one does not are set out of reach
(`checkpoint_every_s`, `logger.csv.flush_every_s`), and PYTHONHASHSEED is fixed.
Instructions are not seconds (a cache miss costs more than an add), but a loop of small
kernels and Python hooks, all in cache, spends them alike; the printed ratio is issue 17's
first target by count (<= 1.10x).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ["optimizer=adam", "lr=0.001", "batch_size=64", "max_epochs=20", "seed=42"]
UNREACHED_TIMERS = ["checkpoint_every_s=1000000"]
CSV_TIMER = "logger.csv.flush_every_s=1000000"  # only where the CSV logger is on
VARIANTS = {"default": [CSV_TIMER], "stripped": ["callbacks=none", "logger=none"]}

MARKER_C = """#include <valgrind/callgrind.h>
void loop_started(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void loop_ended(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("loop"); }
"""

# runs train.py with LoopTimer's hooks also starting and stopping callgrind's count
RUNNER = """import ctypes, runpy, sys
marker = ctypes.CDLL(sys.argv.pop(1))
from trainlab.callbacks import guards
started, ended = guards.LoopTimer.on_train_start, guards.LoopTimer.on_train_end
def on_train_start(self, *args):
    started(self, *args)
    marker.loop_started()
def on_train_end(self, *args):
    marker.loop_ended()
    ended(self, *args)
guards.LoopTimer.on_train_start, guards.LoopTimer.on_train_end = on_train_start, on_train_end
sys.argv[0] = "train.py"
sys.path.insert(0, ".")
runpy.run_path("train.py", run_name="__main__")
"""


def check_tools() -> None:
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_instructions: needs {tool} (Debian: apt-get install {tool})")


def build_marker(workdir: Path) -> Path:
    check_tools()
    source, library = workdir / "marker.c", workdir / "libloopmarker.so"
    source.write_text(MARKER_C)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", library, source], check=True)
    return library


def loop_instructions(workdir: Path, library: Path, name: str, overrides: list[str]) -> int:
    """Instructions callgrind counted from on_train_start to on_train_end of one run."""
    (workdir / "runner.py").write_text(RUNNER)
    out = workdir / f"callgrind.{name}"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, str(workdir / "runner.py"), str(library), *DIGITS]
    cmd += [*UNREACHED_TIMERS, *overrides, f"hydra.run.dir={workdir / name}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        sys.exit(f"bench_instructions: the {name} run failed (exit {done.returncode}):\n{tail}")
    dumps = list(workdir.glob(f"callgrind.{name}.*"))  # .1: the dump at on_train_end
    totals = [int(t) for p in dumps for t in re.findall(r"^totals: (\d+)", p.read_text(), re.M)]
    if len(totals) != 1:
        sys.exit(f"bench_instructions: expected one dump of the {name} loop, found {totals}")
    return totals[0]


def count(variants: dict[str, list[str]]) -> dict[str, int]:
    """{variant: loop instructions}, the runs side by side, one per core."""
    workdir = Path(tempfile.mkdtemp(prefix="bench_instructions_"))
    try:
        library = build_marker(workdir)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            futures = {
                name: pool.submit(loop_instructions, workdir, library, name, overrides)
                for name, overrides in variants.items()
            }
            return {name: future.result() for name, future in futures.items()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE]",
        help="also count the default with these overrides (e.g. no_logger=logger=none)",
    )  # fmt: skip
    args = parser.parse_args()
    variants = dict(VARIANTS)
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        if not name or not overrides:
            parser.error(f"--variant {spec}: give NAME=OVERRIDE[,OVERRIDE]")
        listed = overrides.split(",")
        csv_on = not any(o.startswith("logger=") for o in listed)
        variants[name] = [*listed, *([CSV_TIMER] if csv_on else [])]
    counts = count(variants)
    stripped = counts["stripped"]
    print(f"{'variant':16s} {'loop instructions':>18s} {'vs stripped':>12s} {'vs default':>14s}")
    for name, counted in counts.items():
        against = "" if name in VARIANTS else f"{counted - counts['default']:+,d}"
        print(f"{name:16s} {counted:18,d} {counted / stripped:11.3f}x {against:>14s}")
    ratio = counts["default"] / stripped
    verdict = "PASS" if ratio <= 1.10 else "FAIL"
    print(f"\ndefault / stripped loop, by instructions: {ratio:.3f}x (target <= 1.10x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
