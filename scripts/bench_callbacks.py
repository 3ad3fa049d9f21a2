"""Where the template's loop time goes: the default run with each callback (or the logger)
left out in turn, against the run stripped to Lightning's own loop.

    OMP_NUM_THREADS=1 python scripts/bench_callbacks.py              # ~3 minutes on 2 cores
    python scripts/bench_callbacks.py --repeats 5 --markdown

The digits run of scripts/bench.py (Adam, batch 64, 20 epochs, seed 42), one process per
measurement, the variants interleaved (default, stripped, then each leave-one-out, repeated)
so that a slow spell of the machine hits them all. Printed per variant: the median
`trained.loop_s` (Lightning's on_train_start to on_train_end), its ratio to the stripped
loop, and what leaving that piece out saves against the default (a piece's cost). The
default's ratio is issue 17's first target (<= 1.10x).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import STRIPPED, template_digits  # noqa: E402

VARIANTS = {
    "default": [],
    "stripped": STRIPPED,
    "no checkpoint": ["~callbacks.checkpoint"],
    "no lr_monitor": ["~callbacks.lr_monitor"],
    "no throughput": ["~callbacks.throughput"],
    "no progress": ["~callbacks.progress"],
    "no epoch_table": ["~callbacks.epoch_table"],
    "no logger": ["logger=none"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_callbacks_"))
    loops: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for repeat in range(args.repeats):
            for name, overrides in VARIANTS.items():
                run_dir = workdir / f"{name.replace(' ', '_')}_{repeat}"
                loops[name].append(template_digits(run_dir, 42, overrides)["loop_s"])
                print(f"{name:15s} loop {loops[name][-1]:.3f} s", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in loops.items()}
    stripped, default = median["stripped"], median["default"]
    rows = [("variant", "loop s (median)", "min-max", "vs stripped", "saves vs default")]
    for name, values in loops.items():
        saves = "" if name in ("default", "stripped") else f"{default - median[name]:+.3f} s"
        rows.append((name, f"{median[name]:.3f}", f"{min(values):.2f}-{max(values):.2f}",
                     f"{median[name] / stripped:.2f}x", saves))  # fmt: skip
    if args.markdown:
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "---|" * len(rows[0]))
        for row in rows[1:]:
            print("| " + " | ".join(row) + " |")
    else:
        for row in rows:
            print(f"{row[0]:15s} {row[1]:>16s} {row[2]:>10s} {row[3]:>12s} {row[4]:>17s}")
    verdict = "PASS" if default / stripped <= 1.10 else "FAIL"
    print(f"\ndefault / stripped loop: {default / stripped:.2f}x (target <= 1.10x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
